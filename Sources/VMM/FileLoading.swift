
#if canImport(Glibc)
import Glibc
#endif

/// Reads a whole file, refusing anything larger than `limit` before reading it.
public func readWholeFile(_ path: String, kind: String, limit: UInt64) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ConfigError.unreadableFile(kind: kind, path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw ConfigError.unreadableFile(kind: kind, path: path, reason: String(cString: strerror(errno))) }
    guard (info.st_mode & S_IFMT) == S_IFREG else { throw ConfigError.unreadableFile(kind: kind, path: path, reason: "not a regular file") }
    let size = UInt64(info.st_size)
    guard size > 0 else { throw ConfigError.unreadableFile(kind: kind, path: path, reason: "file is empty") }
    guard size <= limit else {
        throw ConfigError.unreadableFile(kind: kind, path: path, reason: "\(size >> 20) MiB is larger than the guest's memory (\(limit >> 20) MiB)")
    }
    var bytes = [UInt8](repeating: 0, count: Int(size))
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { throw ConfigError.unreadableFile(kind: kind, path: path, reason: n == 0 ? "file shrank while reading" : String(cString: strerror(errno))) }
        done += n
    }
    return bytes
}

/// Seed for the guest's crng, from the host kernel's.
public func hostRandomBytes(_ count: Int) -> [UInt8] {
    // /dev/urandom never blocks once the host crng is initialised (always true after early boot).
    let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: count)
    let got = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    return got == count ? bytes : []
}
