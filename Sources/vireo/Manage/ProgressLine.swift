import Foundation
import Manager
import VMM
import VMContract
#if canImport(Glibc)
import Glibc
#endif

/// A progress line on a terminal: polls twice a second and redraws one line on stderr with what
/// `describe` makes of the answer, until `finish`, which erases it. `vireo save` and `vireo
/// migrate` draw theirs with it.
final class ProgressLine: @unchecked Sendable {
    private let describe: @Sendable () -> String?
    /// Finished (set by `finish`, which wakes the polling thread) and whether a line is on screen.
    private let state = Guarded((finished: false, drawn: false))
    private var thread: Thread?

    /// `describe` returns the line to show now, or nil to leave the last one (no answer yet).
    init(describe: @escaping @Sendable () -> String?) {
        self.describe = describe
    }

    /// The daemon's progress of a save: "Saving domain 'vm1': 1.2 GiB of 4.0 GiB of RAM (30%)".
    static func save(client: HTTPClient, name: String) -> ProgressLine {
        ProgressLine {
            guard let response = try? client.request("GET", "/v1/vms/\(escapedName(name))/save/progress"), response.status == 200,
                  let progress = try? ContractJSON.decode(SnapshotProgress.self, from: response.body) else { return nil }
            return describeSave(progress, name: name)
        }
    }

    func start() {
        let thread = Thread { [self] in run() }
        self.thread = thread
        thread.start()
    }

    /// Stops polling and erases the line (idempotent).
    func finish() {
        let wasFinished = state.update { state in
            defer { state.finished = true }
            return state.finished
        }
        guard !wasFinished else { return }
        while thread?.isFinished == false { usleep(10_000) }
        if state.read({ $0.drawn }) { write("\r\u{1B}[K") }
    }

    private func run() {
        while true {
            // Half a second between polls, or less when `finish` says to stop.
            if state.wait(until: { $0.finished }, timeoutSeconds: 0.5, then: { _ in }) != nil { return }
            guard let line = describe() else { continue }
            write("\r\u{1B}[K" + line)
            state.update { $0.drawn = true }
        }
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// RAM sizes on progress lines.
func gibibytes(_ bytes: UInt64) -> String { String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }

func describeSave(_ progress: SnapshotProgress, name: String) -> String {
    switch progress.phase {
    case .none, .capturing: return "Saving domain '\(name)': capturing device and vCPU state"
    case .writing:
        let percent = progress.ramBytesTotal > 0 ? progress.ramBytesDone * 100 / progress.ramBytesTotal : 0
        return "Saving domain '\(name)': \(gibibytes(progress.ramBytesDone)) of \(gibibytes(progress.ramBytesTotal)) of RAM (\(percent)%)"
    case .completed: return "Saving domain '\(name)': written, stopping the VM"
    case .failed: return "Saving domain '\(name)': failed"
    }
}
