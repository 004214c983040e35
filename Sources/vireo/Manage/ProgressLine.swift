import Foundation
import Manager
import VMContract
#if canImport(Glibc)
import Glibc
#endif

/// `vireo save`'s progress on a terminal: polls the daemon's save progress twice a second and
/// redraws one line on stderr ("Saving domain 'vm1': 1.2 GiB of 4.0 GiB of RAM (30%)") until
/// `finish`, which erases it.
final class SaveProgressLine: @unchecked Sendable {
    private let client: HTTPClient
    private let name: String
    private let state = NSCondition()
    private var finished = false
    private var drawn = false
    private var thread: Thread?

    init(client: HTTPClient, name: String) {
        self.client = client
        self.name = name
    }

    func start() {
        let thread = Thread { [self] in run() }
        self.thread = thread
        thread.start()
    }

    /// Stops polling and erases the line (idempotent).
    func finish() {
        state.lock()
        let wasFinished = finished
        finished = true
        state.broadcast()
        state.unlock()
        guard !wasFinished else { return }
        while thread?.isFinished == false { usleep(10_000) }
        if drawn { write("\r\u{1B}[K") }
    }

    private func run() {
        while true {
            state.lock()
            if !finished { _ = state.wait(until: Date().addingTimeInterval(0.5)) }
            let done = finished
            state.unlock()
            if done { return }
            guard let response = try? client.request("GET", "/v1/vms/\(escapedName(name))/save/progress"),
                  response.status == 200,
                  let progress = try? ContractJSON.decode(SnapshotProgress.self, from: response.body) else { continue }
            write("\r\u{1B}[K" + Self.describe(progress, name: name))
            drawn = true
        }
    }

    static func describe(_ progress: SnapshotProgress, name: String) -> String {
        let gib = { (bytes: UInt64) in String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }
        switch progress.phase {
        case .none, .capturing: return "Saving domain '\(name)': capturing device and vCPU state"
        case .writing:
            let percent = progress.ramBytesTotal > 0 ? progress.ramBytesDone * 100 / progress.ramBytesTotal : 0
            return "Saving domain '\(name)': \(gib(progress.ramBytesDone)) of \(gib(progress.ramBytesTotal)) of RAM (\(percent)%)"
        case .completed: return "Saving domain '\(name)': written, stopping the VM"
        case .failed: return "Saving domain '\(name)': failed"
        }
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
