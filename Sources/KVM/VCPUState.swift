import CKVM
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A vCPU's architectural state as plain values, for pause/snapshot/migration. KVM structures
/// whose layout this module does not interpret are carried as byte blobs and size-checked on restore.
public struct VCPUState: Codable, Equatable, Sendable {
    public var id: Int
    public var registers: Registers
    public var specialRegisters: SpecialRegisters
    public var mpState: UInt32
    public var lapic: [UInt8]
    public var events: [UInt8]
    public var fpu: [UInt8]
    /// struct kvm_xsave (x87, SSE, AVX, ... as XSAVE lays them out); empty where KVM has no XSAVE.
    public var xsave: [UInt8]
    /// struct kvm_xcrs (XCR0); empty where KVM has none.
    public var xcrs: [UInt8]
    public var msrs: [MSR]

    public struct MSR: Codable, Equatable, Sendable {
        public var index: UInt32
        public var value: UInt64
    }

    // The KVM blobs are coded as Data (base64 in JSON): thousands of bytes as one string instead
    // of one JSON number each keeps a snapshot's state quick to decode at restore.
    enum CodingKeys: String, CodingKey { case id, registers, specialRegisters, mpState, lapic, events, fpu, xsave, xcrs, msrs }

    public init(id: Int, registers: Registers, specialRegisters: SpecialRegisters, mpState: UInt32, lapic: [UInt8],
                events: [UInt8], fpu: [UInt8], xsave: [UInt8], xcrs: [UInt8], msrs: [MSR]) {
        self.id = id; self.registers = registers; self.specialRegisters = specialRegisters; self.mpState = mpState
        self.lapic = lapic; self.events = events; self.fpu = fpu; self.xsave = xsave; self.xcrs = xcrs; self.msrs = msrs
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(Int.self, forKey: .id)
        registers = try c.decode(Registers.self, forKey: .registers)
        specialRegisters = try c.decode(SpecialRegisters.self, forKey: .specialRegisters)
        mpState = try c.decode(UInt32.self, forKey: .mpState)
        lapic = Array(try c.decode(Data.self, forKey: .lapic))
        events = Array(try c.decode(Data.self, forKey: .events))
        fpu = Array(try c.decode(Data.self, forKey: .fpu))
        xsave = Array(try c.decode(Data.self, forKey: .xsave))
        xcrs = Array(try c.decode(Data.self, forKey: .xcrs))
        msrs = try c.decode([MSR].self, forKey: .msrs)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(registers, forKey: .registers)
        try c.encode(specialRegisters, forKey: .specialRegisters)
        try c.encode(mpState, forKey: .mpState)
        try c.encode(Data(lapic), forKey: .lapic)
        try c.encode(Data(events), forKey: .events)
        try c.encode(Data(fpu), forKey: .fpu)
        try c.encode(Data(xsave), forKey: .xsave)
        try c.encode(Data(xcrs), forKey: .xcrs)
        try c.encode(msrs, forKey: .msrs)
    }
}

/// IA32_TSC_DEADLINE: the LAPIC timer's deadline in TSC-deadline mode.
let tscDeadlineMSR: UInt32 = 0x6E0

/// MSRs whose values a restored guest needs (syscall entry, TSC, kernel GS base, PAT, kvmclock,
/// MTRRs, ...). Those this KVM does not know are skipped at capture.
let savedMSRIndices: [UInt32] = [
    0x174, 0x175, 0x176,            // SYSENTER_CS/ESP/EIP
    0x10,                           // TSC
    0x3B,                           // TSC_ADJUST
    tscDeadlineMSR,                 // TSC_DEADLINE (restored after the LAPIC)
    0x277,                          // PAT
    0x1A0,                          // MISC_ENABLE
    0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084, // STAR, LSTAR, CSTAR, SFMASK
    0xC000_0102,                    // KERNEL_GS_BASE
    0xC000_0100, 0xC000_0101,       // FS_BASE, GS_BASE
    0xC000_0103,                    // TSC_AUX
    0x11, 0x12,                     // kvmclock (old): wall clock, system time
    0x4B56_4D00, 0x4B56_4D01,       // kvmclock: wall clock, system time
    // Async page faults delivered as an interrupt: the vector (ASYNC_PF_INT) before the enable
    // (ASYNC_PF_EN), which KVM checks against it; without it a restored Linux guest that enabled
    // interrupt delivery gets "page ready" on vector 0.
    0x4B56_4D06,                    // ASYNC_PF_INT
    0x4B56_4D02, 0x4B56_4D03, 0x4B56_4D04, // async page fault, steal time, PV EOI
    0x4B56_4D05,                    // POLL_CONTROL (guest-side halt polling)
    0x48,                           // SPEC_CTRL (IBRS/STIBP/SSBD the guest set)
    0xC001_011F,                    // AMD VIRT_SPEC_CTRL (SSBD on AMD)
    0x2FF,                          // MTRR default type
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F, // fixed MTRRs
] + (0x200..<0x210).map { UInt32($0) } // variable MTRRs: base/mask pairs 0-7

