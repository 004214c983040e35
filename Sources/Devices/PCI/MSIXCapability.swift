/// The MSI-X capability structure in configuration space (PCI 3.0 §6.8.2): message control
/// (table size N-1, function mask bit 14, enable bit 15), then table and PBA offset/BIR.
public struct MSIXCapability: Equatable, Sendable, Codable {
    public static let id: UInt8 = 0x11
    static let enableBit: UInt16 = 1 << 15
    static let functionMaskBit: UInt16 = 1 << 14

    /// Offset of the capability (its ID byte) in configuration space.
    public let offset: Int
    public let tableBAR: Int
    public let tableOffset: UInt32
    public let pbaBAR: Int
    public let pbaOffset: UInt32

    /// Appends the capability to `config`; offsets must be QWORD aligned (the BIR takes bits 2:0).
    public static func add(to config: inout PCIConfigSpace, vectorCount: Int, tableBAR: Int, tableOffset: UInt32,
                           pbaBAR: Int, pbaOffset: UInt32) throws(PCIError) -> MSIXCapability {
        guard (1...MSIXTable.maximumVectors).contains(vectorCount) else { throw .invalidMSIX("vector count \(vectorCount) out of range") }
        guard (0..<6).contains(tableBAR), (0..<6).contains(pbaBAR) else { throw .invalidMSIX("BAR index out of 0-5") }
        guard tableOffset % 8 == 0, pbaOffset % 8 == 0 else { throw .invalidMSIX("table/PBA offsets must be 8-byte aligned") }
        let control = UInt16(vectorCount - 1)
        let table = tableOffset | UInt32(tableBAR)
        let pba = pbaOffset | UInt32(pbaBAR)
        var body: [UInt8] = [UInt8(truncatingIfNeeded: control), UInt8(truncatingIfNeeded: control >> 8)]
        for dword in [table, pba] { body += (0..<4).map { UInt8(truncatingIfNeeded: dword >> (8 * UInt32($0))) } }
        // Only the enable and function-mask bits of message control are writable.
        let offset = try config.addCapability(id: id, body: body, writableMask: [0x00, 0xC0])
        return MSIXCapability(offset: offset, tableBAR: tableBAR, tableOffset: tableOffset, pbaBAR: pbaBAR, pbaOffset: pbaOffset)
    }

    /// The enable and function-mask bits the guest has written.
    public func control(in config: PCIConfigSpace) -> (enabled: Bool, functionMasked: Bool) {
        let control = UInt16(truncatingIfNeeded: config.read(offset: offset + 2, size: 2))
        return (control & Self.enableBit != 0, control & Self.functionMaskBit != 0)
    }

    /// Function reset: clears enable and function mask, leaving the read-only table size.
    public func reset(in config: inout PCIConfigSpace) {
        let control = UInt16(truncatingIfNeeded: config.read(offset: offset + 2, size: 2))
        config.setRaw(UInt32(control & ~(Self.enableBit | Self.functionMaskBit)), at: offset + 2, size: 2)
    }

    /// Whether a configuration write at [writeOffset, +size) touched message control.
    public func touchesControl(offset writeOffset: Int, size: Int) -> Bool {
        writeOffset < offset + 4 && offset + 2 < writeOffset + size
    }
}

extension PCIConfigSpace {
    /// Applies the root's "firmware" assignment: BAR addresses, decoding enabled for the spaces
    /// the function uses, and the INTx routing (pin 0 when the function has no INTx wiring).
    public mutating func applyAttachment(_ attachment: PCIAttachment) {
        var enable: UInt16 = 0
        for (index, address) in attachment.barAddresses {
            guard bars.indices.contains(index), let bar = bars[index] else { continue }
            setBARAddress(index, address)
            enable |= bar.kind == .io ? PCIRegister.commandIOSpace : PCIRegister.commandMemorySpace
        }
        setRaw(UInt32(command | enable), at: PCIRegister.command, size: 2)
        if let intx = attachment.intx {
            setInterruptRouting(irq: intx.irq, pin: 1)
        } else {
            setInterruptRouting(irq: 0xFF, pin: 0)
        }
    }
}
