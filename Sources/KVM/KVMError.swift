#if canImport(Glibc)
import Glibc
#endif

/// Errors from the KVM layer, each with what a user needs to act on it.
public enum KVMError: Error, Equatable, CustomStringConvertible {
    case deviceMissing(path: String)
    case permissionDenied(path: String)
    case openFailed(path: String, errno: Int32)
    case unsupportedAPIVersion(Int32)
    case missingCapability(String)
    case ioctlFailed(String, errno: Int32)
    case mmapFailed(errno: Int32)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .deviceMissing(path):
            return "\(path) does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) and enable virtualization in the firmware"
        case let .permissionDenied(path):
            return "no permission to open \(path): add your user to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again) or run as root"
        case let .openFailed(path, errno):
            return "cannot open \(path): \(String(cString: strerror(errno)))"
        case let .unsupportedAPIVersion(version):
            return "KVM API version \(version) is not supported (need 12)"
        case let .missingCapability(name):
            return "this KVM lacks the required capability \(name)"
        case let .ioctlFailed(name, errno):
            return "\(name) failed: \(String(cString: strerror(errno)))"
        case let .mmapFailed(errno):
            return "mapping the vCPU run area failed: \(String(cString: strerror(errno)))"
        case let .invalidArgument(why):
            return why
        }
    }
}

/// The one thin syscall wrapper: retries EINTR and turns -1 into a typed error.
@inline(__always)
func retryingEINTR(_ name: String, _ body: () -> Int32) throws(KVMError) -> Int32 {
    while true {
        let result = body()
        if result >= 0 { return result }
        let err = errno
        if err == EINTR { continue }
        throw KVMError.ioctlFailed(name, errno: err)
    }
}

/// An owned file descriptor, closed when the last reference goes away.
final class FileDescriptor: @unchecked Sendable {
    let raw: Int32
    init(_ raw: Int32) { self.raw = raw }
    deinit { close(raw) }
}
