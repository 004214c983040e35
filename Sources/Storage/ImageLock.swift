#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How an image open shares the image with other processes.
public enum ImageSharing: Sendable, Equatable {
    /// QEMU's default: a reader refuses writers and resizers; a writer admits only readers that
    /// accept a changing image (`forceShare`) and other processes' reads of unchanged data.
    case standard
    /// qemu-img's `-U`/`--force-share`: read-only, and admits every other user (an inspection of
    /// a running VM's disk, which may show metadata in flux).
    case forceShare
    /// No locks at all: format probing, which reads one sector and closes again.
    case unlocked
}

/// QEMU's image locking, so that Vireo and QEMU (and two Vireo processes) refuse each other the
/// way two QEMUs do. Each permission an open holds is a shared OFD lock on byte 100 + bit, and
/// each permission it refuses to share with others a shared OFD lock on byte 200 + bit (QEMU's
/// file-posix.c, RAW_LOCK_PERM_BASE / RAW_LOCK_SHARED_BASE). A new open conflicts when another
/// open refuses to share what it wants (a lock on 200 + bit) or holds what it refuses to share
/// (a lock on 100 + bit). OFD locks belong to the open file description: they go with the last
/// descriptor of it, and two opens in one process conflict like two processes.
struct ImageLock: Sendable {
    /// QEMU's BLK_PERM_* bits, in the order of its lock bytes, with the names its errors use.
    struct Permissions: OptionSet, Sendable {
        let rawValue: UInt8
        static let consistentRead = Permissions(rawValue: 1 << 0)
        static let write = Permissions(rawValue: 1 << 1)
        static let writeUnchanged = Permissions(rawValue: 1 << 2)
        static let resize = Permissions(rawValue: 1 << 3)
        static let all: Permissions = [.consistentRead, .write, .writeUnchanged, .resize]
        static let names = ["consistent read", "write", "write unchanged", "resize"]
    }

    static let permissionBase: off_t = 100
    static let sharedBase: off_t = 200
    // Linux's OFD lock commands (fcntl.h has them only under _GNU_SOURCE).
    static let getLock: Int32 = 36, setLock: Int32 = 37

    let fd: Int32
    let path: String
    let held: Permissions
    let unshared: Permissions

    /// What an open takes: a reader wants a consistent image (no writer, no resizer); a writer
    /// wants to write and resize, and lets others only read; force-share reads and admits all.
    static func permissions(writable: Bool, forceShare: Bool) -> (held: Permissions, unshared: Permissions) {
        if forceShare { return ([.consistentRead], []) }
        if writable { return ([.consistentRead, .write, .resize], [.write, .resize]) }
        return ([.consistentRead], [.write, .resize])
    }

    /// Takes the locks on `fd`, then checks no other open conflicts; throws `StorageError.locked`
    /// (and takes nothing) when one does. A file system without OFD locks is used unlocked, as
    /// QEMU's `locking=auto` does.
    ///
    /// A conflict is looked at again for up to 0.2 s before it is reported: a process that starts
    /// others (the daemon, the test runner, `vireo run` starting passt) gives each child, between
    /// its fork and its exec, a copy of every descriptor it has open, and with it a just-closed
    /// open's locks.
    init(fd: Int32, path: String, writable: Bool, forceShare: Bool) throws {
        self.fd = fd
        self.path = path
        (held, unshared) = Self.permissions(writable: writable, forceShare: forceShare)
        var attempts = 0
        while true {
            do {
                try acquire()
                return
            } catch StorageError.locked where attempts < 20 {
                attempts += 1
                usleep(10_000)
            }
        }
    }

    /// Takes this open's locks again (after `release`), checking for conflicts as at open.
    func acquire() throws {
        for bit in 0..<4 {
            let permission = Permissions(rawValue: 1 << bit)
            if held.contains(permission) { guard set(F_RDLCK, at: Self.permissionBase + off_t(bit)) else { return } }
            if unshared.contains(permission) { guard set(F_RDLCK, at: Self.sharedBase + off_t(bit)) else { return } }
        }
        for bit in 0..<4 {
            let permission = Permissions(rawValue: 1 << bit)
            // Someone refuses to share what this open wants, or holds what it refuses to share.
            if held.contains(permission), othersLock(Self.sharedBase + off_t(bit)) {
                release()
                throw StorageError.locked(path: path, permission: Permissions.names[bit], shared: false)
            }
            if unshared.contains(permission), othersLock(Self.permissionBase + off_t(bit)) {
                release()
                throw StorageError.locked(path: path, permission: Permissions.names[bit], shared: true)
            }
        }
    }

    /// Lets go of every lock byte (a migration source hands its disks over at the switch-over).
    func release() {
        var lock = flock()
        lock.l_type = Int16(F_UNLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = Self.permissionBase
        lock.l_len = Self.sharedBase + 8 - Self.permissionBase
        _ = fcntl(fd, Self.setLock, &lock)
    }

    /// False when the file system has no OFD locks (nothing is locked then).
    private func set(_ type: Int32, at offset: off_t) -> Bool {
        var lock = flock()
        lock.l_type = Int16(type)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = offset
        lock.l_len = 1
        while fcntl(fd, Self.setLock, &lock) != 0 {
            if errno == EINTR { continue }
            return false
        }
        return true
    }

    /// Whether another open file description holds a lock on the byte at `offset`.
    private func othersLock(_ offset: off_t) -> Bool {
        var lock = flock()
        lock.l_type = Int16(F_WRLCK)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = offset
        lock.l_len = 1
        guard fcntl(fd, Self.getLock, &lock) == 0 else { return false }
        return lock.l_type != Int16(F_UNLCK)
    }
}
