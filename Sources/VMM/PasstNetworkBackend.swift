import Foundation
import KVM
import Synchronization
import Virtio
#if canImport(Glibc)
import Glibc
#endif

/// A NIC's host side as the machine uses it: the backend its virtio-net device talks to, the
/// descriptor the I/O thread polls for received frames, and names for logs and statistics.
protocol HostNetwork: NetworkBackend {
    /// Readable when frames may be waiting.
    var pollDescriptor: Int32 { get }
    /// The host-side name in statistics (the TAP's, or "passt").
    var hostName: String { get }
    /// One phrase for the device summary: "TAP vtap0 on bridge br0", "user networking (passt) ...".
    var summary: String { get }
    func close()
}

extension TapNetworkBackend: HostNetwork {
    var pollDescriptor: Int32 { tap.raw }
    var hostName: String { tap.name }
    var summary: String {
        if case let .bridge(bridge) = attachment { return "TAP \(tap.name) on bridge \(bridge)" }
        return "TAP \(tap.name)"
    }
    func close() { tap.close() }
}

/// User-mode networking through passt (passt.top; libvirt's backend for `<interface
/// type='user'>`): the VMM starts a passt of its own on a Unix socket and exchanges Ethernet
/// frames with it, each behind a 4-byte big-endian length (QEMU's `-netdev stream` protocol).
/// passt gives the guest the host's addresses, answers its ARP, DHCP and NDP, and carries its
/// TCP/UDP as the host's own sockets: no TAP, no bridge, no privileges. passt runs `--one-off`,
/// so it ends when this process does, however that happens.
final class PasstNetworkBackend: HostNetwork, Sendable {
    let offloads: NetworkOffloads = []
    let hostName = "passt"
    let summary: String
    private let socket: Int32
    private let passt: pid_t?

    private struct State {
        /// Bytes received but not yet a whole frame; bytes of a frame not yet written (one at most).
        var inbox: [UInt8] = []
        var outbox: [UInt8] = []
        /// What one recv fills (kept: receiving is the I/O thread's hot path).
        var chunk = [UInt8](repeating: 0, count: 65_536)
        var closed = false
    }

    private let state = Mutex(State())

    static let virtioHeaderBytes = 12
    /// The largest frame passt exchanges (its 65520-byte buffers); anything longer is a broken stream.
    static let maximumFrame = 65_535

    /// Finds passt: $VIREO_PASST, else on PATH.
    static func executable() -> String? {
        if let given = ProcessInfo.processInfo.environment["VIREO_PASST"] { return given }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/passt"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Over an already connected stream (tests); `passt` is the process to end on close, if any.
    init(connected socket: Int32, passt: pid_t?, summary: String) {
        self.socket = socket
        self.passt = passt
        self.summary = summary
        _ = fcntl(socket, F_SETFL, fcntl(socket, F_GETFL) | O_NONBLOCK)
    }

    /// Starts a passt of this VM's own and connects to it.
    convenience init(forwards: [PortForward]) throws {
        guard let executable = Self.executable() else {
            throw KVMError.invalidArgument("user networking needs passt (Debian: apt install passt), which is not on PATH")
        }
        let socketPath = NSTemporaryDirectory() + "vireo-passt-\(getpid())-\(UUID().uuidString.prefix(8)).sock"
        var arguments = ["passt", "--foreground", "--one-off", "--quiet", "--socket", socketPath]
        for forward in forwards {
            let spec = (forward.hostAddress.map { "\($0)/" } ?? "") + "\(forward.hostPort):\(forward.guestPort)"
            arguments += [forward.proto == .tcp ? "--tcp-ports" : "--udp-ports", spec]
        }
        let passt = try Self.spawnQuietly(executable, arguments)
        // passt binds the socket, then waits for its one client: connect as soon as it is there.
        var connected: Int32 = -1
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            connected = Self.connect(to: socketPath)
            if connected >= 0 { break }
            var status: Int32 = 0
            if waitpid(passt, &status, WNOHANG) == passt {
                throw KVMError.invalidArgument("passt exited (status \(status)) before its socket \(socketPath) was up")
            }
            usleep(10_000)
        }
        guard connected >= 0 else {
            kill(passt, SIGTERM)
            var status: Int32 = 0
            waitpid(passt, &status, 0)
            throw KVMError.invalidArgument("passt did not open its socket \(socketPath) within 10 s")
        }
        unlink(socketPath)
        self.init(connected: connected, passt: passt, summary: "user networking (passt pid \(passt)"
            + (forwards.isEmpty ? ")" : ", host ports " + forwards.map { "\($0.proto.rawValue) \($0.hostPort)->\($0.guestPort)" }.joined(separator: ", ") + ")"))
    }

