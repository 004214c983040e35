import GuestMemory
import Testing
@testable import KVM

/// Drives a real-mode guest of a few instructions through /dev/kvm and checks every exit decodes.
@Suite struct KVMExitDecodingTests {
    @Test func systemReportsAPIVersionAndRequiredCapabilities() throws {
        let system = try KVMSystem()
        #expect(system.apiVersion == 12)
        try system.requireCapabilities()
        #expect(system.vcpuLimits.maximum >= 1)
        #expect(!(try system.supportedCPUID()).isEmpty)
    }

    @Test func missingDeviceGivesActionableError() {
        #expect(throws: KVMError.deviceMissing(path: "/nonexistent/kvm")) { try KVMSystem(path: "/nonexistent/kvm") }
    }

    @Test func decodesPortAndMMIOExits() throws {
        let code: [UInt8] = [
            0xB0, 0x42,             // mov al, 0x42
            0xE6, 0x10,             // out 0x10, al
            0xE4, 0x11,             // in al, 0x11
            0xBB, 0x00, 0x20,       // mov bx, 0x2000
            0x8E, 0xDB,             // mov ds, bx      (0x20000 is not RAM: MMIO)
            0xA2, 0x00, 0x00,       // mov [0], al
            0xA0, 0x04, 0x00,       // mov al, [4]
            0xE6, 0x12,             // out 0x12, al
            0xF4,                   // hlt (no irqchip: exits to userspace)
        ]
        let guest = try RealModeGuest(code: code)
        defer { withExtendedLifetime(guest) {} }   // its RAM must outlive every KVM_RUN
        let vcpu = try guest.makeVCPU()
        func next() throws -> VCPUExit { try vcpu.nextExit() }
        #expect(try next() == .ioOut(port: 0x10, size: 1, count: 1))
        #expect(vcpu.ioValue() == 0x42)
        #expect(try next() == .ioIn(port: 0x11, size: 1, count: 1))
        vcpu.setIOValue(0x5A)
        #expect(try next() == .mmioWrite(address: 0x20000, size: 1, value: 0x5A))
        #expect(try next() == .mmioRead(address: 0x20004, size: 1))
        vcpu.completeMMIORead(0x77, size: 1)
        #expect(try next() == .ioOut(port: 0x12, size: 1, count: 1))
        #expect(vcpu.ioValue() == 0x77)
        #expect(try next() == .halted)

        // State capture is plain Codable values that survive a round trip.
        let state = try vcpu.captureState()
        #expect(state.registers.rip == 0x1000 + UInt64(code.count))
        try vcpu.restoreState(state)
        #expect(try vcpu.captureState().registers == state.registers)
    }

    /// A guest saved while its LAPIC timer was armed in TSC-deadline mode (Linux's usual clock
    /// event device) must come back with the deadline armed: KVM drops a deadline written before
    /// the LAPIC is in that mode, so the order of restore matters.
    @Test func restoreKeepsAnArmedTSCDeadline() throws {
        let system = try KVMSystem()
        let cpuid = try system.supportedCPUID()
        let hasDeadlineTimer = cpuid.contains { $0.function == 1 && $0.ecx & (1 << 24) != 0 }
        try #require(hasDeadlineTimer, "this KVM offers no TSC-deadline timer")
        func makeVCPU() throws -> VCPU {
            let vm = try system.createVM()
            try vm.createIRQChip()
            vms.append(vm)
            let vcpu = try vm.createVCPU(id: 0)
            try vcpu.setCPUID(cpuid)
            return vcpu
        }
        var vms: [VirtualMachine] = []
        defer { withExtendedLifetime(vms) {} }
        var state = try makeVCPU().captureState()
        // LVT timer (0x320): TSC-deadline mode (bits 18:17 = 10b), vector 0xEC, unmasked; the APIC
        // software-enabled (spurious vector register 0xF0, bit 8).
        state.lapic.withUnsafeMutableBytes { lapic in
            lapic.storeBytes(of: UInt32(2 << 17 | 0xEC), toByteOffset: 0x320, as: UInt32.self)
            lapic.storeBytes(of: lapic.load(fromByteOffset: 0xF0, as: UInt32.self) | 0x1FF, toByteOffset: 0xF0, as: UInt32.self)
        }
        let tsc = state.msrs.first { $0.index == 0x10 }?.value ?? 0
        let deadline = tsc + (1 << 50)   // far ahead: it must still be pending when read back
        state.msrs.removeAll { $0.index == 0x6E0 }
        state.msrs.append(.init(index: 0x6E0, value: deadline))

        let restored = try makeVCPU()
        try restored.restoreState(state)
        let readBack = try restored.captureState().msrs.first { $0.index == 0x6E0 }?.value
        #expect(readBack == deadline, "TSC_DEADLINE after restore: \(readBack.map { String($0, radix: 16) } ?? "none"), wanted \(String(deadline, radix: 16))")
    }

    @Test func restoreRejectsMisshapenState() throws {
        let system = try KVMSystem()
        let vm = try system.createVM()
        let vcpu = try vm.createVCPU(id: 0)
        var state = try vcpu.captureState()
        state.lapic = [1, 2, 3]
        #expect(throws: KVMError.self) { try vcpu.restoreState(state) }
    }
}
