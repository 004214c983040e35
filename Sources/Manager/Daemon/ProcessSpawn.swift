import Foundation
#if canImport(Glibc)
import Glibc
#endif

enum SpawnError: Error, CustomStringConvertible {
    case failed(path: String, reason: String)
    var description: String {
        switch self {
        case .failed(let path, let reason): "cannot start \(path): \(reason)"
        }
    }
}

/// Starts a process in its own session (so it outlives the daemon and no terminal signal reaches
/// it), stdin from /dev/null, stdout and stderr appended to `logPath`, no other fds inherited.
func spawnDetached(executable: String, arguments: [String], logPath: String) throws -> Int32 {
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // The daemon ignores SIGPIPE (NIO does); the VM should get the defaults back.
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signal in [SIGPIPE, SIGCHLD, SIGTERM, SIGINT, SIGHUP] { sigaddset(&defaults, signal) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    var noMask = sigset_t()
    sigemptyset(&noMask)
    posix_spawnattr_setsigmask(&attributes, &noMask)
    // POSIX_SPAWN_SETSID (glibc ≥ 2.26) is behind _GNU_SOURCE, which Swift's Glibc module lacks.
    let setsid: Int32 = 0x80
    posix_spawnattr_setflags(&attributes, Int16(setsid | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    // The daemon's listening sockets and database must not leak into (and be held open by) VMs.
    closeFrom(3, in: &actions)

    return try spawn(executable, arguments, &actions, &attributes)
}

/// posix_spawn with C strings made from `arguments` (argv[0] = `executable`) and this environment.
private func spawn(_ executable: String, _ arguments: [String], _ actions: inout posix_spawn_file_actions_t,
                   _ attributes: UnsafeMutablePointer<posix_spawnattr_t>?) throws -> pid_t {
    let argv = ([executable] + arguments).map { strdup($0) }
    defer { argv.forEach { free($0) } }
    var argvPointers = argv + [nil]
    var pid: pid_t = 0
    let result = argvPointers.withUnsafeMutableBufferPointer { buffer -> Int32 in
        guard let base = buffer.baseAddress else { return EINVAL }
        return posix_spawn(&pid, executable, &actions, attributes, base, environ)
    }
    guard result == 0 else { throw SpawnError.failed(path: executable, reason: String(cString: strerror(result))) }
    return pid
}

/// Runs a program to completion (the CLI's helpers: the cloud-init seed tool, the editor) and
/// returns its exit status, 128 + the signal when one ended it. stdin, stdout and stderr are
/// inherited, unless `outputPath` is given: then stdin is /dev/null and both outputs go to that
/// file (truncated). posix_spawn, not Foundation's Process: Process needs a CFRunLoop wake-up
/// socket pair, and where it could not make one (the nested test host) it waited forever.
public func runToCompletion(executable: String, arguments: [String], outputPath: String? = nil) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let outputPath {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
    let pid = try spawn(executable, arguments, &actions, nil)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 {
        guard errno == EINTR else { throw SpawnError.failed(path: executable, reason: "waitpid: \(String(cString: strerror(errno)))") }
    }
    let signal = status & 0x7F
    return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
}

/// posix_spawn_file_actions_addclosefrom_np (glibc 2.34), looked up at run time because the
/// header hides it behind _GNU_SOURCE. Without it, fds still close on exec where they are
/// O_CLOEXEC (SQLite's and NIO's are).
private func closeFrom(_ lowest: Int32, in actions: inout posix_spawn_file_actions_t) {
    typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else { return }
    let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
    _ = addCloseFrom(&actions, lowest)
}

/// The last lines of a VM's process log, for an error message when it fails to start.
func lastLines(of path: String, count: Int) -> String {
    guard let text = readTail(path, bytes: 4096) else { return "" }
    let lines = text.split(separator: "\n").suffix(count)
    return lines.joined(separator: "; ").trimmingCharacters(in: .whitespacesAndNewlines)
}

/// The last `bytes` bytes of a file (the serial log shown on attach when no VM runs).
func readTail(_ path: String, bytes: Int) -> String? {
    guard let data = readTailBytes(path, bytes: bytes) else { return nil }
    return String(decoding: data, as: UTF8.self)
}

func readTailBytes(_ path: String, bytes: Int) -> [UInt8]? {
    readBytes(path, from: max(0, fileSize(path) - bytes), limit: bytes)
}

/// Up to `limit` bytes of a file from `offset` on; nil when it cannot be opened.
func readBytes(_ path: String, from offset: Int, limit: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    guard lseek(fd, off_t(offset), SEEK_SET) >= 0 else { return nil }
    var data = [UInt8](repeating: 0, count: limit)
    var filled = 0
    while filled < limit {
        let count = data[filled...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        filled += count
    }
    return Array(data[0..<filled])
}

/// A file's size in bytes (0 when it does not exist).
func fileSize(_ path: String) -> Int {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : 0
}
