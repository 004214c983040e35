/// The Differentiated System Description Table: Vireo's ACPI namespace, built with the AML
/// builder. What it declares and why:
/// - `\_S5`: the soft-off sleep type (5, 5) that Linux writes to PM1a_CNT.SLP_TYP on poweroff;
///   Devices.ACPIPM ends the VM on it. No other sleep states, so guests never try to suspend.
/// - `\_SB.C000`...: one ACPI0007 processor device per vCPU, _UID = the MADT processor UID.
/// - `\_SB.PCI0`: the PCIe host bridge (PNP0A08, compatible PNP0A03), its bus, I/O and memory
///   windows, the 0xCF8 configuration ports, and the INTx routing (_PRT) for all 32 slots.
/// - `\_SB.MRES`: motherboard resources (PNP0C02) reserving the ECAM, without which Linux
///   refuses to use MMCONFIG ("not reserved in ACPI motherboard resources").
/// - COM1, the i8042 keyboard and mouse, the RTC and fw_cfg as PNP devices: with ACPI on, Linux
///   finds legacy devices through these (i8042 gives up without PNP0303/PNP0F13).
/// The power button is the FADT's fixed-feature button, which needs no namespace object.
enum DSDT {
    static let revision: UInt8 = 2   // 2: integers are 64-bit
    /// \_S5 package: SLP_TYPa, SLP_TYPb, reserved, reserved.
    static let softOffSleepType: UInt64 = 5

    static func build(_ platform: ACPIPlatform) throws(AMLError) -> [UInt8] {
        let s5 = try AML.name("_S5", try AML.package([
            AML.integer(softOffSleepType), AML.integer(softOffSleepType), AML.integer(0), AML.integer(0),
        ]))
        var systemBus: [[UInt8]] = []
        for cpu in 0..<platform.vcpuCount {
            systemBus.append(try processor(cpu))
        }
        systemBus.append(try pciHostBridge(platform))
        systemBus.append(try motherboardResources(platform))
        systemBus += try legacyDevices(fwCfg: platform.fwCfg)
        let aml = s5 + (try AML.scope("\\_SB", systemBus))
        return ACPITableHeader.table("DSDT", revision: revision, body: aml)
    }

    /// Device(Cnnn) { _HID "ACPI0007", _UID n }, n in hex so 254 vCPUs fit the 4-character name.
    static func processor(_ index: Int) throws(AMLError) -> [UInt8] {
        let digits = String(index, radix: 16, uppercase: true)
        let name = "C" + String(repeating: "0", count: max(0, 3 - digits.count)) + digits
        return try AML.device(name, [
            try AML.name("_HID", try AML.string("ACPI0007")),
            try AML.name("_UID", AML.integer(UInt64(index))),
        ])
    }

    static func pciHostBridge(_ platform: ACPIPlatform) throws(AMLError) -> [UInt8] {
        var windows = [
            try AMLResource.wordBusNumber(0...UInt16(platform.lastPCIBus)),
            // The configuration mechanism #1 ports; Linux drops this entry from the bridge's windows.
            try AMLResource.io(minimum: 0xCF8, maximum: 0xCF8, alignment: 1, length: 8),
            try AMLResource.wordIO(platform.pciIO),
            try AMLResource.dwordMemory(try closed32(platform.pciMMIO32), cacheable: false),
        ]
        if let window = platform.pciMMIO64 {
            // validate() made it non-empty, so upperBound - 1 cannot underflow.
            windows.append(try AMLResource.qwordMemory(window.lowerBound...(window.upperBound - 1), cacheable: true))
        }
        return try AML.device("PCI0", [
            try AML.name("_HID", try AML.eisaID("PNP0A08")),
            try AML.name("_CID", try AML.eisaID("PNP0A03")),
            try AML.name("_SEG", AML.integer(0)),
            try AML.name("_BBN", AML.integer(0)),
            try AML.name("_UID", AML.integer(0)),
            try AML.name("_CRS", try AMLResource.template(windows)),
            try AML.name("_PRT", try routingTable()),
        ])
    }

