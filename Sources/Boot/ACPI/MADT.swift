/// The Multiple APIC Description Table (ACPI 6.5 section 5.2.12): the CPUs' local APICs, the I/O
/// APIC and how ISA IRQs map onto it. The routing mirrors the MP table (MPTable.swift) and KVM's
/// default GSI routes: ISA IRQ n is GSI n, I/O APIC pin n, with no override for IRQ 0 (the
/// in-kernel PIT raises GSI 0, which KVM delivers to pin 0). The one override marks the SCI
/// level-triggered active-high, which is how Devices.ACPIPM drives it.
enum MADT {
    static let revision: UInt8 = 5
    /// Flags: PCAT_COMPAT, the dual 8259s KVM's irqchip provides exist (Linux masks them).
    static let pcatCompatible: UInt32 = 1
    static let localAPICType: UInt8 = 0, ioapicType: UInt8 = 1, overrideType: UInt8 = 2, localNMIType: UInt8 = 4
    static let localAPICEnabled: UInt32 = 1
    /// MPS INTI flags (table 5.26): bits 0-1 polarity (01 active high), bits 2-3 trigger (11 level).
    static let activeHighLevel: UInt16 = 0x000D
    /// Local APIC NMI on LINT1 of every processor (uid 0xFF), conforming polarity and trigger.
    static let allProcessors: UInt8 = 0xFF
    static let nmiLINT: UInt8 = 1

    static func build(_ platform: ACPIPlatform) -> [UInt8] {
        var body: [UInt8] = []
        body += AML.littleEndian(platform.lapicAddress, count: 4)
        body += AML.littleEndian(UInt64(pcatCompatible), count: 4)
        for cpu in 0..<platform.vcpuCount {
            // ACPI Processor UID = APIC id = index: the DSDT's ACPI0007 devices use the same _UID.
            body += [localAPICType, 8, UInt8(cpu), UInt8(cpu)] + AML.littleEndian(UInt64(localAPICEnabled), count: 4)
        }
        body += [ioapicType, 12, platform.ioapicID, 0] + AML.littleEndian(platform.ioapicAddress, count: 4)
            + AML.littleEndian(0, count: 4)                          // GSI base 0: pins 0-23 are GSIs 0-23
        let sci = UInt64(X86Layout.acpiSCIInterrupt)
        body += [overrideType, 10, 0, UInt8(sci)] + AML.littleEndian(sci, count: 4)
            + AML.littleEndian(UInt64(activeHighLevel), count: 2)
        body += [localNMIType, 6, allProcessors, 0, 0, nmiLINT]
        return ACPITableHeader.table("APIC", revision: revision, body: body)
    }
}

/// PCI Express memory-mapped configuration space (PCI Firmware Specification 3.2, MCFG): one
/// allocation for segment 0 covering the platform's buses.
enum MCFG {
    static let revision: UInt8 = 1

    static func build(_ platform: ACPIPlatform) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: 8)                  // reserved
        body += AML.littleEndian(platform.pciECAMBase, count: 8)
        body += AML.littleEndian(0, count: 2)                        // PCI segment group 0
        body += [0, platform.lastPCIBus]                             // start and end bus
        body += [0, 0, 0, 0]
        return ACPITableHeader.table("MCFG", revision: revision, body: body)
    }
}
