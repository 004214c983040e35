#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One open file descriptor; every syscall retries EINTR and reports failures as `StorageError`.
/// Only what can be an image opens: a regular file, or a block device where `allowBlockDevice`
/// (never a FIFO, socket, character device or directory; the open itself cannot block on one).
/// Unless `sharing` is `.unlocked`, the open takes QEMU's image locks (`ImageLock`).
final class PosixFile: Sendable {
    let fd: Int32
    let path: String
    let lock: ImageLock?

    enum Mode { case readOnly, readWrite, createExclusive, createTruncate }

    init(path: String, mode: Mode, sharing: ImageSharing = .standard, allowBlockDevice: Bool = true) throws {
        let flags: Int32
        switch mode {
        case .readOnly: flags = O_RDONLY
        case .readWrite: flags = O_RDWR
        case .createExclusive: flags = O_RDWR | O_CREAT | O_EXCL
        case .createTruncate: flags = O_RDWR | O_CREAT | O_TRUNC
        }
        if mode != .readOnly, sharing == .forceShare {
            throw StorageError.invalidArgument("\(path): --force-share (-U) is for read-only access; this needs to write the image")
        }
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
        var opened: Int32 = -1
        repeat { opened = open(path, flags | O_CLOEXEC | O_NONBLOCK, 0o644) } while opened < 0 && errno == EINTR
        guard opened >= 0 else { throw StorageError.io(path: path, operation: "open", errno: errno) }
        var st = stat()
        guard fstat(opened, &st) == 0 else {
            let code = errno
            close(opened)
            throw StorageError.io(path: path, operation: "fstat", errno: code)
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || (type == S_IFBLK && allowBlockDevice) else {
            close(opened)
            throw StorageError.notAnImageFile(path: path, kind: PosixFile.describe(type))
        }
        _ = fcntl(opened, F_SETFL, fcntl(opened, F_GETFL) & ~O_NONBLOCK)
        do {
            switch sharing {
            case .unlocked: lock = nil
            case .standard, .forceShare:
                lock = try ImageLock(fd: opened, path: path, writable: mode != .readOnly, forceShare: sharing == .forceShare)
            }
        } catch {
            close(opened)
            throw error
        }
        self.fd = opened
        self.path = path
    }

    static func describe(_ type: mode_t) -> String {
        switch type {
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFDIR: "a directory"
        case S_IFBLK: "a block device"
        case S_IFLNK: "a symbolic link"
        default: "not a regular file"
        }
    }

    deinit { close(fd) }

    func size() throws -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StorageError.io(path: path, operation: "fstat", errno: errno) }
        // A block device (an LVM volume, a loop device) reports st_size 0; its end is its size.
        if st.st_mode & S_IFMT == S_IFBLK {
            let end = lseek(fd, 0, SEEK_END)
            guard end >= 0 else { throw StorageError.io(path: path, operation: "lseek", errno: errno) }
            return UInt64(end)
        }
        return UInt64(max(0, st.st_size))
    }

    /// Bytes actually allocated on the host filesystem (qemu-img's "disk size").
    func allocatedBytes() throws -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StorageError.io(path: path, operation: "fstat", errno: errno) }
        return UInt64(max(0, st.st_blocks)) * 512
    }

    /// Reads up to `buffer.count` bytes; returns how many were read before EOF.
    func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let (position, overflow) = offset.addingReportingOverflow(UInt64(done))
            guard !overflow, position <= UInt64(Int64.max) else {
                throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
            }
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(position))
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageError.io(path: path, operation: "pread", errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads exactly `buffer.count` bytes or throws `shortRead` (metadata must not run past EOF).
    func readExactly(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard buffer.count > 0 else { return }
        let got = try readAvailable(into: buffer, at: offset)
        guard got == buffer.count else {
            throw StorageError.shortRead(path: path, offset: offset, length: UInt64(buffer.count))
        }
    }

    /// Reads, zero-filling whatever lies past EOF (data areas of sparse or truncated files).
    func readZeroFilled(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard buffer.count > 0 else { return }
        let got = try readAvailable(into: buffer, at: offset)
        if got < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[got...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let (position, overflow) = offset.addingReportingOverflow(UInt64(done))
            guard !overflow, position <= UInt64(Int64.max) else {
                throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
            }
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(position))
            if n < 0 {
                if errno == EINTR { continue }
                throw StorageError.io(path: path, operation: "pwrite", errno: errno)
            }
            done += n
        }
    }

    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Makes written data durable. fdatasync, as QEMU uses: it also flushes the metadata needed
    /// to read the data back (the file size, allocations), but not timestamps, which would cost a
    /// journal commit per guest flush.
    func sync() throws {
        while fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            throw StorageError.io(path: path, operation: "fdatasync", errno: errno)
        }
    }

    func truncate(to length: UInt64) throws {
        guard length <= UInt64(Int64.max) else {
            throw StorageError.outOfRange(path: path, offset: length, length: 0)
        }
        while ftruncate(fd, off_t(length)) != 0 {
            if errno == EINTR { continue }
            throw StorageError.io(path: path, operation: "ftruncate", errno: errno)
        }
    }

    /// Next data offset at or after `offset` (SEEK_DATA), nil when only a hole remains.
    func nextData(from offset: UInt64) -> UInt64? {
        guard offset <= UInt64(Int64.max) else { return nil }
        let r = lseek(fd, off_t(offset), 3)  // SEEK_DATA: not exported without _GNU_SOURCE
        return r < 0 ? nil : UInt64(r)
    }

    func nextHole(from offset: UInt64) -> UInt64? {
        guard offset <= UInt64(Int64.max) else { return nil }
        let r = lseek(fd, off_t(offset), 4)  // SEEK_HOLE
        return r < 0 ? nil : UInt64(r)
    }
}

/// Resolves a path to its canonical form (symlinks, `..`), used to detect backing loops.
func canonicalPath(_ path: String) -> String {
    guard let resolved = realpath(path, nil) else { return path }
    defer { free(resolved) }
    return String(cString: resolved)
}