    private static func connect(to path: String) -> Int32 {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { Glibc.close(fd); return -1 }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else { Glibc.close(fd); return -1 }
        return fd
    }

    /// passt with stdin, stdout and stderr on /dev/null (it reports to syslog besides), and no
    /// other descriptor of ours.
    private static func spawnQuietly(_ executable: String, _ arguments: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        var pid: pid_t = 0
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let status = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard status == 0 else {
            throw KVMError.invalidArgument("cannot start \(executable): \(String(cString: strerror(status)))")
        }
        return pid
    }

    var pollDescriptor: Int32 { socket }

    func send(_ frame: [UInt8]) throws {
        guard frame.count > Self.virtioHeaderBytes else { return }
        let payload = frame.count - Self.virtioHeaderBytes
        try state.withLock { state in
            // The stream must never carry part of a frame: what did not fit last time goes first,
            // and a frame that finds it still waiting is dropped whole (a congested link).
            try flushOutbox(&state.outbox)
            guard state.outbox.isEmpty else { throw KVMError.invalidArgument("passt is not keeping up: frame dropped") }
            var message = withUnsafeBytes(of: UInt32(payload).bigEndian, Array.init)
            message += frame[Self.virtioHeaderBytes...]
            state.outbox = message
            try flushOutbox(&state.outbox)
        }
    }

    /// Call with `state` locked (`outbox` is its).
    private func flushOutbox(_ outbox: inout [UInt8]) throws {
        while !outbox.isEmpty {
            let written = outbox.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                throw KVMError.invalidArgument("passt: send failed: \(String(cString: strerror(errno)))")
            }
            outbox.removeFirst(written)
        }
    }

    func receive(maxLength: Int) throws -> [UInt8]? {
        try state.withLock { state in
            while true {
                if state.inbox.count >= 4 {
                    let length = Int(UInt32(state.inbox[0]) << 24 | UInt32(state.inbox[1]) << 16 | UInt32(state.inbox[2]) << 8 | UInt32(state.inbox[3]))
                    guard length <= Self.maximumFrame else {
                        throw KVMError.invalidArgument("passt sent a frame length of \(length) bytes: the stream is broken")
                    }
                    if state.inbox.count >= 4 + length {
                        let frame = [UInt8](repeating: 0, count: Self.virtioHeaderBytes) + state.inbox[4..<4 + length]
                        state.inbox.removeFirst(4 + length)
                        // Longer than the guest's buffers: dropped (the device counts it), next one.
                        if frame.count <= maxLength { return frame }
                        continue
                    }
                }
                let got = state.chunk.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
                if got < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { return nil }
                    throw KVMError.invalidArgument("passt: receive failed: \(String(cString: strerror(errno)))")
                }
                if got == 0 { return nil }   // passt is gone; the I/O thread drops the descriptor on hang-up
                state.inbox += state.chunk[0..<got]
            }
        }
    }

    func setOffloads(_ accepted: NetworkOffloads) throws {}

    func close() {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            Glibc.close(socket)
            guard let passt else { return }
            kill(passt, SIGTERM)
            var status: Int32 = 0
            waitpid(passt, &status, 0)
        }
    }

    deinit { close() }
}
