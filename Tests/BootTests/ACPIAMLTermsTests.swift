import Testing
@testable import Boot

/// Terms and resource descriptors against encodings derived from ACPI 6.5 sections 6.4 and 20.2.
@Suite("AML terms and resource descriptors")
struct ACPIAMLTermsTests {
    @Test("Name(_S5, Package(){5, 5, 0, 0})")
    func sleepPackage() throws {
        let package = try AML.package([AML.integer(5), AML.integer(5), AML.integer(0), AML.integer(0)])
        #expect(try AML.name("_S5", package)
            == [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00])
    }

    @Test("Scope, Device and Name nest with their PkgLengths")
    func scopeAndDevice() throws {
        #expect(try AML.scope("\\_SB", []) == [0x10, 0x06, 0x5C] + Array("_SB_".utf8))
        let device = try AML.device("PCI0", [try AML.name("_UID", AML.integer(0))])
        #expect(device == [0x5B, 0x82, 0x0B] + Array("PCI0".utf8) + [0x08] + Array("_UID".utf8) + [0x00])
        let scope = try AML.scope("\\_SB", [device])
        #expect(scope == [0x10, UInt8(1 + 5 + device.count), 0x5C] + Array("_SB_".utf8) + device)
    }

    @Test("a device whose body passes 63 bytes switches to a two-byte PkgLength")
    func twoBytePkgLength() throws {
        let names = try (0..<10).map { index throws(AMLError) in try AML.name("N00\(index)", AML.integer(0x1234)) }
        let device = try AML.device("BIG0", names)
        let body = 4 + names.count * 8   // name + ten 8-byte Name objects = 84 bytes, + 2 PkgLength bytes
        #expect(device.count == 2 + 2 + body)
        #expect(Array(device[0..<4]) == [0x5B, 0x82, 0x40 | UInt8((body + 2) & 0xF), UInt8((body + 2) >> 4)])
    }

    @Test("Method flags: argument count, serialized bit, sync level; Return")
    func methods() throws {
        let sta = try AML.method("_STA", [AML.returnValue(AML.integer(0x0F))])
        #expect(sta == [0x14, 0x09] + Array("_STA".utf8) + [0x00, 0xA4, 0x0A, 0x0F])
        let serialized = try AML.method("_OSC", argumentCount: 4, serialized: true, [])
        #expect(serialized == [0x14, 0x06] + Array("_OSC".utf8) + [0x0C])
        let synced = try AML.method("M000", argumentCount: 1, serialized: true, syncLevel: 15, [])
        #expect(synced.last == 0xF9)
        #expect(throws: AMLError.invalidMethodFlags(argumentCount: 8, syncLevel: 0)) {
            try AML.method("M000", argumentCount: 8, [])
        }
        #expect(throws: AMLError.invalidMethodFlags(argumentCount: 0, syncLevel: 16)) {
            try AML.method("M000", syncLevel: 16, [])
        }
        #expect(throws: AMLError.invalidName("_ST!")) { try AML.method("_ST!", []) }
    }

    @Test("Buffer and Package sizes; packages over 255 elements are refused")
    func buffersAndPackages() throws {
        #expect(try AML.buffer([1, 2, 3]) == [0x11, 0x06, 0x0A, 0x03, 1, 2, 3])
        #expect(try AML.buffer([]) == [0x11, 0x02, 0x00])
        #expect(try AML.package([]) == [0x12, 0x02, 0x00])
        let big = [[UInt8]](repeating: AML.integer(0), count: 255)
        #expect(try AML.package(big).count == 1 + 2 + 1 + 255)
        #expect(throws: AMLError.tooManyPackageElements(256)) { try AML.package(big + [AML.integer(0)]) }
    }

    @Test("small descriptors: IO, IRQNoFlags, End Tag")
    func smallDescriptors() throws {
        #expect(try AMLResource.io(minimum: 0x3F8, maximum: 0x3F8, alignment: 8, length: 8)
            == [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x08, 0x08])
        #expect(try AMLResource.irqNoFlags([4]) == [0x22, 0x10, 0x00])
        #expect(try AMLResource.irqNoFlags([1, 12]) == [0x22, 0x02, 0x10])
        #expect(try AMLResource.template([]) == [0x11, 0x05, 0x0A, 0x02, 0x79, 0x00])
        #expect(throws: AMLError.self) { try AMLResource.irqNoFlags([16]) }
        #expect(throws: AMLError.self) { try AMLResource.io(minimum: 0x71, maximum: 0x70, length: 2) }
        #expect(throws: AMLError.self) { try AMLResource.io(minimum: 0x70, maximum: 0x70, length: 0) }
    }

    @Test("Interrupt(ResourceConsumer, ...) flag bits")
    func extendedInterrupt() throws {
        #expect(try AMLResource.interrupt([9], trigger: .level, polarity: .activeHigh)
            == [0x89, 0x06, 0x00, 0x01, 0x01, 0x09, 0x00, 0x00, 0x00])
        #expect(try AMLResource.interrupt([16, 0x1_0000], trigger: .edge, polarity: .activeLow, shared: true)
            == [0x89, 0x0A, 0x00, 0x0F, 0x02, 0x10, 0, 0, 0, 0x00, 0x00, 0x01, 0x00])
        #expect(throws: AMLError.self) { try AMLResource.interrupt([], trigger: .level, polarity: .activeHigh) }
    }

    @Test("address space descriptors: bus numbers, I/O, 32- and 64-bit memory")
    func addressSpaces() throws {
        #expect(try AMLResource.wordBusNumber(0...0xFF)
            == [0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0, 0, 0xFF, 0, 0, 0, 0x00, 0x01])
        #expect(try AMLResource.wordIO(0x1000...0xFFFF)
            == [0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0x00, 0x10, 0xFF, 0xFF, 0, 0, 0x00, 0xF0])
        #expect(try AMLResource.dwordMemory(0xC000_0000...0xDFFF_FFFF, cacheable: false)
            == [0x87, 0x17, 0x00, 0x00, 0x0C, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF, 0xFF, 0xDF,
                0, 0, 0, 0, 0, 0, 0, 0x20])
        let qword = try AMLResource.qwordMemory(0x1_0000_0000...0x1_FFFF_FFFF, cacheable: true)
        #expect(qword.count == 46 && Array(qword[0..<6]) == [0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x03])
        #expect(qword[38..<46] == [0, 0, 0, 0, 1, 0, 0, 0])   // _LEN = 4 GiB
        #expect(try AMLResource.memory32Fixed(base: 0xE000_0000, length: 0x10_0000)
            == [0x86, 0x09, 0x00, 0x01, 0, 0, 0, 0xE0, 0, 0, 0x10, 0])
        #expect(throws: AMLError.self) { try AMLResource.qwordMemory(0...UInt64.max, cacheable: false) }
        #expect(throws: AMLError.self) { try AMLResource.memory32Fixed(base: 0xFFFF_F000, length: 0x2000) }
    }
}
