#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Host-side failures of any image backend: I/O and request validation.
public enum StorageError: Error, Equatable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case shortRead(path: String, offset: UInt64, length: UInt64)
    case outOfRange(path: String, offset: UInt64, length: UInt64)
    case readOnly(path: String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .io(path, operation, code):
            return "\(path): \(operation) failed: \(String(cString: strerror(code)))"
        case let .shortRead(path, offset, length):
            return "\(path): unexpected end of file reading \(length) bytes at offset \(offset)"
        case let .outOfRange(path, offset, length):
            return "\(path): request of \(length) bytes at offset \(offset) is outside the image"
        case let .readOnly(path):
            return "\(path): image is opened read-only"
        case let .invalidArgument(message):
            return message
        }
    }
}

/// Checks `offset + length <= size` without overflowing.
@inline(__always)
func rangeFits(_ offset: UInt64, _ length: UInt64, within size: UInt64) -> Bool {
    let (end, overflow) = offset.addingReportingOverflow(length)
    return !overflow && end <= size
}
