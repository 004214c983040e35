import GuestMemory

/// What the ACPI tables describe: the CPUs, interrupt controllers and PCI host bridge of one
/// machine. The defaults are Vireo's fixed layout (`X86Layout`); the VMM overrides what it sizes
/// per machine (vCPU count, an optional 64-bit PCI window).
public struct ACPIPlatform: Sendable, Equatable {
    /// vCPUs: one MADT Local APIC entry and one ACPI0007 processor device each, APIC id = index.
    public var vcpuCount: Int
    public var lapicAddress: UInt64
    public var ioapicAddress: UInt64
    /// ECAM base (bus 0's configuration space); 1 MiB per bus.
    public var pciECAMBase: UInt64
    /// Buses 0 ..< pciBusCount behind the single host bridge (segment 0), 1-256.
    public var pciBusCount: Int
    /// Where PCI BARs below 4 GiB may go (the host bridge's _CRS memory window).
    public var pciMMIO32: Range<UInt64>
    /// An optional window above 4 GiB for 64-bit BARs.
    public var pciMMIO64: Range<UInt64>?
    /// The host bridge's I/O window for I/O BARs.
    public var pciIO: ClosedRange<UInt16>
    /// Declare QEMU's fw_cfg (QEMU0002, ports 0x510-0x51B) so Linux's qemu_fw_cfg driver binds.
    public var fwCfg: Bool

    public init(vcpuCount: Int, lapicAddress: UInt64 = X86Layout.lapicAddress,
                ioapicAddress: UInt64 = X86Layout.ioapicAddress, pciECAMBase: UInt64 = X86Layout.pciECAMBase,
                pciBusCount: Int = Int(X86Layout.pciECAMSize >> 20),
                pciMMIO32: Range<UInt64> = X86Layout.pciMMIO32Start..<X86Layout.pciMMIO32End,
                pciMMIO64: Range<UInt64>? = nil, pciIO: ClosedRange<UInt16> = X86Layout.pciIOWindow,
                fwCfg: Bool = true) {
        self.vcpuCount = vcpuCount
        self.lapicAddress = lapicAddress
        self.ioapicAddress = ioapicAddress
        self.pciECAMBase = pciECAMBase
        self.pciBusCount = pciBusCount
        self.pciMMIO32 = pciMMIO32
        self.pciMMIO64 = pciMMIO64
        self.pciIO = pciIO
        self.fwCfg = fwCfg
    }

    /// The I/O APIC's id: the first after the CPUs' APIC ids, as in the MP table.
    public var ioapicID: UInt8 { UInt8(truncatingIfNeeded: vcpuCount) }

    /// Bytes of ECAM the MCFG entry covers.
    public var pciECAMSize: UInt64 { UInt64(max(pciBusCount, 0)) << 20 }

    /// The last PCI bus number (the MCFG end bus, the _CRS bus range's maximum).
    var lastPCIBus: UInt8 { UInt8(clamping: pciBusCount - 1) }

    /// First GSI of the PCI INTx lines and how many there are (I/O APIC pins 16-23).
    public static let pciInterruptGSIBase: UInt32 = 16
    public static let pciInterruptGSICount: UInt32 = 8

    /// The GSI that INTx `pin` (0 = INTA ... 3 = INTD) of the device in `slot` (0-31) drives: the
    /// DSDT's _PRT says exactly this, so the VMM must wire PCI interrupts with this function.
    /// Rotating by slot spreads single-function devices (all INTA) over the 8 lines.
    /// Out-of-range arguments are reduced to their field width (5-bit slot, 2-bit pin).
    public static func pciInterruptGSI(slot: UInt8, pin: UInt8) -> UInt32 {
        pciInterruptGSIBase + (UInt32(slot & 0x1F) + UInt32(pin & 0x3)) % pciInterruptGSICount
    }

