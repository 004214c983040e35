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

    @Test func restoreRejectsMisshapenState() throws {
        let system = try KVMSystem()
        let vm = try system.createVM()
        let vcpu = try vm.createVCPU(id: 0)
        var state = try vcpu.captureState()
        state.lapic = [1, 2, 3]
        #expect(throws: KVMError.self) { try vcpu.restoreState(state) }
    }
}
