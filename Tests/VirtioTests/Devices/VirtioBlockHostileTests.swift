import GuestMemory
import Testing
@testable import Virtio

/// Chains a correct driver never builds. §5.2.6 gives every request a 16-byte header and a
/// trailing status byte; without them the device has no in-band way to answer, so (like QEMU's
/// "virtio-blk missing headers") it treats them as a driver error: DEVICE_NEEDS_RESET (§2.1.2).
@Suite struct VirtioBlockHostileTests {
    @Test func shortHeaderNeedsReset() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        try fixture.harness.submit([.readable(BlockFixture.headerAddress, 15), .writable(BlockFixture.statusAddress, 1)],
                                   queue: 0, to: fixture.device)
        #expect(fixture.harness.interrupt.needsResetCount == 1)
        #expect(fixture.device.lastError == .malformedRequest(queue: 0, "virtio-blk request header is 15 bytes, expected 16"))
        #expect(try fixture.driver.usedIdx() == 0)
    }

    @Test func missingStatusByteNeedsResetAndTheQueueStaysStopped() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        try fixture.memory.write(BlockWire.flush, at: GuestAddress(BlockFixture.headerAddress))
        try fixture.harness.submit([.readable(BlockFixture.headerAddress, 16)], queue: 0, to: fixture.device)
        #expect(fixture.harness.interrupt.needsResetCount == 1)
        #expect(fixture.device.lastError == .malformedRequest(queue: 0, "virtio-blk request has no device-writable status byte"))
        // Until the driver resets, even a valid request is left alone.
        let result = try fixture.request(type: BlockWire.read, sector: 0, data: [.writable(BlockFixture.dataAddress, 512)])
        #expect(result.status == 0xEE)
        #expect(try fixture.driver.usedIdx() == 0)
        #expect(fixture.harness.interrupt.needsResetCount == 1)
    }

    @Test func loopingChainNeedsResetWithoutHanging() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        // Descriptor 0 -> 1 -> 0 -> ...
        try fixture.driver.writeDescriptor(index: 0, address: BlockFixture.headerAddress, length: 16, flags: MockDriverQueue.flags(next: true, writable: false), next: 1)
        try fixture.driver.writeDescriptor(index: 1, address: BlockFixture.headerAddress, length: 16, flags: MockDriverQueue.flags(next: true, writable: false), next: 0)
        try fixture.driver.publish(0)
        fixture.device.queueNotified(0)
        #expect(fixture.harness.interrupt.needsResetCount == 1)
        guard case .queue(index: 0, .chainTooLong) = fixture.device.lastError else {
            Issue.record("expected a chain-too-long fault, got \(String(describing: fixture.device.lastError))")
            return
        }
    }

    @Test func resetStopsProcessingAndReactivationRecovers() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        try fixture.harness.submit([.readable(BlockFixture.headerAddress, 3), .writable(BlockFixture.statusAddress, 1)],
                                   queue: 0, to: fixture.device)
        #expect(fixture.harness.interrupt.needsResetCount == 1)
        fixture.device.reset()
        let stopped = try fixture.request(type: BlockWire.read, sector: 0, data: [.writable(BlockFixture.dataAddress, 512)])
        #expect(stopped.status == 0xEE)

        // The driver re-initialises: fresh rings, fresh activation.
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(fixture.device)
        try harness.memory.write(BlockWire.read, at: GuestAddress(0x10000))
        try harness.memory.write(UInt64(0), at: GuestAddress(0x10008))
        try harness.submit([.readable(0x10000, 16), .writable(0x20000, 512), .writable(0x10100, 1)], queue: 0, to: fixture.device)
        #expect(try harness.memory.read(UInt8.self, at: GuestAddress(0x10100)) == BlockWire.ok)
        #expect(try harness.memory.readBytes(at: GuestAddress(0x20000), count: 512) == fixture.fileBytes(at: 0, count: 512))
    }

    @Test func activationWithoutTheRequestQueueIsRefused() throws {
        let fixture = try BlockFixture()
        #expect(throws: VirtioDeviceError.missingQueue(0)) { try fixture.harness.activate(fixture.device, missing: [0]) }
        // Not activated: a notification is ignored.
        let result = try fixture.request(type: BlockWire.read, sector: 0, data: [.writable(BlockFixture.dataAddress, 512)])
        #expect(result.status == 0xEE)
    }

    @Test func suppressedNotificationsRaiseNoInterrupt() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        try fixture.driver.setAvailFlags(1)   // VIRTQ_AVAIL_F_NO_INTERRUPT (§2.7.7)
        #expect(try fixture.request(type: BlockWire.flush, sector: 0).status == BlockWire.ok)
        #expect(fixture.harness.interrupt.signalledQueues.isEmpty)
    }

    @Test func queueIndicesThatDoNotExistAreIgnored() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        fixture.device.queueNotified(1)
        fixture.device.queueNotified(-1)
        #expect(fixture.harness.interrupt.needsResetCount == 0)
    }

    /// The capacity check is the device's own: the fake disk would happily serve any offset.
    @Test func rangeChecksDoNotRelyOnTheBackend() throws {
        let disk = CountingDisk(size: 1 << 20)
        let device = try VirtioBlock(backend: disk)
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(device)
        func read(sector: UInt64) throws -> UInt8 {
            try harness.memory.write(BlockWire.read, at: GuestAddress(0x10000))
            try harness.memory.write(sector, at: GuestAddress(0x10008))
            try harness.submit([.readable(0x10000, 16), .writable(0x20000, 1024), .writable(0x10100, 1)], queue: 0, to: device)
            return try harness.memory.read(at: GuestAddress(0x10100))
        }
        #expect(try read(sector: 2046) == BlockWire.ok)
        #expect(try read(sector: 2047) == BlockWire.ioError)
        #expect(try read(sector: UInt64.max / 512) == BlockWire.ioError)
    }

    /// seg_max * size_max (254 MiB) bounds a request; an indirect table naming the same guest
    /// megabyte 255 times asks for more and is refused before any disk access.
    @Test func requestsBeyondTheAdvertisedSizeAreRefused() throws {
        let disk = CountingDisk(size: 1 << 30)
        let device = try VirtioBlock(backend: disk)
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(device)
        try harness.memory.write(BlockWire.read, at: GuestAddress(0x10000))
        try harness.memory.write(UInt64(0), at: GuestAddress(0x10008))
        try harness.memory.write(UInt8(0xEE), at: GuestAddress(0x10100))
        let data = [MockDriverQueue.Buffer](repeating: .writable(0x100000, 1 << 20), count: 255)
        let head = try harness.drivers[0].addIndirectChain(table: GuestAddress(0x50000),
                                                           [.readable(0x10000, 16)] + data + [.writable(0x10100, 1)])
        try harness.drivers[0].publish(head)
        try harness.memory.write(UInt8(0x5A), at: GuestAddress(0x100000))
        device.queueNotified(0)
        #expect(try harness.memory.read(UInt8.self, at: GuestAddress(0x10100)) == BlockWire.ioError)
        #expect(try harness.memory.read(UInt8.self, at: GuestAddress(0x100000)) == 0x5A)
        #expect(device.statistics.errors == 1)
    }

    /// With EVENT_IDX the driver's used_event decides (§2.7.7.2): it asked to hear about entry 0 only.
    @Test func eventIndexSuppressionIsHonoured() throws {
        let fixture = try BlockFixture()
        try fixture.harness.activate(fixture.device, eventIdx: true)
        try fixture.driver.setUsedEvent(0)
        #expect(try fixture.request(type: BlockWire.flush, sector: 0).status == BlockWire.ok)
        #expect(try fixture.request(type: BlockWire.flush, sector: 0).status == BlockWire.ok)
        #expect(fixture.harness.interrupt.signalledQueues == [0])
        try fixture.driver.setUsedEvent(2)
        #expect(try fixture.request(type: BlockWire.flush, sector: 0).status == BlockWire.ok)
        #expect(fixture.harness.interrupt.signalledQueues == [0, 0])
    }
}
