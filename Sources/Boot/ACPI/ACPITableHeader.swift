/// The System Description Table header every ACPI table but the RSDP and FACS starts with
/// (ACPI 6.5 section 5.2.6), and the Generic Address Structure (5.2.3.2).
enum ACPITableHeader {
    static let size = 36
    static let lengthOffset = 4
    static let checksumOffset = 9
    /// OEMID (6 bytes), OEM Table ID (8), Creator ID (4): who built the tables.
    static let oemID = Array("VIREO ".utf8)
    static let oemTableID = Array("VIREOVM ".utf8)
    static let creatorID = Array("VIRE".utf8)
    static let oemRevision: UInt32 = 1
    static let creatorRevision: UInt32 = 1

    /// `signature` header + `body`, with Length and Checksum (whole table sums to 0) filled in.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var table = [UInt8](repeating: 0, count: size)
        table.put(bytes: Array(signature.utf8.prefix(4)), at: 0)
        table[8] = revision
        table.put(bytes: oemID, at: 10)
        table.put(bytes: oemTableID, at: 16)
        table.put(oemRevision, at: 24)
        table.put(bytes: creatorID, at: 28)
        table.put(creatorRevision, at: 32)
        table += body
        table.put(UInt32(truncatingIfNeeded: table.count), at: lengthOffset)
        table[checksumOffset] = checksumByte(table)
        return table
    }

    /// Address space ids and access sizes of a Generic Address Structure.
    static let systemIO: UInt8 = 1
    static let byteAccess: UInt8 = 1, wordAccess: UInt8 = 2, dwordAccess: UInt8 = 3

    /// A 12-byte GAS: space, register bit width, bit offset 0, access size, 64-bit address.
    static func gas(space: UInt8, bitWidth: UInt8, accessSize: UInt8, address: UInt64) -> [UInt8] {
        [space, bitWidth, 0, accessSize] + AML.littleEndian(address, count: 8)
    }
}