    /// The I/O ports of the devices the DSDT and FADT describe (the PCI configuration ports are
    /// decoded by the host bridge itself).
    static let fixedPorts: [(String, ClosedRange<UInt16>)] = [
        ("i8042", 0x60...0x64), ("RTC", 0x70...0x71), ("COM1", 0x3F8...0x3FF), ("fw_cfg", 0x510...0x51B),
        ("ACPI PM block", X86Layout.acpiPM1EventPort...(X86Layout.acpiPM1EventPort + 0xF)),
        ("PCI configuration ports", 0xCF8...0xCFF),
    ]

    /// Checks that every address fits the table field it goes into and that the windows are
    /// sane, so table generation itself cannot fail on a bad description.
    func validate() throws(BootError) {
        guard (1...MPTable.maximumVCPUs).contains(vcpuCount) else {
            throw .invalidVCPUCount(vcpuCount, maximum: MPTable.maximumVCPUs)
        }
        guard lapicAddress <= UInt32.max, ioapicAddress <= UInt32.max else {
            throw .acpi("local APIC \(hex(lapicAddress)) and I/O APIC \(hex(ioapicAddress)) must be below 4 GiB")
        }
        guard (1...256).contains(pciBusCount) else {
            throw .acpi("PCI bus count \(pciBusCount) is not 1-256")
        }
        let ecamAlignment: UInt64 = 1 << 20
        let (ecamEnd, ecamOverflow) = pciECAMBase.addingReportingOverflow(pciECAMSize)
        guard pciECAMBase % ecamAlignment == 0, !ecamOverflow else {
            throw .acpi("PCI ECAM base \(hex(pciECAMBase)) must be 1 MiB aligned and the ECAM must not wrap")
        }
        guard !pciMMIO32.isEmpty, pciMMIO32.upperBound <= X86Layout.mmioHoleEnd else {
            throw .acpi("32-bit PCI MMIO window \(hex(pciMMIO32.lowerBound))-\(hex(pciMMIO32.upperBound)) must be non-empty and below 4 GiB")
        }
        let ecam = pciECAMBase..<ecamEnd
        if let window = pciMMIO64 {
            guard !window.isEmpty, window.lowerBound >= X86Layout.mmioHoleEnd else {
                throw .acpi("64-bit PCI MMIO window \(hex(window.lowerBound))-\(hex(window.upperBound)) must be non-empty and above 4 GiB")
            }
        }
        for (name, window) in [("32-bit PCI MMIO window", pciMMIO32), ("64-bit PCI MMIO window", pciMMIO64)] {
            guard let window, window.overlaps(ecam) else { continue }
            throw .acpi("\(name) \(hex(window.lowerBound))-\(hex(window.upperBound)) overlaps the PCI ECAM at \(hex(pciECAMBase))")
        }
        for apic in [lapicAddress, ioapicAddress] where pciMMIO32.contains(apic) || ecam.contains(apic) {
            throw .acpi("APIC at \(hex(apic)) lies inside a PCI window or the ECAM")
        }
        // I/O BARs must not land on ports the platform's own devices decode.
        for (name, ports) in Self.fixedPorts where pciIO.overlaps(ports) {
            throw .acpi("PCI I/O window \(hex(UInt64(pciIO.lowerBound)))-\(hex(UInt64(pciIO.upperBound))) overlaps the \(name) at \(hex(UInt64(ports.lowerBound)))")
        }
    }

    /// The ECAM and PCI windows must not cover guest RAM: the guest would map BARs over its memory.
    func validate(against memory: GuestMemory) throws(BootError) {
        try validate()   // first: it guarantees the ECAM range below does not wrap
        let windows: [(String, Range<UInt64>?)] = [
            ("PCI ECAM", pciECAMBase..<(pciECAMBase + pciECAMSize)), ("32-bit PCI MMIO window", pciMMIO32),
            ("64-bit PCI MMIO window", pciMMIO64),
        ]
        for (name, window) in windows {
            guard let window else { continue }
            for region in memory.regions where window.overlaps(region.start.raw..<region.end) {
                throw .acpi("\(name) \(hex(window.lowerBound))-\(hex(window.upperBound)) overlaps guest RAM at \(hex(region.start.raw))-\(hex(region.end))")
            }
        }
    }
}
