import Foundation
import Testing
@testable import Manager

/// A VMM without the ACPI power button answers PUT /vm/shutdown with 501: the daemon must pass
/// that on as a clear error that names the way out (destroy), and must not mark a shutdown.
/// The "VMM" here is a `sleep` process plus a scripted control socket, so no KVM is needed.
@Suite struct DaemonShutdownFallbackTests {
    @Test func shutdownWithoutPowerButtonSaysToUseDestroy() throws {
        let directory = "/tmp/vds-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try StateStore(stateDirectory: directory + "/state")
        try store.define(VMDefinition(name: "old", memory: 32 << 20, os: OSBoot(kernel: "/k")))
        let environment = DaemonEnvironment(store: store, events: EventBus(), stateDirectory: directory + "/state",
                                            executable: "/nonexistent", log: { _ in })
        let socket = directory + "/control.sock"
        let server = try ScriptedControlSocket(path: socket, status: 501,
                                               body: #"{"error": "graceful shutdown needs the ACPI power button"}"#)
        let vm = Process()
        vm.executableURL = URL(fileURLWithPath: "/bin/sleep")
        vm.arguments = ["60"]
        try vm.run()
        defer { kill(vm.processIdentifier, SIGKILL); vm.waitUntilExit() }
        let ticks = try #require(ProcessSnapshot.read(pid: vm.processIdentifier)).startTicks
        let controller = VMController(name: "old", environment: environment)
        try controller.adopt(VMProcess(identity: ProcessIdentity(pid: vm.processIdentifier, startTicks: ticks,
                                                                 controlSocket: socket, statusFile: directory + "/status.json"),
                                       isChild: false), state: .running, reason: .booted)

        #expect(throws: APIError(501, "graceful shutdown of domain 'old' is not supported by this VMM yet (no ACPI power button); use 'vireo destroy old' to stop it")) {
            try controller.queue.sync { try controller.shutdown() }
        }
        #expect(server.requests == ["PUT /vm/shutdown"])
        #expect(controller.process?.intent == StopIntent.none)
        #expect(try store.state(named: "old").state == .running)
        server.close()
    }
}

/// Answers every request on a Unix socket with one fixed status and body, recording request lines.
final class ScriptedControlSocket: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var lines: [String] = []
    /// Signalled when the accept thread has returned: only then may the fd number be reused.
    private let finished = DispatchSemaphore(value: 0)

    convenience init(path: String, status: Int, body: String) throws {
        try self.init(path: path, raw: "HTTP/1.1 \(status) X\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
    }

    /// Sends `raw` verbatim as the answer: for testing how the client copes with odd framing.
    init(path: String, raw answer: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw APIError(500, "cannot listen on \(path)") }
        let listener = fd
        Thread { [self] in
            defer { finished.signal() }
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
                let request = String(decoding: buffer.prefix(max(0, count)), as: UTF8.self)
                let line = request.split(separator: "\r\n").first.map { $0.split(separator: " ").prefix(2).joined(separator: " ") } ?? ""
                lock.lock(); lines.append(line); lock.unlock()
                _ = Array(answer.utf8).withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                Glibc.close(client)
            }
        }.start()
    }

    var requests: [String] { lock.lock(); defer { lock.unlock() }; return lines }

    /// shutdown() makes the blocked (or next) accept fail; the fd is closed only after the thread
    /// has left, or the next socket could get the same number and be served by this thread.
    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        finished.wait()
        Glibc.close(fd)
    }
}
