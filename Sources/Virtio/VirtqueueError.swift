import GuestMemory

/// Everything that can be wrong with a virtqueue the driver set up or a chain it published.
/// Each case is one line for the log; the transport turns any of them into DEVICE_NEEDS_RESET.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidSize(UInt16)
    case notReady
    case misaligned(area: String, address: GuestAddress, alignment: UInt64)
    case areaOutsideRAM(area: String, address: GuestAddress, length: UInt64)
    case availIndexJump(lastSeen: UInt16, published: UInt16, size: UInt16)
    case headOutOfRange(index: UInt16, size: UInt16)
    case nextOutOfRange(index: UInt16, tableSize: UInt32)
    case chainTooLong(limit: UInt32)
    case nestedIndirect(table: GuestAddress)
    case indirectWithNext(index: UInt16)
    case indirectLengthInvalid(length: UInt32)
    case indirectTableOutsideRAM(address: GuestAddress, length: UInt32)
    case bufferAddressOverflow(address: GuestAddress, length: UInt32)
    case bufferOutsideRAM(address: GuestAddress, length: UInt32)
    case chainLengthOverflow
    case writableBeforeReadable(index: UInt16)
    case usedHeadOutOfRange(head: UInt16, size: UInt16)
    case inconsistentState(String)
    case memory(GuestMemoryError)

    public var description: String {
        switch self {
        case let .invalidSize(size):
            return "virtqueue size \(size) is not a power of two between 1 and 32768"
        case .notReady:
            return "virtqueue is not enabled by the driver"
        case let .misaligned(area, address, alignment):
            return "virtqueue \(area) at \(address) is not \(alignment)-byte aligned"
        case let .areaOutsideRAM(area, address, length):
            return "virtqueue \(area) at \(address) (\(length) bytes) is outside guest RAM"
        case let .availIndexJump(lastSeen, published, size):
            return "available ring idx jumped from \(lastSeen) to \(published), more than queue size \(size)"
        case let .headOutOfRange(index, size):
            return "descriptor chain head \(index) is not below queue size \(size)"
        case let .nextOutOfRange(index, tableSize):
            return "descriptor next index \(index) is not below table size \(tableSize)"
        case let .chainTooLong(limit):
            return "descriptor chain is longer than \(limit) descriptors (loop?)"
        case let .nestedIndirect(table):
            return "indirect descriptor inside the indirect table at \(table)"
        case let .indirectWithNext(index):
            return "descriptor \(index) sets both INDIRECT and NEXT"
        case let .indirectLengthInvalid(length):
            return "indirect table length \(length) is zero, not a multiple of 16, or above 32768 entries"
        case let .indirectTableOutsideRAM(address, length):
            return "indirect table at \(address) (\(length) bytes) is outside guest RAM"
        case let .bufferAddressOverflow(address, length):
            return "descriptor buffer at \(address) of \(length) bytes wraps the address space"
        case let .bufferOutsideRAM(address, length):
            return "descriptor buffer at \(address) of \(length) bytes is outside guest RAM"
        case .chainLengthOverflow:
            return "descriptor chain is longer than 2^32-1 bytes in total"
        case let .writableBeforeReadable(index):
            return "device-readable descriptor \(index) follows a device-writable one"
        case let .usedHeadOutOfRange(head, size):
            return "used element head \(head) is not below queue size \(size)"
        case let .inconsistentState(why):
            return "invalid virtqueue state: \(why)"
        case let .memory(error):
            return "virtqueue ring access failed: \(error)"
        }
    }
}

/// Runs a guest-memory access, reporting failures as this module's error type.
@inline(__always)
func ringAccess<T>(_ body: () throws -> T) throws(VirtqueueError) -> T {
    do { return try body() } catch let error as GuestMemoryError { throw .memory(error) } catch {
        // GuestMemory throws only GuestMemoryError; keep any surprise typed rather than trapping.
        throw .inconsistentState("unexpected guest memory error: \(error)")
    }
}
