import GuestMemory
import Testing
@testable import Virtio

/// virtio-net across a snapshot: the receive chains it held for a frame that did not fit go back
/// to the ring and are filled exactly once by the restored device.
@Suite struct VirtioNetSnapshotTests {
    let rx = VirtioNet.receiveQueue
    let tx = VirtioNet.transmitQueue
    let features = VirtioFeature.version1 | VirtioFeature.ringEventIndex | VirtioNetFeature.mergeableRxBuffers | VirtioNetFeature.guestChecksum

    func makeDevice() throws -> (VirtioNet, InMemoryNetworkBackend) {
        let backend = InMemoryNetworkBackend(offloads: [.checksum])
        return (try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: [0x52, 0x54, 0, 1, 2, 3])), backend)
    }

    /// One frame received into chain A; chains B and C (600 bytes each) held after a 1212-byte
    /// frame that did not fit was dropped; one transmit published without a kick.
    func drivenPartway() throws -> (device: VirtioNet, backend: InMemoryNetworkBackend, harness: DeviceHarness, receiveHeads: [UInt16]) {
        let (device, backend) = try makeDevice()
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(device, features: features, eventIdx: true)
        let first = try harness.submit([.writable(0x40000, 1530)], queue: rx, to: device)
        backend.deliver(netFrame(pattern(count: 100, seed: 1)))
        device.backendReadable()
        let held = try [0x41000, 0x42000].map { try harness.submit([.writable(UInt64($0), 600)], queue: rx, to: device) }
        backend.deliver(netFrame(pattern(count: 1200, seed: 2)))
        device.backendReadable()
        #expect(device.statistics.rxDropped == 1)
        #expect(try harness.drivers[rx].usedIdx() == 1)
        try harness.memory.writeBytes(netFrame([1, 2, 3]), to: GuestAddress(0x50000))
        try harness.submit([.readable(0x50000, 15)], queue: tx, to: device, notify: false)
        return (device, backend, harness, [first] + held)
    }

    func usedElements(_ driver: MockDriverQueue) throws -> [UInt32] {
        try (0 ..< driver.usedIdx()).flatMap { index in let element = try driver.usedElement(index); return [element.id, element.length] }
    }

    @Test func heldReceiveChainsGoBackToTheRingAndAreFilledOnce() throws {
        let (device, _, harness, heads) = try drivenPartway()
        let state = try #require(device.captureState())
        // Three chains popped, one used, two held: the ring is rewound to just after the used one.
        #expect(state.queues[rx]?.lastAvailIdx == 1 && state.queues[rx]?.usedIdx == 1)
        #expect(state.queues[tx]?.lastAvailIdx == 0)

        let guest = try DeviceHarness(copying: harness)
        let (restored, backend) = try makeDevice()
        try guest.restore(restored, from: state)
        #expect(backend.acceptedOffloads == [[.checksum]])
        guest.kickAll(restored)
        #expect(backend.sent == [netFrame([1, 2, 3])])
        let payload = pattern(count: 1000, seed: 3)
        backend.deliver(netFrame(payload))
        restored.backendReadable()
        guest.kickAll(restored)

        let rxDriver = guest.drivers[rx]
        #expect(try rxDriver.usedIdx() == 3)
        #expect(try (0 ..< 3).map { UInt16(try rxDriver.usedElement($0).id) } == heads)
        #expect(try rxDriver.usedElement(1).length == 600 && rxDriver.usedElement(2).length == 412)
        var expected = netFrame(payload)
        expected[10] = 2   // num_buffers
        expected[11] = 0
        let received = try guest.memory.readBytes(at: GuestAddress(0x41000), count: 600) + guest.memory.readBytes(at: GuestAddress(0x42000), count: 412)
        #expect(received == expected)
        #expect(try guest.drivers[tx].usedIdx() == 1)
        #expect(backend.sent.count == 1)
    }

    /// Capturing has no side effect: the original device, carrying on, fills the same chains the
    /// same way as the restored one.
    @Test func captureLeavesTheRunningDeviceAlone() throws {
        let (device, backend, harness, _) = try drivenPartway()
        let state = try #require(device.captureState())
        #expect(device.captureState() == state)
        let guest = try DeviceHarness(copying: harness)
        let (restored, restoredBackend) = try makeDevice()
        try guest.restore(restored, from: state)

        let frame = netFrame(pattern(count: 700, seed: 5))
        for (net, wire) in [(device, backend), (restored, restoredBackend)] {
            net.queueNotified(rx)
            wire.deliver(frame)
            net.backendReadable()
        }
        #expect(try harness.drivers[rx].usedIdx() == 3)
        #expect(try usedElements(harness.drivers[rx]) == usedElements(guest.drivers[rx]))
        #expect(try harness.memory.readBytes(at: GuestAddress(0x41000), count: 600) == guest.memory.readBytes(at: GuestAddress(0x41000), count: 600))
        #expect(try harness.memory.readBytes(at: GuestAddress(0x42000), count: 112) == guest.memory.readBytes(at: GuestAddress(0x42000), count: 112))
    }

    @Test func aStateWithoutVersion1IsRefused() throws {
        let (device, _, harness, _) = try drivenPartway()
        var state = try #require(device.captureState())
        state.negotiatedFeatures &= ~VirtioFeature.version1
        let (restored, backend) = try makeDevice()
        #expect(throws: VirtioDeviceError.backend("virtio-net needs VIRTIO_F_VERSION_1")) { try harness.restore(restored, from: state) }
        #expect(restored.captureState() == nil)
        #expect(backend.acceptedOffloads.isEmpty)
    }
}
