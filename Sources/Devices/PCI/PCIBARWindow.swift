/// One address window the VMM hands the root (32-bit MMIO, 64-bit MMIO or I/O). The VMM inserts
/// it over the whole window; each access goes to whichever enabled BAR covers it right now, so a
/// BAR the guest re-programs inside the window keeps working. Unclaimed reads float high.
public final class PCIBARWindow: BusDevice {
    public let base: UInt64
    public let length: UInt64
    private let topology: PCITopology
    private let memory: Bool

    init(topology: PCITopology, base: UInt64, length: UInt64, memory: Bool) {
        self.topology = topology
        self.base = base
        self.length = length
        self.memory = memory
    }

    private func target(_ offset: UInt64, size: Int) -> (any PCIDevice, Int, UInt64)? {
        let (address, overflow) = base.addingReportingOverflow(offset)
        guard !overflow else { return nil }
        return topology.lookupBAR(address: address, size: size, memory: memory)
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (device, index, barOffset) = target(offset, size: size) else { return pciAllOnes(size: size) }
        return device.barRead(index, offset: barOffset, size: size)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (device, index, barOffset) = target(offset, size: size) else { return }
        device.barWrite(index, offset: barOffset, size: size, value: value)
    }
}

/// Bump allocation of naturally aligned BARs inside a window.
struct PCIWindowAllocator: Sendable {
    let end: UInt64
    private var next: UInt64

    init(_ window: Range<UInt64>) {
        next = window.lowerBound
        end = window.upperBound
    }

    /// The next `alignment`-aligned (power of two) range of `size` bytes, or nil when it does not fit.
    mutating func allocate(size: UInt64, alignment: UInt64) -> UInt64? {
        guard alignment != 0, alignment & (alignment - 1) == 0 else { return nil }
        let (bumped, overflow) = next.addingReportingOverflow(alignment - 1)
        guard !overflow else { return nil }
        let start = bumped & ~(alignment - 1)
        let (limit, tooFar) = start.addingReportingOverflow(size)
        guard !tooFar, limit <= end else { return nil }
        next = limit
        return start
    }
}
