import GuestMemory
import Testing
@testable import Boot

@Suite("ACPI tables: RSDP, XSDT/RSDT, FADT, FACS, MADT, MCFG, DSDT")
struct ACPITablesTests {
    static func build(vcpus: Int = 2, mmio64: Range<UInt64>? = nil) throws -> ACPITestReader {
        ACPITestReader(try ACPITables.build(ACPIPlatform(vcpuCount: vcpus, pciMMIO64: mmio64)))
    }

    @Test("RSDP: revision 2, length 36, both checksums, XSDT and RSDT addresses, 16-byte aligned at 0xE0000")
    func rsdp() throws {
        let reader = try Self.build()
        let rsdp = try reader.rsdp
        #expect(reader.tables.rsdpAddress == 0xE0000 && reader.tables.rsdpAddress % 16 == 0)
        #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8))
        #expect(rsdp[0..<20].reduce(UInt8(0), &+) == 0)
        #expect(rsdp.reduce(UInt8(0), &+) == 0)
        #expect(Array(rsdp[9..<15]) == Array("VIREO ".utf8))
        #expect(rsdp[15] == 2 && rsdp.le(UInt32.self, at: 20) == 36)
        #expect(rsdp.le(UInt64.self, at: 24) == reader.tables.tableAddresses["XSDT"])
        #expect(rsdp.le(UInt32.self, at: 16).map(UInt64.init) == reader.tables.tableAddresses["RSDT"])
    }

