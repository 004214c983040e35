import GuestMemory
import Testing
@testable import KVM

/// ioeventfd and irqfd: the doorbells that keep virtio's data path off the vCPU thread.
@Suite struct EventFDTests {
    @Test func eventFDCountsSignals() throws {
        let event = try EventFD()
        #expect(event.consume() == nil)
        event.signal(); event.signal()
        #expect(event.consume() == 2)
        #expect(event.consume() == nil)
    }

    @Test func ioeventfdAbsorbsGuestWritesWithoutExits() throws {
        let guest = try RealModeGuest(code: [
            0xB8, 0x00, 0x20,       // mov ax, 0x2000
            0x8E, 0xD8,             // mov ds, ax        (0x20000: MMIO)
            0xC7, 0x06, 0x00, 0x00, 0x07, 0x00,  // mov word [0], 7   -> ioeventfd A (any value)
            0xC7, 0x06, 0x10, 0x00, 0x01, 0x00,  // mov word [0x10], 1 -> no match (datamatch 2): exits
            0xC7, 0x06, 0x10, 0x00, 0x02, 0x00,  // mov word [0x10], 2 -> ioeventfd B
            0xBA, 0x00, 0x06,       // mov dx, 0x600
            0xEF,                   // out dx, ax       -> PIO ioeventfd C (2 bytes)
            0xE6, 0x12,             // out 0x12, al     -> exits
            0xF4,
        ])
        defer { withExtendedLifetime(guest) {} }   // its RAM must outlive every KVM_RUN
        let vm = guest.vm
        let anyValue = try EventFD(), matched = try EventFD(), port = try EventFD()
        try vm.attachIoeventfd(anyValue, address: 0x20000, length: 2)
        try vm.attachIoeventfd(matched, address: 0x20010, length: 2, dataMatch: 2)
        try vm.attachIoeventfd(port, address: 0x600, length: 2, space: .pio)
        let vcpu = try guest.makeVCPU()
        #expect(try vcpu.nextExit() == .mmioWrite(address: 0x20010, size: 2, value: 1))
        #expect(anyValue.consume() == 1)
        #expect(try vcpu.nextExit() == .ioOut(port: 0x12, size: 1, count: 1))
        #expect(matched.consume() == 1)
        #expect(port.consume() == 1)
        try vm.detachIoeventfd(anyValue, address: 0x20000, length: 2)
        #expect(throws: KVMError.self) { try vm.detachIoeventfd(anyValue, address: 0x20000, length: 2) }
    }

    @Test func gsiRoutingKeepsISAAndAddsMSIRoutesForIrqfds() throws {
        let system = try KVMSystem()
        let vm = try system.createVM()
        try vm.createIRQChip()
        // 24 IOAPIC pins, 16 of them also on the PICs.
        #expect(GSIRoute.defaultIRQChipRoutes.count == 40)
        let msi = GSIRoute.msi(gsi: 24, address: 0xFEE0_0000, data: 0x4041)
        try vm.setGSIRouting(GSIRoute.defaultIRQChipRoutes + [msi])
        let doorbell = try EventFD()
        try vm.attachIrqfd(doorbell, gsi: 24)
        try vm.attachIrqfd(try EventFD(), gsi: 5)
        doorbell.signal()
        try vm.detachIrqfd(doorbell, gsi: 24)
        // An MSI route on a GSI the IOAPIC owns is refused by KVM.
        #expect(throws: KVMError.self) {
            try vm.setGSIRouting([.irqchip(gsi: 3, chip: .ioapic, pin: 40)])
        }
    }
}
