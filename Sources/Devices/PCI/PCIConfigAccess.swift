/// All-ones of an access width: what an absent device or an unclaimed cycle returns.
func pciAllOnes(size: Int) -> UInt64 {
    size >= 8 ? UInt64.max : (UInt64(1) << (8 * UInt64(max(size, 0)))) - 1
}

/// Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2): the address latch at 0xCF8 and the data
/// window at 0xCFC-0xCFF. Insert at port 0xCF8 with length 8.
public final class PCIConfigPorts: BusDevice {
    public static let basePort: UInt64 = 0xCF8
    public static let portCount: UInt64 = 8
    static let enableBit: UInt32 = 1 << 31
    /// The bits of 0xCF8 the latch keeps: enable, bus, device, function, dword register.
    static let addressLatchMask: UInt32 = 0x80FF_FFFC
    /// Offset of 0xCF9, the PC reset control register, within this range.
    static let resetControlOffset: UInt64 = 1
    static let resetCPUBit: UInt64 = 1 << 2

    private let topology: PCITopology
    private let resetSink: (any MachineEventSink)?

    init(topology: PCITopology, resetSink: (any MachineEventSink)?) {
        self.topology = topology
        self.resetSink = resetSink
    }

    /// The function and register the latched address selects for a data access at `dataOffset`.
    private func target(dataOffset: UInt64, size: Int) -> (PCIDeviceAddress, Int)? {
        // The access must stay inside the 4-byte data window.
        guard [1, 2, 4].contains(size), dataOffset + UInt64(size) <= 4 else { return nil }
        let latch = topology.state.withLock { $0.configAddress }
        guard latch & Self.enableBit != 0 else { return nil }
        let address = PCIDeviceAddress(bus: UInt8(truncatingIfNeeded: latch >> 16), device: UInt8((latch >> 11) & 0x1F),
                                       function: UInt8((latch >> 8) & 0x7))
        return (address, Int(latch & 0xFC) + Int(dataOffset))
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        if offset < 4 {
            // Only a DWORD access at 0xCF8 is the latch; narrower ones reach other chipset registers.
            guard offset == 0, size == 4 else { return pciAllOnes(size: size) }
            return UInt64(topology.state.withLock { $0.configAddress })
        }
        guard let (address, register) = target(dataOffset: offset - 4, size: size) else { return pciAllOnes(size: size) }
        return UInt64(topology.configRead(address, offset: register, size: size))
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        if offset < 4 {
            if offset == 0, size == 4 {
                // Bits 1:0 are reserved and read back as zero; bits 30:24 are reserved too.
                topology.state.withLock { $0.configAddress = UInt32(truncatingIfNeeded: value) & Self.addressLatchMask }
            } else if offset == Self.resetControlOffset, size == 1, value & Self.resetCPUBit != 0 {
                resetSink?.machineEvent(.reset)
            }
            return
        }
        guard let (address, register) = target(dataOffset: offset - 4, size: size) else { return }
        topology.configWrite(address, offset: register, size: size, value: UInt32(truncatingIfNeeded: value))
    }
}

/// PCI Express enhanced configuration access (ECAM, PCIe 4.0 §7.2.2): bus << 20 | device << 15 |
/// function << 12 | register. Insert at the ECAM base with the root's `ecamSize`.
public final class PCIECAM: BusDevice {
    private let topology: PCITopology

    init(topology: PCITopology) { self.topology = topology }

    private static func decode(_ offset: UInt64, size: Int) -> (PCIDeviceAddress, Int)? {
        let register = Int(offset & 0xFFF)
        // A config access must not cross into the next function's page.
        guard [1, 2, 4].contains(size), register + size <= PCIConfigSpace.extendedSize, offset >> 20 <= 0xFF else { return nil }
        return (PCIDeviceAddress(bus: UInt8(offset >> 20), device: UInt8((offset >> 15) & 0x1F), function: UInt8((offset >> 12) & 0x7)),
                register)
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (address, register) = Self.decode(offset, size: size) else { return pciAllOnes(size: size) }
        return UInt64(topology.configRead(address, offset: register, size: size))
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (address, register) = Self.decode(offset, size: size) else { return }
        topology.configWrite(address, offset: register, size: size, value: UInt32(truncatingIfNeeded: value))
    }
}
