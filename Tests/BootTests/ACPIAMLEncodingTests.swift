import Testing
@testable import Boot

/// Expected bytes are worked out by hand from the ACPI 6.5 AML grammar (section 20.2).
@Suite("AML primitive encodings: names, integers, strings, PkgLength, EISA ids")
struct ACPIAMLEncodingTests {
    @Test("name segments are padded to four characters with '_'")
    func nameSegments() throws {
        #expect(try AML.nameSegment("_SB") == [0x5F, 0x53, 0x42, 0x5F])
        #expect(try AML.nameSegment("PCI0") == Array("PCI0".utf8))
        #expect(try AML.nameSegment("A") == Array("A___".utf8))
        #expect(try AML.nameSegment("_S5") == Array("_S5_".utf8))
    }

    @Test("invalid name segments are refused with a typed error", arguments: ["", "ABCDE", "1ABC", "pci0", "A-B", "AB C", "É"])
    func invalidSegments(segment: String) {
        #expect(throws: AMLError.invalidNameSegment(segment)) { try AML.nameSegment(segment) }
    }

    @Test("name strings: root and parent prefixes, dual and multi-segment paths")
    func nameStrings() throws {
        #expect(try AML.nameString("PCI0") == Array("PCI0".utf8))
        #expect(try AML.nameString("\\_SB") == [0x5C] + Array("_SB_".utf8))
        #expect(try AML.nameString("\\_SB.PCI0") == [0x5C, 0x2E] + Array("_SB_PCI0".utf8))
        #expect(try AML.nameString("^^FOO") == [0x5E, 0x5E] + Array("FOO_".utf8))
        #expect(try AML.nameString("^PCI0.S08") == [0x5E, 0x2E] + Array("PCI0S08_".utf8))
        #expect(try AML.nameString("\\_SB.PCI0.S08") == [0x5C, 0x2F, 3] + Array("_SB_PCI0S08_".utf8))
        #expect(try AML.nameString("A.B.C.D") == [0x2F, 4] + Array("A___B___C___D___".utf8))
        #expect(try AML.nameString("\\") == [0x5C, 0x00])   // the root itself: RootChar NullName
    }

    @Test("malformed name strings are refused", arguments: ["", "^", "\\^A", "^\\A", "_SB..PCI0", "_SB.", ".PCI0", "\\\\A", "_SB.TOOLONG", "_SB/PCI0"])
    func invalidNames(name: String) {
        #expect(throws: AMLError.invalidName(name)) { try AML.nameString(name) }
    }

    @Test("integers take the smallest encoding: Zero, One, Ones, Byte, Word, DWord, QWord")
    func integers() {
        #expect(AML.integer(0) == [0x00])
        #expect(AML.integer(1) == [0x01])
        #expect(AML.integer(2) == [0x0A, 0x02])
        #expect(AML.integer(0xFF) == [0x0A, 0xFF])
        #expect(AML.integer(0x100) == [0x0B, 0x00, 0x01])
        #expect(AML.integer(0xFFFF) == [0x0B, 0xFF, 0xFF])
        #expect(AML.integer(0x1_0000) == [0x0C, 0x00, 0x00, 0x01, 0x00])
        #expect(AML.integer(0xFFFF_FFFF) == [0x0C, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(AML.integer(0x1_0000_0000) == [0x0E, 0, 0, 0, 0, 1, 0, 0, 0])
        #expect(AML.integer(0x0123_4567_89AB_CDEF) == [0x0E, 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01])
        #expect(AML.integer(UInt64.max - 1) == [0x0E, 0xFE] + [UInt8](repeating: 0xFF, count: 7))
        #expect(AML.integer(UInt64.max) == [0xFF])
    }

    @Test("PkgLength counts its own bytes and grows at 63, 4095 and 2^20-1", arguments: [
        (0, [0x01]),
        (62, [0x3F]),                                  // 62 + 1 = 63: the last one-byte value
        (63, [0x41, 0x04]),                            // 63 + 2 = 65 = 0x041
        (4093, [0x4F, 0xFF]),                          // 4093 + 2 = 4095: the last two-byte value
        (4094, [0x81, 0x00, 0x01]),                    // 4094 + 3 = 4097 = 0x1001
        ((1 << 20) - 4, [0x8F, 0xFF, 0xFF]),           // total 2^20 - 1: the last three-byte value
        ((1 << 20) - 3, [0xC1, 0x00, 0x00, 0x01]),     // total 2^20 + 1
        ((1 << 28) - 5, [0xCF, 0xFF, 0xFF, 0xFF]),     // total 2^28 - 1: the largest PkgLength
    ] as [(Int, [UInt8])])
    func pkgLengths(body: Int, expected: [UInt8]) throws {
        #expect(try AML.pkgLength(bodyLength: body) == expected)
        // Bits 4-5 of a multi-byte lead byte are reserved zero.
        if expected.count > 1 { #expect(expected[0] & 0x30 == 0) }
    }

    @Test("objects beyond 2^28-1 bytes are refused")
    func pkgLengthLimit() {
        #expect(throws: AMLError.objectTooLarge(bytes: (1 << 28) - 4)) { try AML.pkgLength(bodyLength: (1 << 28) - 4) }
        #expect(throws: AMLError.objectTooLarge(bytes: -1)) { try AML.pkgLength(bodyLength: -1) }
    }

    @Test("strings are ASCII with a NUL terminator; NUL or non-ASCII inside is refused")
    func strings() throws {
        #expect(try AML.string("ACPI0007") == [0x0D] + Array("ACPI0007".utf8) + [0])
        #expect(try AML.string("") == [0x0D, 0x00])
        #expect(throws: AMLError.invalidString("a\u{0}b")) { try AML.string("a\u{0}b") }
        #expect(throws: AMLError.invalidString("é")) { try AML.string("é") }
    }

    @Test("EISA ids compress to the values firmware uses", arguments: [
        ("PNP0A03", 0x030A_D041), ("PNP0A08", 0x080A_D041), ("PNP0501", 0x0105_D041), ("PNP0303", 0x0303_D041),
        ("PNP0F13", 0x130F_D041), ("PNP0B00", 0x000B_D041), ("PNP0C02", 0x020C_D041), ("PNP0C0C", 0x0C0C_D041),
    ] as [(String, UInt32)])
    func eisaIDs(id: String, value: UInt32) throws {
        #expect(try AML.eisaIDValue(id) == value)
        #expect(try AML.eisaID(id) == AML.integer(UInt64(value)))
    }

    @Test("malformed EISA ids are refused", arguments: ["PNP0A0", "PNP0A033", "pnp0a03", "PNP0G03", "PN10A03", "PNP+A03", ""])
    func invalidEISAIDs(id: String) {
        #expect(throws: AMLError.invalidEISAID(id)) { try AML.eisaIDValue(id) }
    }
}
