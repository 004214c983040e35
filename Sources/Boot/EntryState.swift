/// A segment register as KVM's `kvm_segment` describes it (limit in bytes, not in descriptor units).
public struct SegmentRegister: Codable, Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    public var type: UInt8
    public var present: Bool
    public var dpl: UInt8
    public var db: Bool
    public var s: Bool
    public var l: Bool
    public var g: Bool

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool, dpl: UInt8,
                db: Bool, s: Bool, l: Bool, g: Bool) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.db = db
        self.s = s
        self.l = l
        self.g = g
    }

    /// The 8-byte GDT descriptor for this segment (flat segments only need base/limit/type bits).
    var descriptor: UInt64 {
        let limitField = UInt64(g ? limit >> 12 : limit) & 0xF_FFFF
        var value = limitField & 0xFFFF
        value |= (base & 0xFF_FFFF) << 16
        value |= UInt64(type & 0xF) << 40
        value |= (s ? 1 : 0) << 44
        value |= UInt64(dpl & 3) << 45
        value |= (present ? 1 : 0) << 47
        value |= (limitField >> 16) << 48
        value |= (l ? 1 : 0) << 53
        value |= (db ? 1 : 0) << 54
        value |= (g ? 1 : 0) << 55
        value |= ((base >> 24) & 0xFF) << 56
        return value
    }
}

/// The boot vCPU's registers at kernel entry. Application processors are started by the guest
/// itself (INIT/SIPI through the LAPIC), so only the BSP needs this.
public struct X86EntryState: Codable, Equatable, Sendable {
    public var rip: UInt64, rsp: UInt64, rsi: UInt64, rax: UInt64, rbx: UInt64, rflags: UInt64
    public var cs: SegmentRegister, ds: SegmentRegister, es: SegmentRegister
    public var fs: SegmentRegister, gs: SegmentRegister, ss: SegmentRegister
    public var gdtBase: UInt64
    public var gdtLimit: UInt16
    public var idtBase: UInt64
    public var idtLimit: UInt16
    public var cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64

    public init(rip: UInt64, rsp: UInt64, rsi: UInt64, rax: UInt64, rbx: UInt64, rflags: UInt64,
                cs: SegmentRegister, ds: SegmentRegister, es: SegmentRegister,
                fs: SegmentRegister, gs: SegmentRegister, ss: SegmentRegister,
                gdtBase: UInt64, gdtLimit: UInt16, idtBase: UInt64, idtLimit: UInt16,
                cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) {
        self.rip = rip; self.rsp = rsp; self.rsi = rsi; self.rax = rax; self.rbx = rbx; self.rflags = rflags
        self.cs = cs; self.ds = ds; self.es = es; self.fs = fs; self.gs = gs; self.ss = ss
        self.gdtBase = gdtBase; self.gdtLimit = gdtLimit; self.idtBase = idtBase; self.idtLimit = idtLimit
        self.cr0 = cr0; self.cr3 = cr3; self.cr4 = cr4; self.efer = efer
    }
}

/// The boot GDT and the register values built from it.
///
/// Selectors follow Linux's boot protocol (__BOOT_CS = 0x10, __BOOT_DS = 0x18, the 64-bit entry
/// requires exactly these); 0x08 holds a flat 32-bit code segment for PVH and Multiboot entry.
enum BootGDT {
    static let code32Selector: UInt16 = 0x08
    static let code64Selector: UInt16 = 0x10
    static let dataSelector: UInt16 = 0x18

    static let code32 = flat(selector: code32Selector, type: 0xB, db: true, l: false)
    static let code64 = flat(selector: code64Selector, type: 0xB, db: false, l: true)
    static let data = flat(selector: dataSelector, type: 0x3, db: true, l: false)

    /// Execute/read (0xB) and read/write (0x3) types include the accessed bit so the CPU never writes
    /// the descriptor back.
    private static func flat(selector: UInt16, type: UInt8, db: Bool, l: Bool) -> SegmentRegister {
        SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: selector, type: type, present: true, dpl: 0,
                        db: db, s: true, l: l, g: true)
    }

    static var table: [UInt64] { [0, code32.descriptor, code64.descriptor, data.descriptor] }

    static var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: table.count * 8)
        for (index, entry) in table.enumerated() { out.put(entry, at: index * 8) }
        return out
    }
}

enum ControlRegisters {
    static let cr0PE: UInt64 = 1 << 0
    static let cr0ET: UInt64 = 1 << 4
    static let cr0PG: UInt64 = 1 << 31
    static let cr4PAE: UInt64 = 1 << 5
    static let eferLME: UInt64 = 1 << 8
    static let eferLMA: UInt64 = 1 << 10
    /// Bit 1 of RFLAGS is reserved and always set; IF stays clear as every boot protocol requires.
    static let rflagsReserved: UInt64 = 1 << 1
}

extension X86EntryState {
    /// Long mode, paging on with the identity map, flat __BOOT_CS/__BOOT_DS: Linux's 64-bit entry.
    static func longMode(entry: UInt64, zeroPage: UInt64) -> X86EntryState {
        let data = BootGDT.data
        return X86EntryState(
            rip: entry, rsp: X86Layout.bootStackPointer, rsi: zeroPage, rax: 0, rbx: 0,
            rflags: ControlRegisters.rflagsReserved,
            cs: BootGDT.code64, ds: data, es: data, fs: data, gs: data, ss: data,
            gdtBase: X86Layout.gdtAddress, gdtLimit: UInt16(BootGDT.table.count * 8 - 1),
            idtBase: X86Layout.idtAddress, idtLimit: 7,
            cr0: ControlRegisters.cr0PE | ControlRegisters.cr0ET | ControlRegisters.cr0PG,
            cr3: X86Layout.pml4Address, cr4: ControlRegisters.cr4PAE,
            efer: ControlRegisters.eferLME | ControlRegisters.eferLMA)
    }

    /// 32-bit protected mode, paging off, flat segments: PVH and Multiboot entry.
    static func protectedMode(entry: UInt64, eax: UInt64, ebx: UInt64) -> X86EntryState {
        let data = BootGDT.data
        return X86EntryState(
            rip: entry, rsp: X86Layout.bootStackPointer, rsi: 0, rax: eax, rbx: ebx,
            rflags: ControlRegisters.rflagsReserved,
            cs: BootGDT.code32, ds: data, es: data, fs: data, gs: data, ss: data,
            gdtBase: X86Layout.gdtAddress, gdtLimit: UInt16(BootGDT.table.count * 8 - 1),
            idtBase: X86Layout.idtAddress, idtLimit: 7,
            cr0: ControlRegisters.cr0PE | ControlRegisters.cr0ET, cr3: 0, cr4: 0, efer: 0)
    }
}
