import Synchronization

/// A device reachable through port I/O or MMIO. Accesses are 1, 2, 4 or 8 bytes wide; `offset` is
/// relative to the base the device was inserted at. Implementations keep their state behind a Mutex:
/// several vCPU threads may call in at once.
public protocol BusDevice: AnyObject, Sendable {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// An interrupt input of the platform's interrupt controller. The device drives the level it wants
/// the line to have; the VMM maps it onto KVM (KVM_IRQ_LINE) and tests use a recording fake.
public protocol InterruptLine: Sendable {
    func setLevel(_ high: Bool)
}

/// Machine-level requests a device can make of the VMM.
public enum MachineEvent: Equatable, Sendable {
    /// Guest asked for a reset (i8042 pulse 0xFE, ...).
    case reset
    /// Guest asked to power off.
    case powerOff
    /// QEMU-compatible debug-exit port: the VMM exits with (value << 1) | 1.
    case debugExit(value: UInt32)
}

public protocol MachineEventSink: Sendable {
    func machineEvent(_ event: MachineEvent)
}

public enum BusError: Error, Equatable, CustomStringConvertible {
    case overlap(base: UInt64, length: UInt64)
    case invalidRange(base: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case let .overlap(base, length):
            return "bus range 0x\(String(base, radix: 16))+0x\(String(length, radix: 16)) overlaps an existing device"
        case let .invalidRange(base, length):
            return "bus range 0x\(String(base, radix: 16))+0x\(String(length, radix: 16)) is empty or wraps"
        }
    }
}

/// A range-checked address bus (one for PIO, one for MMIO). Ranges are registered during machine
/// assembly; lookups are a binary search over sorted, non-overlapping ranges.
public final class Bus: Sendable {
    struct Entry: Sendable {
        let base: UInt64
        let length: UInt64
        let device: any BusDevice
    }

    private let entries = Mutex<[Entry]>([])

    public init() {}

    /// Registers `device` for [base, base+length). Overlaps and empty/wrapping ranges are refused.
    public func insert(_ device: any BusDevice, base: UInt64, length: UInt64) throws {
        guard length > 0, base.addingReportingOverflow(length - 1).overflow == false else {
            throw BusError.invalidRange(base: base, length: length)
        }
        let last = base + (length - 1)
        try entries.withLock { entries in
            for entry in entries where base <= entry.base + (entry.length - 1) && entry.base <= last {
                throw BusError.overlap(base: base, length: length)
            }
            entries.append(Entry(base: base, length: length, device: device))
            entries.sort { $0.base < $1.base }
        }
    }

    /// Finds the device covering the whole access [address, address+size).
    func lookup(_ address: UInt64, size: Int) -> (any BusDevice, UInt64)? {
        entries.withLock { entries in
            var low = 0, high = entries.count - 1
            while low <= high {
                let mid = (low + high) / 2
                let entry = entries[mid]
                if address < entry.base { high = mid - 1; continue }
                let offset = address - entry.base
                if offset >= entry.length { low = mid + 1; continue }
                // The access must not run past the end of the device's range.
                guard size >= 1, UInt64(size) <= entry.length - offset else { return nil }
                return (entry.device, offset)
            }
            return nil
        }
    }

    /// Dispatches a read. Returns nil when nothing is mapped there (callers return all-ones, as on a
    /// PC where an unclaimed bus floats high).
    public func read(address: UInt64, size: Int) -> UInt64? {
        guard let (device, offset) = lookup(address, size: size) else { return nil }
        return device.read(offset: offset, size: size)
    }

    /// Dispatches a write. Returns false when nothing is mapped there.
    @discardableResult
    public func write(address: UInt64, size: Int, value: UInt64) -> Bool {
        guard let (device, offset) = lookup(address, size: size) else { return false }
        device.write(offset: offset, size: size, value: value)
        return true
    }
}
