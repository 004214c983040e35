/// The complete ACPI table set, laid out as one contiguous image:
/// ```
/// RSDP (36 bytes, 16-aligned) -> XSDT -> FADT, MADT, MCFG     (and an RSDT with the same entries)
///                                FADT -> DSDT, FACS (64-aligned)
/// ```
/// Every table starts 8-byte aligned. Both an XSDT (revision 2 RSDP) and an RSDT are provided:
/// ACPICA prefers the XSDT, and `acpi=rsdt` or ACPI 1.0 readers still find everything.
public struct ACPITables: Sendable {
    /// Guest-physical address of the first byte of `bytes` (the RSDP).
    public let address: UInt64
    public let bytes: [UInt8]
    /// Where each table landed, by signature ("RSD PTR ", "XSDT", "RSDT", "FACP", "FACS", "APIC",
    /// "MCFG", "DSDT"), for notes and tests.
    public let tableAddresses: [String: UInt64]

    public var rsdpAddress: UInt64 { address }

    static let rsdpLength = 36
    static let rsdpRevision: UInt8 = 2
    static let tableAlignment: UInt64 = 8
    static let rsdpAlignment: UInt64 = 16

    /// Builds the tables for `platform`, to be placed at `base` (16-byte aligned; the whole image
    /// must stay below 4 GiB because the RSDT and FADT hold 32-bit addresses).
    public static func build(_ platform: ACPIPlatform, at base: UInt64) throws(BootError) -> ACPITables {
        try platform.validate()
        guard base % rsdpAlignment == 0 else { throw .acpi("RSDP address \(hex(base)) is not 16-byte aligned") }
        let image = try layOut(platform, at: base, withRSDP: true)
        return ACPITables(address: base, bytes: image.bytes, tableAddresses: image.addresses)
    }

    /// Signatures of the tables the XSDT and RSDT list, in entry order.
    static let rootEntries = ["FACP", "APIC", "MCFG"]

    /// Lays the tables out from `base` (the RSDP first when `withRSDP`, else the XSDT), every
    /// pointer holding the absolute address of its target. Firmware tables use base 0 without the
    /// RSDP, so each pointer holds its target's offset in the image.
    static func layOut(_ platform: ACPIPlatform, at base: UInt64, withRSDP: Bool)
        throws(BootError) -> (bytes: [UInt8], addresses: [String: UInt64]) {
        try platform.validate()
        let dsdt: [UInt8]
        do {
            dsdt = try DSDT.build(platform)
        } catch {
            throw .acpi("DSDT: \(error)")
        }
        let madt = MADT.build(platform)
        let mcfg = MCFG.build(platform)
        let facs = FACS.build()
        let pointed = rootEntries
        // Sizes are known before addresses, so lay out first, then fill in the pointers.
        let sizes: [(String, Int, UInt64)] = (withRSDP ? [("RSD PTR ", rsdpLength, rsdpAlignment)] : []) + [
            ("XSDT", ACPITableHeader.size + 8 * pointed.count, tableAlignment),
            ("RSDT", ACPITableHeader.size + 4 * pointed.count, tableAlignment),
            ("FACP", FADT.length, tableAlignment),
            ("FACS", FACS.length, FACS.alignment),
            ("APIC", madt.count, tableAlignment),
            ("MCFG", mcfg.count, tableAlignment),
            ("DSDT", dsdt.count, tableAlignment),
        ]
        var addresses: [String: UInt64] = [:]
        var cursor = base
        for (signature, size, alignment) in sizes {
            guard let start = alignUp(cursor, alignment), start.addingReportingOverflow(UInt64(size)).overflow == false else {
                throw .acpi("tables at \(hex(base)) wrap the address space")
            }
            addresses[signature] = start
            cursor = start + UInt64(size)
        }
        guard cursor <= UInt64(UInt32.max) + 1 else {
            throw .acpi("tables at \(hex(base))-\(hex(cursor)) must lie below 4 GiB")
        }
        let address = { (signature: String) -> UInt64 in addresses[signature] ?? 0 }
        let fadt = FADT.build(dsdt: address("DSDT"), facs: address("FACS"))
        let entries = pointed.map(address)
        let xsdt = ACPITableHeader.table("XSDT", revision: 1, body: entries.flatMap { AML.littleEndian($0, count: 8) })
        let rsdt = ACPITableHeader.table("RSDT", revision: 1, body: entries.flatMap { AML.littleEndian($0, count: 4) })
        var contents: [String: [UInt8]] = [
            "XSDT": xsdt, "RSDT": rsdt, "FACP": fadt, "FACS": facs, "APIC": madt, "MCFG": mcfg, "DSDT": dsdt,
        ]
        if withRSDP { contents["RSD PTR "] = buildRSDP(xsdt: address("XSDT"), rsdt: address("RSDT")) }
        var image = [UInt8](repeating: 0, count: Int(cursor - base))
        for (signature, _, _) in sizes {
            image.put(bytes: contents[signature] ?? [], at: Int(address(signature) - base))
        }
        return (image, addresses)
    }

    /// Field offsets in the RSDP.
    enum RSDPOffset {
        static let checksum = 8, rsdt = 16, xsdt = 24, extendedChecksum = 32
        /// The first checksum covers the ACPI 1.0 part, bytes 0..<20.
        static let checksummedLength = 20
    }

    /// RSDP (5.2.5.3), revision 2: the first 20 bytes have their own checksum, all 36 the extended one.
    static func buildRSDP(xsdt: UInt64, rsdt: UInt64) -> [UInt8] {
        var rsdp = [UInt8](repeating: 0, count: rsdpLength)
        rsdp.put(bytes: Array("RSD PTR ".utf8), at: 0)
        rsdp.put(bytes: ACPITableHeader.oemID, at: 9)
        rsdp[15] = rsdpRevision
        rsdp.put(UInt32(truncatingIfNeeded: rsdt), at: RSDPOffset.rsdt)
        rsdp.put(UInt32(rsdpLength), at: 20)
        rsdp.put(xsdt, at: RSDPOffset.xsdt)
        rsdp[RSDPOffset.checksum] = checksumByte(rsdp[0..<RSDPOffset.checksummedLength])
        rsdp[RSDPOffset.extendedChecksum] = checksumByte(rsdp)
        return rsdp
    }

    /// Builds the tables for Vireo's fixed ACPI area (`X86Layout.acpiRSDPAddress`), refusing an
    /// image that would run into the MP floating pointer copy at `X86Layout.acpiAreaEnd`.
    public static func build(_ platform: ACPIPlatform) throws(BootError) -> ACPITables {
        let tables = try build(platform, at: X86Layout.acpiRSDPAddress)
        let room = X86Layout.acpiAreaEnd - X86Layout.acpiRSDPAddress
        guard UInt64(tables.bytes.count) <= room else {
            throw .acpi("\(tables.bytes.count) bytes of tables exceed the \(room)-byte area at \(hex(X86Layout.acpiRSDPAddress))")
        }
        return tables
    }

    func write(with writer: GuestWriter) throws(BootError) {
        try writer.write(bytes, at: address, "ACPI tables")
    }
}
