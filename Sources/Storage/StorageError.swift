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
    /// Another open of the image conflicts with this one (QEMU's image locking).
    case locked(path: String, permission: String, shared: Bool)
    /// The path is not something an image can be (a FIFO, a device where none is allowed...).
    case notAnImageFile(path: String, kind: String)
    /// The file is an image of a format Vireo does not read (VMDK, VHDX, ...).
    case foreignFormat(path: String, format: String)
    /// A write that would make an image whose format was probed as raw look like another format.
    case probedRawHeaderWrite(path: String)
    /// A foreign image (VHD, VMDK) whose structures are malformed.
    case corruptImage(path: String, format: String, reason: String)

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
        case let .locked(path, permission, shared):
            return "\(path): failed to get \(shared ? "shared " : "")\"\(permission)\" lock: is another process (a VM, vireo img, QEMU) using the image? (vireo img reads it anyway with -U)"
        case let .notAnImageFile(path, kind):
            return "\(path) is \(kind), not a disk image file"
        case let .foreignFormat(path, format):
            // Which tool converts it: vireo img reads VHD and single-file VMDK (ForeignImage).
            let tool = format.hasPrefix("VHD (") || format == "VMDK" ? "vireo img convert" : "qemu-img convert"
            let note = format == "VMDK" ? " (vireo img reads single-file VMDKs; a VMDK made of several files needs qemu-img)" : ""
            return "\(path) is a \(format) image; VMs run on raw and qcow2: convert it with \(tool) -O qcow2 \(path) NEW.qcow2\(note)"
        case let .corruptImage(path, format, reason):
            return "\(path): corrupt \(format) image: \(reason)"
        case let .probedRawHeaderWrite(path):
            return "\(path): refused a write to the first sector of an image probed as raw that would make it look like another format (give format=raw to allow it)"
        }
    }
}

/// Checks `offset + length <= size` without overflowing.
@inline(__always)
func rangeFits(_ offset: UInt64, _ length: UInt64, within size: UInt64) -> Bool {
    let (end, overflow) = offset.addingReportingOverflow(length)
    return !overflow && end <= size
}
