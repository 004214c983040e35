import KVM
import Testing
@testable import VMM

/// The VMM's `iret` for protected mode without paging (the emulating host's fixup), checked
/// against a GDT and stack laid out in a fake guest memory.
@Suite struct ProtectedModeIretTests {
    /// 64 KiB of "guest RAM": a GDT at 0x1000 (flat 32-bit code 0x08, flat data 0x10, 16-bit
    /// code 0x18 with base 0x20000 and a 64 KiB limit, a data segment 0x20), the stack at 0x7000.
    struct Memory {
        var bytes = [UInt8](repeating: 0, count: 0x1_0000)
        init() {
            put(0x1008, [0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9B, 0xCF, 0x00])  // code, base 0, 4 GiB, 32-bit
            put(0x1010, [0xFF, 0xFF, 0x00, 0x00, 0x00, 0x93, 0xCF, 0x00])  // data
            put(0x1018, [0xFF, 0xFF, 0x00, 0x00, 0x02, 0x9B, 0x00, 0x00])  // code, base 0x20000, 64 KiB, 16-bit
            put(0x1020, [0xFF, 0xFF, 0x00, 0x00, 0x00, 0x93, 0xCF, 0x00])  // data (not code)
        }
        mutating func put(_ address: Int, _ values: [UInt8]) { bytes.replaceSubrange(address..<address + values.count, with: values) }
        mutating func push32(_ address: Int, _ words: [UInt32]) {
            for (i, w) in words.enumerated() { put(address + 4 * i, (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * $0)) }) }
        }
        func read(_ address: UInt64, _ count: Int) throws -> [UInt8] {
            guard address + UInt64(count) <= UInt64(bytes.count) else { throw IretError.unsupported("outside") }
            return Array(bytes[Int(address)..<Int(address) + count])
        }
    }

    static func protectedMode() -> (Registers, SpecialRegisters) {
        var registers = Registers()
        registers.rip = 0x8FFC; registers.rsp = 0x7000; registers.rflags = 0x2
        var special = SpecialRegisters()
        special.cr0 = 0x11
        special.gdt = DescriptorTable(base: 0x1000, limit: 0x27)
        special.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, present: true, dpl: 0, db: true, s: true, g: true)
        special.ss = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, present: true, dpl: 0, db: true, s: true, g: true)
        return (registers, special)
    }

    @Test func thirtyTwoBitReturnPopsEIPCSAndEFLAGS() throws {
        var memory = Memory()
        memory.push32(0x7000, [0x0001_2345, 0x08, 0x0000_0246])  // EIP, CS, EFLAGS (IF, ZF, PF)
        let (registers, special) = Self.protectedMode()
        let outcome = try ProtectedModeIret.emulate(operandSizePrefix: false, registers: registers, special: special, read: memory.read)
        #expect(outcome.registers.rip == 0x1_2345)
        #expect(outcome.registers.rsp == 0x700C)
        #expect(outcome.registers.rflags == 0x246)
        #expect(outcome.special.cs.selector == 0x08)
        #expect(outcome.special.cs.limit == 0xFFFF_FFFF && outcome.special.cs.db && outcome.special.cs.g)
        #expect(outcome.special.cs.type == 0xB)
        #expect(outcome.special.ss == special.ss)
    }

    @Test func switchesToASixteenBitCodeSegmentWithItsBase() throws {
        var memory = Memory()
        memory.push32(0x7000, [0x0000_0100, 0x18, 0x0000_0002])
        let (registers, special) = Self.protectedMode()
        let outcome = try ProtectedModeIret.emulate(operandSizePrefix: false, registers: registers, special: special, read: memory.read)
        #expect(outcome.registers.rip == 0x100)
        #expect(outcome.special.cs.base == 0x20000 && outcome.special.cs.limit == 0xFFFF && !outcome.special.cs.db)
    }

    @Test func operandSizePrefixInA32BitSegmentPopsWords() throws {
        var memory = Memory()
        memory.put(0x7000, [0x34, 0x12, 0x08, 0x00, 0x02, 0x02])  // IP 0x1234, CS 0x08, FLAGS 0x0202
        var (registers, special) = Self.protectedMode()
        registers.rflags = 0x0004_0002  // AC set: a 16-bit iret leaves the upper half alone
        let outcome = try ProtectedModeIret.emulate(operandSizePrefix: true, registers: registers, special: special, read: memory.read)
        #expect(outcome.registers.rip == 0x1234)
        #expect(outcome.registers.rsp == 0x7006)
        #expect(outcome.registers.rflags == 0x0004_0202)
        special.cs.db = false
        _ = special
    }

    @Test(arguments: [
        ("paging", 0), ("long mode", 1), ("real mode", 2), ("outer level", 3), ("data selector", 4), ("beyond GDT", 5),
        ("LDT selector", 6), ("NT set", 7), ("stack outside RAM", 8),
    ])
    func whatItDoesNotCoverIsAnError(name: String, index: Int) {
        var memory = Memory()
        var (registers, special) = Self.protectedMode()
        var selector: UInt32 = 0x08
        switch index {
        case 0: special.cr0 |= 1 << 31
        case 1: special.efer |= 1 << 10
        case 2: special.cr0 = 0x10
        case 3: selector = 0x0B
        case 4: selector = 0x20
        case 5: selector = 0x30
        case 6: selector = 0x0C
        case 7: registers.rflags |= 1 << 14
        default: registers.rsp = 0xFFF0_0000
        }
        memory.push32(0x7000, [0x1000, selector, 0x2])
        #expect(throws: IretError.self, "\(name)") {
            try ProtectedModeIret.emulate(operandSizePrefix: false, registers: registers, special: special, read: memory.read)
        }
    }
}
