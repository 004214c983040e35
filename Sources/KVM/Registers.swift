import CKVM

/// General-purpose registers as a plain value (snapshots, tests).
public struct Registers: Codable, Equatable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    public var rip: UInt64 = 0, rflags: UInt64 = 2

    public init() {}

    init(_ r: kvm_regs) {
        rax = r.rax; rbx = r.rbx; rcx = r.rcx; rdx = r.rdx; rsi = r.rsi; rdi = r.rdi; rsp = r.rsp; rbp = r.rbp
        r8 = r.r8; r9 = r.r9; r10 = r.r10; r11 = r.r11; r12 = r.r12; r13 = r.r13; r14 = r.r14; r15 = r.r15
        rip = r.rip; rflags = r.rflags
    }

    var kvm: kvm_regs {
        var r = kvm_regs()
        r.rax = rax; r.rbx = rbx; r.rcx = rcx; r.rdx = rdx; r.rsi = rsi; r.rdi = rdi; r.rsp = rsp; r.rbp = rbp
        r.r8 = r8; r.r9 = r9; r.r10 = r10; r.r11 = r11; r.r12 = r12; r.r13 = r13; r.r14 = r14; r.r15 = r15
        r.rip = rip; r.rflags = rflags
        return r
    }
}

/// A segment register in KVM's unpacked form.
public struct Segment: Codable, Equatable, Sendable {
    public var base: UInt64 = 0, limit: UInt32 = 0, selector: UInt16 = 0
    public var type: UInt8 = 0, present: Bool = false, dpl: UInt8 = 0
    public var db: Bool = false, s: Bool = false, l: Bool = false, g: Bool = false, avl: Bool = false
    public var unusable: Bool = false

    public init(base: UInt64 = 0, limit: UInt32 = 0, selector: UInt16 = 0, type: UInt8 = 0, present: Bool = false,
                dpl: UInt8 = 0, db: Bool = false, s: Bool = false, l: Bool = false, g: Bool = false) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type; self.present = present
        self.dpl = dpl; self.db = db; self.s = s; self.l = l; self.g = g
    }

    init(_ k: kvm_segment) {
        base = k.base; limit = k.limit; selector = k.selector; type = k.type; present = k.present != 0; dpl = k.dpl
        db = k.db != 0; s = k.s != 0; l = k.l != 0; g = k.g != 0; avl = k.avl != 0; unusable = k.unusable != 0
    }

    var kvm: kvm_segment {
        var k = kvm_segment()
        k.base = base; k.limit = limit; k.selector = selector; k.type = type; k.present = present ? 1 : 0; k.dpl = dpl
        k.db = db ? 1 : 0; k.s = s ? 1 : 0; k.l = l ? 1 : 0; k.g = g ? 1 : 0; k.avl = avl ? 1 : 0; k.unusable = unusable ? 1 : 0
        return k
    }
}

public struct DescriptorTable: Codable, Equatable, Sendable {
    public var base: UInt64 = 0, limit: UInt16 = 0
    public init(base: UInt64 = 0, limit: UInt16 = 0) { self.base = base; self.limit = limit }
}

/// Segment, control and descriptor-table registers.
public struct SpecialRegisters: Codable, Equatable, Sendable {
    public var cs = Segment(), ds = Segment(), es = Segment(), fs = Segment(), gs = Segment(), ss = Segment()
    public var tr = Segment(), ldt = Segment()
    public var gdt = DescriptorTable(), idt = DescriptorTable()
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    public var efer: UInt64 = 0, apicBase: UInt64 = 0
    public var interruptBitmap: [UInt64] = [0, 0, 0, 0]

    public init() {}

    init(_ s: kvm_sregs) {
        cs = Segment(s.cs); ds = Segment(s.ds); es = Segment(s.es); fs = Segment(s.fs); gs = Segment(s.gs); ss = Segment(s.ss)
        tr = Segment(s.tr); ldt = Segment(s.ldt)
        gdt = DescriptorTable(base: s.gdt.base, limit: s.gdt.limit)
        idt = DescriptorTable(base: s.idt.base, limit: s.idt.limit)
        cr0 = s.cr0; cr2 = s.cr2; cr3 = s.cr3; cr4 = s.cr4; cr8 = s.cr8; efer = s.efer; apicBase = s.apic_base
        interruptBitmap = [s.interrupt_bitmap.0, s.interrupt_bitmap.1, s.interrupt_bitmap.2, s.interrupt_bitmap.3]
    }

    var kvm: kvm_sregs {
        var s = kvm_sregs()
        s.cs = cs.kvm; s.ds = ds.kvm; s.es = es.kvm; s.fs = fs.kvm; s.gs = gs.kvm; s.ss = ss.kvm
        s.tr = tr.kvm; s.ldt = ldt.kvm
        s.gdt.base = gdt.base; s.gdt.limit = gdt.limit
        s.idt.base = idt.base; s.idt.limit = idt.limit
        s.cr0 = cr0; s.cr2 = cr2; s.cr3 = cr3; s.cr4 = cr4; s.cr8 = cr8; s.efer = efer; s.apic_base = apicBase
        let bitmap = interruptBitmap.count == 4 ? interruptBitmap : [0, 0, 0, 0]
        s.interrupt_bitmap = (bitmap[0], bitmap[1], bitmap[2], bitmap[3])
        return s
    }
}
