import GuestMemory
import Testing
@testable import Virtio

@Suite struct VirtioNetTests {
    let mac: [UInt8] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
    let rx = VirtioNet.receiveQueue
    let tx = VirtioNet.transmitQueue

    func makeDevice(offloads: NetworkOffloads = [], mtu: UInt16? = nil) throws -> (VirtioNet, InMemoryNetworkBackend, DeviceHarness) {
        let backend = InMemoryNetworkBackend(offloads: offloads)
        let device = try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: mac, mtu: mtu))
        return (device, backend, try DeviceHarness(queueCount: 2))
    }

    @Test func configSpaceCarriesMACLinkAndMTU() throws {
        let (device, _, _) = try makeDevice(mtu: 9000)
        #expect(device.deviceType == .net)
        #expect(device.queueMaxSizes == [256, 256])
        #expect(device.readConfig(offset: 0, size: 4) == 0x1200_5452)
        #expect(device.readConfig(offset: 4, size: 2) == 0x5634)
        #expect(device.readConfig(offset: 6, size: 2) == 1)      // VIRTIO_NET_S_LINK_UP
        #expect(device.readConfig(offset: 8, size: 2) == 1)      // max_virtqueue_pairs
        #expect(device.readConfig(offset: 10, size: 2) == 9000)
        #expect(device.readConfig(offset: 12, size: 4) == 0)
        device.writeConfig(offset: 0, size: 1, value: 0xFF)
        #expect(device.readConfig(offset: 0, size: 1) == 0x52)
        let features = device.deviceFeatures
        #expect(features & (VirtioNetFeature.mac | VirtioNetFeature.status | VirtioNetFeature.mtu | VirtioFeature.version1)
                == VirtioNetFeature.mac | VirtioNetFeature.status | VirtioNetFeature.mtu | VirtioFeature.version1)
        #expect(features & VirtioNetFeature.mergeableRxBuffers != 0)
    }

    @Test func offloadsAreOfferedOnlyWhenTheBackendHasThem() throws {
        let offload = VirtioNetFeature.checksum | VirtioNetFeature.guestChecksum | VirtioNetFeature.hostTSO4
            | VirtioNetFeature.guestTSO4 | VirtioNetFeature.hostTSO6 | VirtioNetFeature.guestTSO6
        #expect(try makeDevice().0.deviceFeatures & offload == 0)
        #expect(try makeDevice(offloads: [.checksum, .tso4, .tso6]).0.deviceFeatures & offload == offload)
        // TSO without checksum offload would violate §5.1.3.1's dependencies: not offered.
        #expect(try makeDevice(offloads: [.tso4]).0.deviceFeatures & offload == 0)
        #expect(try makeDevice().0.deviceFeatures & VirtioNetFeature.mtu == 0)
    }

    @Test func activationPassesTheGuestsOffloadsToTheBackendAndResetClearsThem() throws {
        let (device, backend, harness) = try makeDevice(offloads: [.checksum, .tso4, .tso6])
        let accepted = VirtioFeature.version1 | VirtioNetFeature.guestChecksum | VirtioNetFeature.guestTSO4 | VirtioNetFeature.hostTSO6
        try harness.activate(device, features: accepted)
        device.reset()
        #expect(backend.acceptedOffloads == [[.checksum, .tso4], []])
        #expect(throws: VirtioDeviceError.missingQueue(1)) { try harness.activate(device, missing: [1]) }
        #expect(throws: VirtioDeviceError.backend("virtio-net needs VIRTIO_F_VERSION_1")) {
            try harness.activate(device, features: VirtioNetFeature.mac)
        }
    }

    @Test func transmitGathersTheChainIntoOneFrame() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        let frame = netFrame(pattern(count: 1500, seed: 9), flags: 1)
        try harness.memory.writeBytes(frame[0 ..< 12], to: GuestAddress(0x20000))
        try harness.memory.writeBytes(frame[12...], to: GuestAddress(0x30000))
        // Linux puts the header in its own descriptor and may split the packet further.
        let head = try harness.submit([.readable(0x20000, 12), .readable(0x30000, 1000), .readable(0x30000 + 1000, 500)], queue: tx, to: device)
        #expect(backend.sent == [frame])
        #expect(try harness.drivers[tx].usedElement(0) == (id: UInt32(head), length: 0))
        #expect(harness.interrupt.signalledQueues == [tx])
        let stats = device.statistics
        #expect(stats.txPackets == 1 && stats.txBytes == 1500 && stats.txErrors == 0)
    }

    @Test func oversizeShortAndRefusedTransmitsAreCountedNotSent() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        // One byte more than header + a 65550-byte frame, then a chain too short for the header.
        try harness.submit([.readable(0x20000, 12), .readable(0x30000, 65551)], queue: tx, to: device)
        try harness.submit([.readable(0x20000, 11)], queue: tx, to: device)
        #expect(backend.sent.isEmpty)
        backend.setFailingSends(true)
        try harness.submit([.readable(0x20000, 60)], queue: tx, to: device)
        let stats = device.statistics
        #expect(stats.txErrors == 2)
        #expect(stats.txDropped == 1)
        #expect(stats.txPackets == 0)
        // Every chain went back to the driver; none needed a reset.
        #expect(try harness.drivers[tx].usedIdx() == 3)
        #expect(harness.interrupt.needsResetCount == 0)
    }

    @Test func receiveWritesHeaderWithNumBuffersAndFrame() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        // Linux's small-buffer mode: one writable buffer of header + 1518 bytes.
        let head = try harness.submit([.writable(0x40000, 1530)], queue: rx, to: device)
        #expect(harness.interrupt.signalledQueues.isEmpty)
        let payload = pattern(count: 1514, seed: 3)
        backend.deliver(netFrame(payload, flags: 2))
        #expect(device.backendReadable() == false)
        var expected = netFrame(payload, flags: 2)
        expected[10] = 1   // num_buffers
        expected[11] = 0
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40000), count: expected.count) == expected)
        #expect(try harness.drivers[rx].usedElement(0) == (id: UInt32(head), length: UInt32(expected.count)))
        #expect(harness.interrupt.signalledQueues == [rx])
        #expect(device.statistics.rxPackets == 1 && device.statistics.rxBytes == 1514)
    }

    /// MRG_RXBUF: a frame larger than one buffer spans several chains, which appear in the used
    /// ring together (one idx update), with num_buffers in the first header.
    @Test func mergeableBuffersCarryAFrameAcrossSeveralChains() throws {
        let (device, backend, harness) = try makeDevice()
        #expect(device.deviceFeatures & VirtioNetFeature.mergeableRxBuffers != 0)
        try harness.activate(device)
        let heads = try [0x40000, 0x41000, 0x42000].map { try harness.submit([.writable(UInt64($0), 1000)], queue: rx, to: device) }
        let payload = pattern(count: 2400, seed: 9)
        backend.deliver(netFrame(payload))
        device.backendReadable()
        var expected = netFrame(payload)
        expected[10] = 3   // num_buffers
        expected[11] = 0
        var received: [UInt8] = []
        for (index, address) in [0x40000, 0x41000, 0x42000].enumerated() {
            let element = try harness.drivers[rx].usedElement(UInt16(index))
            #expect(element.id == UInt32(heads[index]))
            received += try harness.memory.readBytes(at: GuestAddress(UInt64(address)), count: Int(element.length))
        }
        #expect(try harness.drivers[rx].usedIdx() == 3)
        #expect(received == expected)
        #expect(device.statistics.rxPackets == 1 && device.statistics.rxBytes == 2400)
    }

    /// MRG_RXBUF with too few buffers: the frame is dropped, the buffers are kept, and the next
    /// frame that fits uses them.
    @Test func mergeableFrameWithoutEnoughBuffersIsDroppedAndBuffersKept() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        try harness.submit([.writable(0x40000, 600)], queue: rx, to: device)
        backend.deliver(netFrame(pattern(count: 1200, seed: 1)))
        device.backendReadable()
        #expect(device.statistics.rxDropped == 1)
        #expect(try harness.drivers[rx].usedIdx() == 0)
        try harness.submit([.writable(0x41000, 600)], queue: rx, to: device)
        let payload = pattern(count: 1000, seed: 2)
        backend.deliver(netFrame(payload))
        device.backendReadable()
        #expect(try harness.drivers[rx].usedIdx() == 2)
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40000 + 12), count: 588) == Array(payload[0..<588]))
        #expect(try harness.memory.readBytes(at: GuestAddress(0x41000), count: 412) == Array(payload[588...]))
    }

    /// Without MRG_RXBUF negotiated a frame must fit one buffer, even when several are posted.
    @Test func withoutMergeableAFrameNeverSpansBuffers() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device, features: device.deviceFeatures & ~VirtioNetFeature.mergeableRxBuffers)
        try harness.submit([.writable(0x40000, 600)], queue: rx, to: device)
        try harness.submit([.writable(0x41000, 600)], queue: rx, to: device)
        backend.deliver(netFrame(pattern(count: 1000, seed: 4)))
        device.backendReadable()
        #expect(device.statistics.rxDropped == 1)
        #expect(try harness.drivers[rx].usedIdx() == 0)
    }

    @Test func framesWithoutABufferAreDroppedAndLaterFramesStillArrive() throws {
        let (device, backend, harness) = try makeDevice()
        // Before activation nothing can take frames: they are drained, not left to spin a poller.
        backend.deliver(netFrame([1, 2, 3]))
        device.backendReadable()
        #expect(backend.pendingIncoming == 0)
        try harness.activate(device)
        backend.deliver(netFrame([4, 5, 6]))
        device.backendReadable()
        #expect(device.statistics.rxDropped == 2)
        // A buffer arrives; the next frame (not a dropped one) lands in it.
        try harness.submit([.writable(0x40000, 64)], queue: rx, to: device)
        backend.deliver(netFrame([7, 8, 9]))
        device.backendReadable()
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40000 + 12), count: 3) == [7, 8, 9])
        #expect(device.statistics.rxPackets == 1)
    }

    @Test func aFrameTooBigForTheBufferIsDroppedAndTheBufferReused() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        try harness.submit([.writable(0x40000, 100)], queue: rx, to: device)
        backend.deliver(netFrame(pattern(count: 200, seed: 1)))
        backend.deliver(netFrame([0xA, 0xB]))
        device.backendReadable()
        #expect(device.statistics.rxDropped == 1)
        #expect(try harness.drivers[rx].usedIdx() == 1)
        #expect(try harness.drivers[rx].usedElement(0).length == 14)
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40000 + 12), count: 2) == [0xA, 0xB])
    }

    @Test func runtFramesFromTheBackendAreErrors() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        try harness.submit([.writable(0x40000, 100)], queue: rx, to: device)
        backend.deliver([1, 2, 3])
        device.backendReadable()
        #expect(device.statistics.rxErrors == 1)
        #expect(try harness.drivers[rx].usedIdx() == 0)
    }

    @Test func aHostileReceiveChainNeedsResetAndStopsReception() throws {
        let (device, backend, harness) = try makeDevice()
        try harness.activate(device)
        // A receive buffer outside guest RAM.
        try harness.drivers[rx].writeDescriptor(index: 0, address: 0x300000, length: 2048, flags: MockDriverQueue.flags(next: false, writable: true), next: 0)
        try harness.drivers[rx].publish(0)
        backend.deliver(netFrame([1]))
        device.backendReadable()
        #expect(harness.interrupt.needsResetCount == 1)
        #expect(device.lastError == .queue(index: rx, .bufferOutsideRAM(address: GuestAddress(0x300000), length: 2048)))
        // The buffer is checked before a frame is taken, so the frame was not lost to the fault.
        #expect(backend.pendingIncoming == 1)
        // Transmit still works; receive drops until reset.
        try harness.submit([.readable(0x20000, 20)], queue: tx, to: device)
        #expect(backend.sent.count == 1)
        backend.deliver(netFrame([2]))
        device.backendReadable()
        #expect(device.statistics.rxDropped == 2)
        #expect(backend.pendingIncoming == 0)
        #expect(harness.interrupt.needsResetCount == 1)
    }

    @Test func receiveStopsAtTheBatchLimit() throws {
        let (device, backend, _) = try makeDevice()
        for _ in 0 ..< VirtioNet.receiveBatchLimit + 5 { backend.deliver(netFrame([0])) }
        #expect(device.backendReadable() == true)
        #expect(backend.pendingIncoming == 5)
        #expect(device.backendReadable() == false)
    }

    @Test func configurationIsValidated() throws {
        #expect(VirtioNetConfiguration.parseMAC("52:54:00:ab:CD:ef") == [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])
        #expect(VirtioNetConfiguration.parseMAC("52-54-00-ab-cd-ef") == [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])
        for bad in ["52:54:00:ab:cd", "52:54:00:ab:cd:ef:00", "5:54:00:ab:cd:ef", "zz:54:00:ab:cd:ef", ""] {
            #expect(VirtioNetConfiguration.parseMAC(bad) == nil)
        }
        let backend = InMemoryNetworkBackend()
        #expect(throws: VirtioNetConfigurationError.invalidMAC([1, 2])) {
            try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: [1, 2]))
        }
        #expect(throws: VirtioNetConfigurationError.multicastMAC([1, 0, 0, 0, 0, 1])) {
            try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: [1, 0, 0, 0, 0, 1]))
        }
        #expect(throws: VirtioNetConfigurationError.invalidMTU(67)) {
            try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: mac, mtu: 67))
        }
    }
}
