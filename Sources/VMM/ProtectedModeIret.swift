import KVM

/// `iret` in 16/32-bit protected mode without paging, returning to the same privilege level: the
/// host-profile fixup for KVMs whose instruction emulator implements `iret` only in real mode
/// (Linux's KVM emulator does; on a host that emulates all guest kernel code, boot loaders such as
/// SYSLINUX, which return from their interrupt handlers in protected mode, stop there). Real
/// hardware never needs it. Everything else (paging, long mode, a return to another privilege
/// level or to virtual-8086 mode, a task return) stays an error with a reason.
enum ProtectedModeIret {
    struct Outcome: Equatable {
        var registers: Registers
        var special: SpecialRegisters
    }

    /// EFLAGS bits `iret` may change at CPL 0 (CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID).
    static let writableFlags: UInt64 = 0x0025_7FD5
    static let flagNT: UInt64 = 1 << 14
    static let flagVM: UInt64 = 1 << 17

    /// Emulates the `iret` (optionally after an operand-size prefix) at the current RIP.
    /// `read(address, count)` reads guest-physical memory (paging is off, so linear = physical).
    static func emulate(operandSizePrefix: Bool, registers: Registers, special: SpecialRegisters,
                        read: (UInt64, Int) throws -> [UInt8]) throws(IretError) -> Outcome {
        guard special.cr0 & 1 == 1 else { throw .unsupported("real mode (the emulator handles that itself)") }
        guard special.cr0 & (1 << 31) == 0 else { throw .unsupported("paging is on") }
        guard special.efer & (1 << 10) == 0 else { throw .unsupported("long mode") }
        guard registers.rflags & flagVM == 0 else { throw .unsupported("virtual-8086 mode") }
        guard registers.rflags & flagNT == 0 else { throw .unsupported("a nested-task return (NT set)") }
        let width = special.cs.db != operandSizePrefix ? 4 : 2
        let stackMask: UInt64 = special.ss.db ? 0xFFFF_FFFF : 0xFFFF
        let sp = registers.rsp & stackMask

        func pop(_ index: Int) throws(IretError) -> UInt64 {
            let address = special.ss.base &+ ((sp &+ UInt64(index * width)) & stackMask)
            let bytes: [UInt8]
            do { bytes = try read(address & 0xFFFF_FFFF, width) } catch {
                throw .unsupported("the stack at 0x\(String(address, radix: 16)) is not guest RAM")
            }
            return bytes.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        let ip = try pop(0), selector = UInt16(truncatingIfNeeded: try pop(1)), flags = try pop(2)
        let cpl = special.cs.dpl
        guard UInt8(selector & 3) == cpl else {
            throw .unsupported("a return to privilege level \(selector & 3) from \(cpl)")
        }
        if flags & flagVM != 0 && width == 4 { throw .unsupported("a return to virtual-8086 mode") }
        var cs = try descriptor(selector, gdt: special.gdt, read: read)
        guard cs.s, cs.type & 0x8 != 0, cs.present else {
            throw .unsupported("selector 0x\(String(selector, radix: 16)) is not a present code segment")
        }
        guard ip <= UInt64(cs.limit) else { throw .unsupported("return address 0x\(String(ip, radix: 16)) beyond the code segment's limit") }
        cs.type |= 1  // accessed, as the CPU marks it

        var next = registers
        next.rip = ip
        var mask = writableFlags
        if cpl > 0 { mask &= ~(3 << 12) }                               // IOPL only at CPL 0
        if UInt64(cpl) > (registers.rflags >> 12) & 3 { mask &= ~(1 << 9) }  // IF only when CPL <= IOPL
        if width == 2 { mask &= 0xFFFF }
        next.rflags = (registers.rflags & ~mask) | (flags & mask) | 2
        next.rsp = (registers.rsp & ~stackMask) | ((sp &+ UInt64(3 * width)) & stackMask)
        var special = special
        special.cs = cs
        return Outcome(registers: next, special: special)
    }

    /// The segment a GDT selector names, as KVM takes it (limit expanded by the granularity bit).
    static func descriptor(_ selector: UInt16, gdt: DescriptorTable, read: (UInt64, Int) throws -> [UInt8]) throws(IretError) -> Segment {
        guard selector & 4 == 0 else { throw .unsupported("an LDT selector (0x\(String(selector, radix: 16)))") }
        let offset = UInt64(selector & ~7)
        guard offset != 0, offset + 7 <= UInt64(gdt.limit) else {
            throw .unsupported("selector 0x\(String(selector, radix: 16)) outside the GDT (limit 0x\(String(gdt.limit, radix: 16)))")
        }
        let d: [UInt8]
        do { d = try read((gdt.base &+ offset) & 0xFFFF_FFFF, 8) } catch { throw .unsupported("the GDT is not in guest RAM") }
        guard d.count == 8 else { throw .unsupported("short GDT read") }
        var limit = UInt32(d[0]) | UInt32(d[1]) << 8 | UInt32(d[6] & 0x0F) << 16
        let g = d[6] & 0x80 != 0
        if g { limit = limit << 12 | 0xFFF }
        let base = UInt64(d[2]) | UInt64(d[3]) << 8 | UInt64(d[4]) << 16 | UInt64(d[7]) << 24
        var segment = Segment(base: base, limit: limit, selector: selector, type: d[5] & 0x0F, present: d[5] & 0x80 != 0,
                              dpl: (d[5] >> 5) & 3, db: d[6] & 0x40 != 0, s: d[5] & 0x10 != 0, l: d[6] & 0x20 != 0, g: g)
        segment.avl = d[6] & 0x10 != 0
        return segment
    }
}

enum IretError: Error, Equatable, CustomStringConvertible {
    case unsupported(String)
    var description: String {
        switch self { case let .unsupported(why): return "iret not emulated by the VMM: \(why)" }
    }
}