extension VCPU {
    /// Programs LINT0 as ExtINT and LINT1 as NMI, the "virtual wire" state a PC BIOS leaves
    /// behind and that Linux expects before it reprograms the LAPIC from the MP table.
    public func configureLegacyLocalInterrupts() throws(KVMError) {
        var lapic = kvm_lapic_state()
        _ = try retryingEINTR("KVM_GET_LAPIC") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_LAPIC, &lapic) }
        withUnsafeMutableBytes(of: &lapic.regs) { regs in
            func update(_ offset: Int, mode: UInt32) {
                let old = regs.load(fromByteOffset: offset, as: UInt32.self)
                regs.storeBytes(of: (old & ~0x700) | (mode << 8), toByteOffset: offset, as: UInt32.self)
            }
            update(0x350, mode: 7)  // LVT LINT0: ExtINT
            update(0x360, mode: 4)  // LVT LINT1: NMI
        }
        _ = try retryingEINTR("KVM_SET_LAPIC") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_LAPIC, &lapic) }
    }

    public func captureState() throws(KVMError) -> VCPUState {
        var mp = kvm_mp_state()
        _ = try retryingEINTR("KVM_GET_MP_STATE") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_MP_STATE, &mp) }
        // Without an in-kernel irqchip there is no LAPIC to save: carried as an empty blob.
        var lapic = kvm_lapic_state()
        let hasLAPIC = ckvm_ioctl_ptr(fd.raw, CKVM_GET_LAPIC, &lapic) == 0
        var events = kvm_vcpu_events()
        _ = try retryingEINTR("KVM_GET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_VCPU_EVENTS, &events) }
        var fpu = kvm_fpu()
        _ = try retryingEINTR("KVM_GET_FPU") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_FPU, &fpu) }
        var xsave = kvm_xsave()
        let hasXSAVE = ckvm_ioctl_ptr(fd.raw, CKVM_GET_XSAVE, &xsave) == 0
        var xcrs = kvm_xcrs()
        let hasXCRS = ckvm_ioctl_ptr(fd.raw, CKVM_GET_XCRS, &xcrs) == 0
        // One at a time: KVM_GET_MSRS stops at the first index it does not know.
        var msrs: [VCPUState.MSR] = []
        for index in savedMSRIndices { msrs += try readMSRs([index]) }
        return VCPUState(id: id, registers: try getRegisters(), specialRegisters: try getSpecialRegisters(),
                         mpState: mp.mp_state, lapic: hasLAPIC ? withUnsafeBytes(of: &lapic) { Array($0) } : [],
                         events: withUnsafeBytes(of: &events) { Array($0) }, fpu: withUnsafeBytes(of: &fpu) { Array($0) },
                         xsave: hasXSAVE ? withUnsafeBytes(of: &xsave) { Array($0) } : [],
                         xcrs: hasXCRS ? withUnsafeBytes(of: &xcrs) { Array($0) } : [],
                         msrs: msrs)
    }

    /// Restores a captured state; blob sizes are validated first (the state may come from a file).
    public func restoreState(_ state: VCPUState) throws(KVMError) {
        guard state.lapic.isEmpty || state.lapic.count == MemoryLayout<kvm_lapic_state>.size,
              state.events.count == MemoryLayout<kvm_vcpu_events>.size,
              state.fpu.count == MemoryLayout<kvm_fpu>.size, state.msrs.count <= 256,
              state.xsave.isEmpty || state.xsave.count == MemoryLayout<kvm_xsave>.size,
              state.xcrs.isEmpty || state.xcrs.count == MemoryLayout<kvm_xcrs>.size else {
            throw KVMError.invalidArgument("vCPU \(state.id) state has the wrong shape for this KVM")
        }
        try setSpecialRegisters(state.specialRegisters)
        try setRegisters(state.registers)
        var fpu = kvm_fpu()
        withUnsafeMutableBytes(of: &fpu) { $0.copyBytes(from: state.fpu) }
        _ = try retryingEINTR("KVM_SET_FPU") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_FPU, &fpu) }
        // XCR0 first: it decides which XSAVE components the guest may have in use.
        if !state.xcrs.isEmpty {
            var xcrs = kvm_xcrs()
            withUnsafeMutableBytes(of: &xcrs) { $0.copyBytes(from: state.xcrs) }
            guard xcrs.nr_xcrs <= UInt32(KVM_MAX_XCRS) else { throw KVMError.invalidArgument("vCPU \(state.id): \(xcrs.nr_xcrs) XCRs") }
            _ = try retryingEINTR("KVM_SET_XCRS") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_XCRS, &xcrs) }
        }
        if !state.xsave.isEmpty {
            var xsave = kvm_xsave()
            withUnsafeMutableBytes(of: &xsave) { $0.copyBytes(from: state.xsave) }
            _ = try retryingEINTR("KVM_SET_XSAVE") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_XSAVE, &xsave) }
        }
        // TSC_DEADLINE after the LAPIC: KVM ignores a deadline written while LVTT is not in
        // TSC-deadline mode (as it is in a new vCPU), and KVM_SET_LAPIC re-arms the timer from the
        // deadline it already has. Written before, a guest idling on its deadline timer when saved
        // came back with no timer armed and slept until some other interrupt woke that vCPU.
        let deadline = state.msrs.filter { $0.index == tscDeadlineMSR }
        try writeMSRs(state.msrs.filter { $0.index != tscDeadlineMSR })
        if !state.lapic.isEmpty {
            var lapic = kvm_lapic_state()
            withUnsafeMutableBytes(of: &lapic) { $0.copyBytes(from: state.lapic) }
            _ = try retryingEINTR("KVM_SET_LAPIC") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_LAPIC, &lapic) }
        }
        try writeMSRs(deadline)
        var events = kvm_vcpu_events()
        withUnsafeMutableBytes(of: &events) { $0.copyBytes(from: state.events) }
        _ = try retryingEINTR("KVM_SET_VCPU_EVENTS") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_VCPU_EVENTS, &events) }
        var mp = kvm_mp_state()
        mp.mp_state = state.mpState
        _ = try retryingEINTR("KVM_SET_MP_STATE") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_MP_STATE, &mp) }
    }

    func readMSRs(_ indices: [UInt32]) throws(KVMError) -> [VCPUState.MSR] {
        guard let msrs = ckvm_msrs_alloc(UInt32(indices.count)) else { throw KVMError.mmapFailed(errno: ENOMEM) }
        defer { free(msrs) }
        let entries = ckvm_msrs_entries(msrs)!
        for (i, index) in indices.enumerated() { entries[i].index = index }
        // KVM returns how many it read, stopping at the first it does not know.
        let count = Int(try retryingEINTR("KVM_GET_MSRS") { ckvm_ioctl_ptr(fd.raw, CKVM_GET_MSRS, msrs) })
        return (0..<min(count, indices.count)).map { VCPUState.MSR(index: entries[$0].index, value: entries[$0].data) }
    }

    /// Writes the MSRs in order. One KVM refuses although it read it (ASYNC_PF_INT on a VM without
    /// an in-kernel LAPIC, say) is skipped when it holds 0, the value it has anyway; any other
    /// refusal is an error.
    func writeMSRs(_ values: [VCPUState.MSR]) throws(KVMError) {
        var remaining = values[...]
        while !remaining.isEmpty {
            let written = try writeMSRsOnce(Array(remaining))
            guard written < remaining.count else { return }
            let refused = remaining[remaining.startIndex + written]
            guard refused.value == 0 else {
                throw KVMError.invalidArgument("KVM accepted only \(written) of \(remaining.count) MSRs (first refused: 0x\(String(refused.index, radix: 16)) = 0x\(String(refused.value, radix: 16)))")
            }
            remaining = remaining.dropFirst(written + 1)
        }
    }

    private func writeMSRsOnce(_ values: [VCPUState.MSR]) throws(KVMError) -> Int {
        guard !values.isEmpty else { return 0 }
        guard let msrs = ckvm_msrs_alloc(UInt32(values.count)) else { throw KVMError.mmapFailed(errno: ENOMEM) }
        defer { free(msrs) }
        let entries = ckvm_msrs_entries(msrs)!
        for (i, msr) in values.enumerated() { entries[i].index = msr.index; entries[i].data = msr.value }
        return Int(try retryingEINTR("KVM_SET_MSRS") { ckvm_ioctl_ptr(fd.raw, CKVM_SET_MSRS, msrs) })
    }
}
