import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why the VMM could not join the cgroup its launch specification names.
public struct CgroupJoinError: Error, Equatable, CustomStringConvertible {
    public var path: String
    public var reason: String

    public var description: String {
        "cannot join cgroup \(path): \(reason) (the VM's resource limits would not apply; not running it)"
    }
}

/// Moves this process into the daemon's cgroup for the VM (LaunchSpec.cgroupProcs) by writing
/// "0" (the writer itself) to each cgroup.procs file. It must run before guest RAM is mapped:
/// memory is charged to the group a page was first touched in, and stays there when the process
/// moves. Nothing to join (nil or empty) is not an error: the daemon decided the VM runs without.
public func joinCgroups(_ procsFiles: [String]?) throws(CgroupJoinError) {
    for path in procsFiles ?? [] {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CgroupJoinError(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var written: Int
        repeat { written = write(fd, "0\n", 2) } while written < 0 && errno == EINTR
        guard written == 2 else {
            throw CgroupJoinError(path: path, reason: written < 0 ? String(cString: strerror(errno)) : "short write")
        }
    }
}