    /// _PRT: Package { Address (slot << 16 | 0xFFFF: any function), Pin, Source 0 (a GSI, so
    /// level-triggered active-low and shareable per 6.2.13), GSI } for every slot and pin.
    static func routingTable() throws(AMLError) -> [UInt8] {
        var entries: [[UInt8]] = []
        for slot in UInt8(0)..<32 {
            for pin in UInt8(0)..<4 {
                entries.append(try AML.package([
                    AML.integer(UInt64(slot) << 16 | 0xFFFF), AML.integer(UInt64(pin)), AML.integer(0),
                    AML.integer(UInt64(ACPIPlatform.pciInterruptGSI(slot: slot, pin: pin))),
                ]))
            }
        }
        return try AML.package(entries)
    }

    static func motherboardResources(_ platform: ACPIPlatform) throws(AMLError) -> [UInt8] {
        var reserved: [[UInt8]] = []
        if let base = UInt32(exactly: platform.pciECAMBase), let size = UInt32(exactly: platform.pciECAMSize) {
            reserved.append(try AMLResource.memory32Fixed(base: base, length: size))
        } else {
            let end = platform.pciECAMBase + (platform.pciECAMSize - 1)   // validate(): no wrap
            reserved.append(try AMLResource.qwordMemory(platform.pciECAMBase...end, cacheable: false))
        }
        return try AML.device("MRES", [
            try AML.name("_HID", try AML.eisaID("PNP0C02")),
            try AML.name("_UID", AML.integer(0)),
            try AML.name("_CRS", try AMLResource.template(reserved)),
        ])
    }

    static func legacyDevices(fwCfg: Bool) throws(AMLError) -> [[UInt8]] {
        var devices = [
            try AML.device("COM1", [
                try AML.name("_HID", try AML.eisaID("PNP0501")),
                try AML.name("_UID", AML.integer(1)),
                try AML.name("_CRS", try AMLResource.template([
                    try AMLResource.io(minimum: 0x3F8, maximum: 0x3F8, alignment: 8, length: 8),
                    try AMLResource.irqNoFlags([4]),
                ])),
            ]),
            try AML.device("PS2K", [
                try AML.name("_HID", try AML.eisaID("PNP0303")),
                try AML.name("_CRS", try AMLResource.template([
                    try AMLResource.io(minimum: 0x60, maximum: 0x60, length: 1),
                    try AMLResource.io(minimum: 0x64, maximum: 0x64, length: 1),
                    try AMLResource.irqNoFlags([1]),
                ])),
            ]),
            try AML.device("PS2M", [
                try AML.name("_HID", try AML.eisaID("PNP0F13")),
                try AML.name("_CRS", try AMLResource.template([try AMLResource.irqNoFlags([12])])),
            ]),
            try AML.device("RTC", [
                try AML.name("_HID", try AML.eisaID("PNP0B00")),
                try AML.name("_CRS", try AMLResource.template([
                    try AMLResource.io(minimum: 0x70, maximum: 0x70, length: 2),
                    try AMLResource.irqNoFlags([8]),
                ])),
            ]),
        ]
        if fwCfg {
            // Selector/data at 0x510-0x511 and the DMA address at 0x514-0x51B, as QEMU declares it.
            devices.append(try AML.device("FWCF", [
                try AML.name("_HID", try AML.string("QEMU0002")),
                try AML.name("_STA", AML.integer(0x0B)),   // present, enabled, not shown in UI
                try AML.name("_CRS", try AMLResource.template([
                    try AMLResource.io(minimum: 0x510, maximum: 0x510, length: 0x0C),
                ])),
            ]))
        }
        return devices
    }

    /// A half-open window below 4 GiB as the closed 32-bit range a DWord descriptor holds.
    static func closed32(_ window: Range<UInt64>) throws(AMLError) -> ClosedRange<UInt32> {
        guard !window.isEmpty, let low = UInt32(exactly: window.lowerBound),
              let high = UInt32(exactly: window.upperBound - 1) else {
            throw .invalidResource("window \(hex(window.lowerBound))-\(hex(window.upperBound)) is empty or above 4 GiB")
        }
        return low...high
    }
}
