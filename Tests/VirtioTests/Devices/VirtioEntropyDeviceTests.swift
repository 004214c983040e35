import GuestMemory
import Testing
@testable import Virtio

@Suite struct VirtioEntropyDeviceTests {
    @Test func fillsRequestsFromTheSource() throws {
        let device = VirtioEntropyDevice(source: { bytes in
            for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index + 1) }
        })
        #expect(device.deviceType == .entropy)
        #expect(device.readConfig(offset: 0, size: 4) == 0)
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(device)
        let head = try harness.submit([.writable(0x20000, 16), .writable(0x30000, 8)], queue: 0, to: device)
        #expect(try harness.memory.readBytes(at: GuestAddress(0x20000), count: 16) == Array(1 ... 16))
        #expect(try harness.memory.readBytes(at: GuestAddress(0x30000), count: 8) == Array(17 ... 24))
        #expect(try harness.drivers[0].usedElement(0) == (id: UInt32(head), length: 24))
        #expect(harness.interrupt.signalledQueues == [0])
    }

    @Test func requestsAreCappedAt64KiB() throws {
        let device = VirtioEntropyDevice(source: { bytes in
            for index in bytes.indices { bytes[index] = 0xAB }
        })
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(device)
        try harness.submit([.writable(0x20000, 0x20000)], queue: 0, to: device)
        #expect(try harness.drivers[0].usedElement(0).length == VirtioRNG.maximumRequestBytes)
        #expect(try harness.memory.read(UInt8.self, at: GuestAddress(0x20000 + 0x10000)) == 0)
    }

    @Test func systemEntropyFillsTheWholeBuffer() {
        var first = [UInt8](repeating: 0, count: 61)
        var second = [UInt8](repeating: 0, count: 61)
        VirtioEntropyDevice.systemEntropy(&first)
        VirtioEntropyDevice.systemEntropy(&second)
        #expect(first.count == 61)
        // Two 488-bit draws agreeing, or the tail staying zero, would mean the source is broken.
        #expect(first != second)
        #expect(first.suffix(5) != [0, 0, 0, 0, 0])
    }

    @Test func hostileChainsAndResetStopService() throws {
        let device = VirtioEntropyDevice(source: { _ in })
        let harness = try DeviceHarness(queueCount: 1)
        #expect(throws: VirtioDeviceError.missingQueue(0)) { try harness.activate(device, missing: [0]) }
        try harness.activate(device)
        try harness.drivers[0].writeDescriptor(index: 0, address: 0x300000, length: 8, flags: 2, next: 0)
        try harness.drivers[0].publish(0)
        device.queueNotified(0)
        #expect(harness.interrupt.needsResetCount == 1)
        #expect(device.lastError == .queue(index: 0, .bufferOutsideRAM(address: GuestAddress(0x300000), length: 8)))
        device.reset()
        try harness.activate(device)
        device.reset()
        try harness.submit([.writable(0x20000, 8)], queue: 0, to: device)
        #expect(try harness.drivers[0].usedIdx() == 0)
    }
}
