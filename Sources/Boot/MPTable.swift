/// Intel MultiProcessor Specification 1.4 tables: how the guest finds its CPUs and I/O APIC
/// without ACPI. Layout and entry formats follow the spec's chapter 4.
public enum MPTable {
    /// APIC ids are 8-bit and the I/O APIC takes id `vcpuCount`, with 0xFF meaning "all".
    public static let maximumVCPUs = 254
    static let floatingPointerSize = 16
    static let headerSize = 44
    static let processorEntrySize = 20
    static let shortEntrySize = 8
    static let isaInterruptCount = 16
    static let localAPICVersion: UInt8 = 0x14
    static let ioapicVersion: UInt8 = 0x11

    /// Bytes the floating pointer plus configuration table take for `vcpuCount` processors.
    public static func size(vcpuCount: Int) -> Int {
        floatingPointerSize + headerSize + vcpuCount * processorEntrySize
            + shortEntrySize * (2 + isaInterruptCount + 2)
    }

    /// The floating pointer followed by the configuration table, for placement at `address`.
    public static func build(vcpuCount: Int, address: UInt64) throws(BootError) -> [UInt8] {
        guard (1...maximumVCPUs).contains(vcpuCount) else {
            throw .invalidVCPUCount(vcpuCount, maximum: maximumVCPUs)
        }
        let tableAddress = address + UInt64(floatingPointerSize)
        var table = [UInt8](repeating: 0, count: headerSize)
        table.put(bytes: Array("PCMP".utf8), at: 0)
        table[6] = 4                                        // spec revision 1.4
        table.put(bytes: Array("VIREO   ".utf8), at: 8)     // OEM id, 8 bytes
        table.put(bytes: Array("VIREO VM    ".utf8), at: 16) // product id, 12 bytes
        table.put(UInt32(X86Layout.lapicAddress), at: 36)

        var entries: [[UInt8]] = []
        for cpu in 0..<vcpuCount {
            var entry = [UInt8](repeating: 0, count: processorEntrySize)
            entry[0] = 0                                    // processor
            entry[1] = UInt8(cpu)                           // local APIC id = vCPU index
            entry[2] = localAPICVersion
            entry[3] = cpu == 0 ? 0x3 : 0x1                 // enabled, BSP on vCPU 0
            entry.put(UInt32(0x600), at: 4)                 // signature: family 6
            entry.put(UInt32(0x201), at: 8)                 // features: FPU, APIC
            entries.append(entry)
        }
        entries.append([1, 0] + Array("ISA   ".utf8))       // bus 0 is ISA
        let ioapicID = UInt8(vcpuCount)
        var ioapic = [UInt8](repeating: 0, count: shortEntrySize)
        ioapic[0] = 2; ioapic[1] = ioapicID; ioapic[2] = ioapicVersion; ioapic[3] = 1   // enabled
        ioapic.put(UInt32(X86Layout.ioapicAddress), at: 4)
        entries.append(ioapic)
        // ISA IRQ n -> I/O APIC pin n, conforming polarity and trigger (as Firecracker and kvmtool do).
        for irq in 0..<isaInterruptCount {
            entries.append([3, 0, 0, 0, 0, UInt8(irq), ioapicID, UInt8(irq)])
        }
        // ExtINT (the 8259) -> LINT0 and NMI -> LINT1 on every local APIC.
        entries.append([4, 3, 0, 0, 0, 0, 0xFF, 0])
        entries.append([4, 1, 0, 0, 0, 0, 0xFF, 1])

        table += entries.flatMap { $0 }
        table.put(UInt16(table.count), at: 4)
        table.put(UInt16(entries.count), at: 34)
        table[7] = checksumByte(table)
        return floatingPointer(tableAddress: tableAddress) + table
    }

    /// The 16-byte "_MP_" structure pointing at the configuration table.
    static func floatingPointer(tableAddress: UInt64) -> [UInt8] {
        var pointer = [UInt8](repeating: 0, count: floatingPointerSize)
        pointer.put(bytes: Array("_MP_".utf8), at: 0)
        pointer.put(UInt32(truncatingIfNeeded: tableAddress), at: 4)
        pointer[8] = 1                                      // length in 16-byte units
        pointer[9] = 4                                      // spec revision 1.4
        pointer[10] = checksumByte(pointer)
        return pointer
    }

    /// Writes the table at the EBDA, a second floating pointer in the BIOS ROM range, and the BIOS
    /// data area words (EBDA segment, base memory in KiB) that MP-spec searches read first.
    static func write(vcpuCount: Int, with writer: GuestWriter) throws(BootError) {
        let table = try build(vcpuCount: vcpuCount, address: X86Layout.mpTableAddress)
        try writer.write(table, at: X86Layout.mpTableAddress, "MP table")
        let copy = floatingPointer(tableAddress: X86Layout.mpTableAddress + UInt64(floatingPointerSize))
        try writer.write(copy, at: X86Layout.mpFloatingPointerCopyAddress, "MP floating pointer copy")
        var bda = [UInt8](repeating: 0, count: 2)
        bda.put(UInt16(X86Layout.ebdaStart >> 4), at: 0)
        try writer.write(bda, at: X86Layout.biosDataArea + 0x0E, "BIOS data area EBDA segment")
        bda.put(UInt16(X86Layout.ebdaStart >> 10), at: 0)
        try writer.write(bda, at: X86Layout.biosDataArea + 0x13, "BIOS data area base memory size")
    }
}