    @Test("every table: checksum 0, header length, OEM ids, 8-byte alignment, no overlaps", arguments: [1, 8, 254])
    func headers(vcpus: Int) throws {
        let reader = try Self.build(vcpus: vcpus, mmio64: 0x10_0000_0000..<0x20_0000_0000)
        var spans: [Range<UInt64>] = []
        for signature in ["XSDT", "RSDT", "FACP", "APIC", "MCFG", "DSDT"] {
            let address = try #require(reader.tables.tableAddresses[signature])
            let table = try reader.table(at: address)
            #expect(Array(table[0..<4]) == Array(signature.utf8))
            #expect(table.reduce(UInt8(0), &+) == 0, "\(signature) checksum")
            #expect(Array(table[10..<16]) == Array("VIREO ".utf8) && Array(table[16..<24]) == Array("VIREOVM ".utf8))
            #expect(address % 8 == 0, "\(signature) alignment")
            spans.append(address..<(address + UInt64(table.count)))
        }
        let facs = try #require(reader.tables.tableAddresses["FACS"])
        #expect(facs % 64 == 0)
        #expect(try reader.bytes(at: facs, count: 8) == Array("FACS".utf8) + [64, 0, 0, 0])
        spans.append(facs..<(facs + 64))
        spans.append(0xE0000..<0xE0024)
        for (index, span) in spans.enumerated() {
            for other in spans[(index + 1)...] { #expect(!span.overlaps(other)) }
        }
        #expect(UInt64(reader.tables.bytes.count) <= X86Layout.acpiAreaEnd - X86Layout.acpiRSDPAddress)
    }

    @Test("XSDT and RSDT point at the FADT, MADT and MCFG; the FADT reaches the DSDT and FACS")
    func rootTables() throws {
        let reader = try Self.build()
        let addresses = reader.tables.tableAddresses
        #expect(try reader.xsdtEntries == ["FACP", "APIC", "MCFG"].compactMap { addresses[$0] })
        let rsdt = try reader.table(at: try #require(addresses["RSDT"]))
        let rsdtEntries = stride(from: 36, to: rsdt.count, by: 4).compactMap { rsdt.le(UInt32.self, at: $0) }
        #expect(rsdtEntries.map(UInt64.init) == ["FACP", "APIC", "MCFG"].compactMap { addresses[$0] })
        let fadt = try reader.table("FACP")
        #expect(fadt.le(UInt32.self, at: 40).map(UInt64.init) == addresses["DSDT"])
        #expect(fadt.le(UInt64.self, at: 140) == addresses["DSDT"])
        #expect(fadt.le(UInt32.self, at: 36).map(UInt64.init) == addresses["FACS"])
        #expect(fadt.le(UInt64.self, at: 132) == 0)
    }

    @Test("FADT: revision 6.5, SCI 9, PM1a blocks and timer with matching X_ GAS, boot flags, reset register")
    func fadt() throws {
        let fadt = try Self.build().table("FACP")
        #expect(fadt.count == 276 && fadt[8] == 6 && fadt[131] == 5)
        #expect(fadt.le(UInt16.self, at: 46) == 9)                                   // SCI_INT
        #expect(fadt.le(UInt32.self, at: 48) == 0)                                   // SMI_CMD: ACPI mode fixed
        #expect(fadt.le(UInt32.self, at: 56) == 0x600 && fadt.le(UInt32.self, at: 60) == 0)   // PM1a/b_EVT_BLK
        #expect(fadt.le(UInt32.self, at: 64) == 0x604 && fadt.le(UInt32.self, at: 68) == 0)   // PM1a/b_CNT_BLK
        #expect(fadt.le(UInt32.self, at: 76) == 0x608 && fadt.le(UInt32.self, at: 80) == 0)   // PM_TMR_BLK, no GPE0
        #expect(Array(fadt[88...93]) == [4, 2, 0, 4, 0, 0])                          // EVT, CNT, PM2, TMR, GPE lengths
        #expect(fadt[108] == 0x32)                                                    // CENTURY
        let bootArch = try #require(fadt.le(UInt16.self, at: 109))
        #expect(bootArch & 0x2 != 0 && bootArch & 0x4 != 0 && bootArch & 0x8 == 0)   // 8042, no VGA, MSI ok
        let flags = try #require(fadt.le(UInt32.self, at: 112))
        #expect(flags & (1 << 4) == 0)        // PWR_BUTTON clear: fixed-feature power button
        #expect(flags & (1 << 5) != 0)        // SLP_BUTTON set: no fixed sleep button
        #expect(flags & (1 << 8) != 0)        // TMR_VAL_EXT: 32-bit PM timer
        #expect(flags & (1 << 10) != 0)       // RESET_REG_SUP
        #expect(flags & (1 << 20) == 0)       // not hardware-reduced
        #expect(flags & 1 != 0 && flags & 4 != 0)   // WBINVD, PROC_C1
        #expect(Array(fadt[116..<128]) == [1, 8, 0, 1, 0x64, 0, 0, 0, 0, 0, 0, 0])  // RESET_REG: I/O 0x64, byte
        #expect(fadt[128] == 0xFE)
        #expect(Array(fadt[148..<160]) == [1, 32, 0, 2, 0x00, 0x06, 0, 0, 0, 0, 0, 0])   // X_PM1a_EVT_BLK
        #expect(Array(fadt[160..<172]) == [UInt8](repeating: 0, count: 12))                // X_PM1b_EVT_BLK
        #expect(Array(fadt[172..<184]) == [1, 16, 0, 2, 0x04, 0x06, 0, 0, 0, 0, 0, 0])   // X_PM1a_CNT_BLK
        #expect(Array(fadt[208..<220]) == [1, 32, 0, 3, 0x08, 0x06, 0, 0, 0, 0, 0, 0])   // X_PM_TMR_BLK
        #expect(Array(fadt[220..<244]) == [UInt8](repeating: 0, count: 24))                // no GPE blocks
    }

    @Test("MADT: one enabled local APIC per vCPU, the I/O APIC, SCI override, LINT1 NMI", arguments: [1, 2, 8, 254])
    func madt(vcpus: Int) throws {
        let madt = try Self.build(vcpus: vcpus).table("APIC")
        #expect(madt.le(UInt32.self, at: 36) == 0xFEE0_0000 && madt.le(UInt32.self, at: 40) == 1)
        var lapics: [(uid: UInt8, id: UInt8, flags: UInt32)] = []
        var ioapics: [(id: UInt8, address: UInt32, base: UInt32)] = []
        var overrides: [(bus: UInt8, source: UInt8, gsi: UInt32, flags: UInt16)] = []
        var nmis: [(uid: UInt8, flags: UInt16, lint: UInt8)] = []
        var cursor = 44
        while cursor < madt.count {
            let length = Int(madt[cursor + 1])
            try #require(length >= 2 && cursor + length <= madt.count)
            let entry = Array(madt[cursor..<(cursor + length)])
            switch entry[0] {
            case 0: lapics.append((entry[2], entry[3], entry.le(UInt32.self, at: 4) ?? 0)); #expect(length == 8)
            case 1: ioapics.append((entry[2], entry.le(UInt32.self, at: 4) ?? 0, entry.le(UInt32.self, at: 8) ?? 1)); #expect(length == 12)
            case 2: overrides.append((entry[2], entry[3], entry.le(UInt32.self, at: 4) ?? 0, entry.le(UInt16.self, at: 8) ?? 0)); #expect(length == 10)
            case 4: nmis.append((entry[2], entry.le(UInt16.self, at: 3) ?? 1, entry[5])); #expect(length == 6)
            default: Issue.record("unexpected MADT entry type \(entry[0])")
            }
            cursor += length
        }
        #expect(cursor == madt.count)
        #expect(lapics.map(\.uid) == (0..<vcpus).map { UInt8($0) })
        #expect(lapics.allSatisfy { $0.id == $0.uid && $0.flags == 1 })
        // Same I/O APIC id as the MP table: the first id after the CPUs.
        #expect(ioapics.count == 1 && ioapics.first?.id == UInt8(vcpus))
        #expect(ioapics.first?.address == 0xFEC0_0000 && ioapics.first?.base == 0)
        // Only the SCI is overridden (level, active high); IRQ 0 stays GSI 0 as in the MP table.
        #expect(overrides.count == 1)
        #expect(overrides.first.map { [$0.bus, $0.source] } == [0, 9])
        #expect(overrides.first?.gsi == 9 && overrides.first?.flags == 0x000D)
        #expect(nmis.count == 1 && nmis.first?.uid == 0xFF && nmis.first?.lint == 1 && nmis.first?.flags == 0)
    }

    @Test("MCFG: one allocation, segment 0, buses 0-0 at the ECAM base")
    func mcfg() throws {
        let mcfg = try Self.build().table("MCFG")
        #expect(mcfg.count == 60)
        #expect(mcfg.le(UInt64.self, at: 44) == 0xE000_0000)
        #expect(mcfg.le(UInt16.self, at: 52) == 0 && mcfg[54] == 0 && mcfg[55] == 0)
        let wider = ACPITestReader(try ACPITables.build(ACPIPlatform(vcpuCount: 1, pciBusCount: 4,
                                                                     pciMMIO32: 0xC000_0000..<0xD000_0000)))
        #expect(try wider.table("MCFG")[55] == 3)
    }

    @Test("DSDT: \\_S5 is (5, 5, 0, 0), host bridge ids, legacy PNP devices, one ACPI0007 device per vCPU")
    func dsdtContents() throws {
        let dsdt = try Self.build(vcpus: 3).table("DSDT")
        #expect(dsdt[8] == 2)   // 64-bit integers
        let aml = Array(dsdt[36...])
        #expect(try AMLTestDecoder.namedValue("_S5_", in: aml)
            == .package([.integer(5), .integer(5), .integer(0), .integer(0)]))
        for id in ["PNP0A08", "PNP0A03", "PNP0501", "PNP0303", "PNP0F13", "PNP0B00", "PNP0C02"] {
            let encoded = try AML.eisaID(id)
            let declared = aml.contains([0x08] + Array("_HID".utf8) + encoded) || aml.contains([0x08] + Array("_CID".utf8) + encoded)
            #expect(declared, "\(id)")
        }
        for name in ["PCI0", "COM1", "PS2K", "PS2M", "RTC_", "FWCF", "MRES", "C000", "C001", "C002"] {
            #expect(aml.contains([0x5B, 0x82]) && aml.contains(Array(name.utf8)), "\(name)")
        }
        #expect(!aml.contains(Array("C003".utf8)))
        let processorID = try AML.string("ACPI0007"), fwCfgID = try AML.string("QEMU0002")
        #expect(aml.contains(processorID) && aml.contains(fwCfgID))
    }

    @Test("_PRT routes every slot and pin to GSI 16 + (slot + pin) % 8, the same formula the VMM uses")
    func interruptRouting() throws {
        let aml = Array(try Self.build().table("DSDT")[36...])
        guard case .package(let entries) = try AMLTestDecoder.namedValue("_PRT", in: aml) else {
            Issue.record("_PRT is not a package"); return
        }
        #expect(entries.count == 128)
        var seen: Set<[UInt64]> = []
        for entry in entries {
            guard case .package(let fields) = entry, fields.count == 4,
                  case .integer(let address) = fields[0], case .integer(let pin) = fields[1],
                  case .integer(let source) = fields[2], case .integer(let gsi) = fields[3] else {
                Issue.record("malformed _PRT entry \(entry)"); continue
            }
            let slot = address >> 16
            #expect(address & 0xFFFF == 0xFFFF && slot < 32 && pin < 4 && source == 0)
            #expect(gsi == 16 + (slot + pin) % 8)
            #expect(gsi == UInt64(ACPIPlatform.pciInterruptGSI(slot: UInt8(slot), pin: UInt8(pin))))
            seen.insert([slot, pin])
        }
        #expect(seen.count == 128)
        #expect(ACPIPlatform.pciInterruptGSI(slot: 0, pin: 0) == 16)
        #expect(ACPIPlatform.pciInterruptGSI(slot: 3, pin: 2) == 21)
        #expect(ACPIPlatform.pciInterruptGSI(slot: 31, pin: 3) == 18)
    }

    @Test("an optional 64-bit window adds a QWordMemory to the host bridge's _CRS")
    func window64() throws {
        let without = Array(try Self.build().table("DSDT")[36...])
        let with = Array(try Self.build(mmio64: 0x10_0000_0000..<0x20_0000_0000).table("DSDT")[36...])
        let qword = try AMLResource.qwordMemory(0x10_0000_0000...0x1F_FFFF_FFFF, cacheable: true)
        #expect(with.contains(qword) && !without.contains(qword))
        #expect(with.contains(try AMLResource.dwordMemory(0xC000_0000...0xDFFF_FFFF, cacheable: false)))
        #expect(with.contains(try AMLResource.io(minimum: 0xCF8, maximum: 0xCF8, length: 8)))
        #expect(with.contains(try AMLResource.wordIO(0x1000...0xFFFF)))
        #expect(with.contains(try AMLResource.memory32Fixed(base: 0xE000_0000, length: 0x10_0000)))
    }

    @Test("platform descriptions the tables cannot express are refused with one-line errors", arguments: [
        ACPIPlatform(vcpuCount: 0),
        ACPIPlatform(vcpuCount: 255),
        ACPIPlatform(vcpuCount: 1, pciECAMBase: 0xE008_0000),
        ACPIPlatform(vcpuCount: 1, pciBusCount: 0),
        ACPIPlatform(vcpuCount: 1, pciBusCount: 257),
        ACPIPlatform(vcpuCount: 1, pciECAMBase: 0xFFFF_FFFF_FFF0_0000, pciBusCount: 2),
        ACPIPlatform(vcpuCount: 1, pciMMIO32: 0xC000_0000..<0xE010_0000),
        ACPIPlatform(vcpuCount: 1, pciMMIO32: 0xC000_0000..<0xC000_0000),
        ACPIPlatform(vcpuCount: 1, pciMMIO32: 0xF000_0000..<0x1_0000_1000),
        ACPIPlatform(vcpuCount: 1, pciMMIO64: 0x8000_0000..<0x1_8000_0000),
        ACPIPlatform(vcpuCount: 1, pciMMIO64: 0x2_0000_0000..<0x2_0000_0000),
        ACPIPlatform(vcpuCount: 1, pciIO: 0x0400...0xFFFF),
        ACPIPlatform(vcpuCount: 1, pciIO: 0x0C00...0x0CFF),
        ACPIPlatform(vcpuCount: 1, lapicAddress: 0x1_0000_0000),
        ACPIPlatform(vcpuCount: 1, ioapicAddress: 0xC800_0000),
    ])
    func invalidPlatforms(platform: ACPIPlatform) {
        #expect(throws: BootError.self) { try ACPITables.build(platform) }
    }

    @Test("a misaligned RSDP address is refused")
    func misalignedBase() {
        #expect(throws: BootError.acpi("RSDP address 0xe0008 is not 16-byte aligned")) {
            try ACPITables.build(ACPIPlatform(vcpuCount: 1), at: 0xE0008)
        }
    }
}
