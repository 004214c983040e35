import GuestMemory
import Storage
import Testing
@testable import Virtio

/// Devices carried across a snapshot: driven partway, captured, restored into a fresh device over
/// a copy of guest memory, then driven on. Every buffer must come back exactly once, and the used
/// ring must carry on where it stopped rather than start again.
@Suite struct DeviceSnapshotTests {
    /// Publishes a one-sector virtio-blk write of `fill` bytes, each request in its own buffers.
    func publishWrite(_ guest: DeviceHarness, slot: Int, fill: UInt8) throws -> UInt16 {
        let base = 0x50000 + 0x1000 * UInt64(slot)
        try guest.memory.write(BlockWire.write, at: GuestAddress(base))
        try guest.memory.write(UInt32(0), at: GuestAddress(base + 4))
        try guest.memory.write(UInt64(slot), at: GuestAddress(base + 8))
        try guest.memory.writeBytes([UInt8](repeating: fill, count: 512), to: GuestAddress(base + 0x200))
        try guest.memory.write(UInt8(0xEE), at: GuestAddress(base + 0x400))
        let head = try guest.drivers[0].addChain([.readable(base, 16), .readable(base + 0x200, 512), .writable(base + 0x400, 1)])
        try guest.drivers[0].publish(head)
        return head
    }

    func usedHeads(_ driver: MockDriverQueue) throws -> [UInt16] {
        try (0 ..< driver.usedIdx()).map { UInt16(try driver.usedElement($0).id) }
    }

    @Test func blockRequestsPublishedBeforeTheSnapshotCompleteAfterIt() throws {
        let fixture = try BlockFixture()
        try fixture.harness.activate(fixture.device, eventIdx: true)
        var heads = try (0 ..< 2).map { try publishWrite(fixture.harness, slot: $0, fill: 0xA0 + UInt8($0)) }
        fixture.device.queueNotified(0)
        // Published, but the kick was lost with the old machine.
        heads += try (2 ..< 4).map { try publishWrite(fixture.harness, slot: $0, fill: 0xA0 + UInt8($0)) }
        let state = try #require(fixture.device.captureState())
        #expect(state.queues[0]?.lastAvailIdx == 2 && state.queues[0]?.usedIdx == 2)
        #expect(state.faultedQueues.isEmpty && state.pendingInput.isEmpty)

        let guest = try DeviceHarness(copying: fixture.harness)
        // The old device still holds its image here (in a real restore its process is gone).
        let restored = try VirtioBlock(backend: RawImage(path: fixture.path, readOnly: false, sharing: .unlocked))
        try guest.restore(restored, from: state)
        #expect(restored.captureState() == state)
        try guest.drivers[0].setUsedEvent(2)   // the driver asks to hear once used idx passes 2
        guest.kickAll(restored)
        #expect(try guest.drivers[0].usedIdx() == 4)
        #expect(guest.interrupt.signalledQueues == [0])
        heads.append(try publishWrite(guest, slot: 4, fill: 0xA4))
        guest.kickAll(restored)

        #expect(try usedHeads(guest.drivers[0]) == heads)
        for index in UInt16(0) ..< 5 { #expect(try guest.drivers[0].usedElement(index).length == 1) }
        for slot in 2 ..< 5 { #expect(try guest.memory.read(UInt8.self, at: GuestAddress(0x50400 + 0x1000 * UInt64(slot))) == BlockWire.ok) }
        for slot in 0 ..< 5 { #expect(try fixture.fileBytes(at: 512 * slot, count: 512) == [UInt8](repeating: 0xA0 + UInt8(slot), count: 512)) }
        // The old machine's memory saw none of it.
        #expect(try fixture.driver.usedIdx() == 2)
    }

    @Test func entropyRequestsContinueInTheRestoredDevice() throws {
        func source(_ value: UInt8) -> VirtioEntropyDevice.EntropySource { { bytes in bytes = [UInt8](repeating: value, count: bytes.count) } }
        let device = VirtioEntropyDevice(source: source(0x11))
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(device, eventIdx: true)
        var heads = try (0 ..< 4).map { index in
            try harness.submit([.writable(0x20000 + 0x100 * UInt64(index), 16)], queue: 0, to: device, notify: index < 2)
        }
        let state = try #require(device.captureState())

        let guest = try DeviceHarness(copying: harness)
        let restored = VirtioEntropyDevice(source: source(0x22))
        try guest.restore(restored, from: state)
        guest.kickAll(restored)
        guest.kickAll(restored)   // a second kick with nothing pending changes nothing
        #expect(try guest.drivers[0].usedIdx() == 4)
        heads.append(try guest.submit([.writable(0x20400, 16)], queue: 0, to: restored))

        #expect(try usedHeads(guest.drivers[0]) == heads)
        for (index, fill) in [0x11, 0x11, 0x22, 0x22, 0x22].enumerated() {
            #expect(try guest.memory.readBytes(at: GuestAddress(0x20000 + 0x100 * UInt64(index)), count: 16) == [UInt8](repeating: UInt8(fill), count: 16))
        }
    }

    @Test func consoleInputAndOutputSurviveTheSnapshot() throws {
        let rx = VirtioConsole.receiveQueue, tx = VirtioConsole.transmitQueue
        let output = RecordingOutput()
        let console = VirtioConsole(output: output)
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console, eventIdx: true)
        let typed = Array("hello, world".utf8)
        #expect(console.enqueueInput(typed) == typed.count)
        try harness.submit([.writable(0x40000, 5)], queue: rx, to: console)
        try harness.memory.writeBytes(Array("ok\n".utf8), to: GuestAddress(0x20000))
        try harness.submit([.readable(0x20000, 3)], queue: tx, to: console)
        try harness.memory.writeBytes(Array("late\n".utf8), to: GuestAddress(0x21000))
        try harness.submit([.readable(0x21000, 5)], queue: tx, to: console, notify: false)
        let state = try #require(console.captureState())
        #expect(state.pendingInput == Array(", world".utf8))

        let guest = try DeviceHarness(copying: harness)
        let restoredOutput = RecordingOutput()
        let restored = VirtioConsole(output: restoredOutput)
        try guest.restore(restored, from: state)
        #expect(restored.inputSpace == VirtioConsole.inputCapacity - 7)
        guest.kickAll(restored)   // no receive buffer yet: the input waits
        #expect(restored.inputSpace == VirtioConsole.inputCapacity - 7)
        try guest.submit([.writable(0x40100, 64)], queue: rx, to: restored)
        #expect(restored.enqueueInput(Array("!".utf8)) == 1)
        try guest.submit([.writable(0x40200, 64)], queue: rx, to: restored)

        #expect(output.emitted == Array("ok\n".utf8))
        #expect(restoredOutput.emitted == Array("late\n".utf8))
        let rxDriver = guest.drivers[rx]
        #expect(try rxDriver.usedIdx() == 3)
        var delivered: [UInt8] = []
        for (index, address) in [0x40000, 0x40100, 0x40200].enumerated() {
            delivered += try guest.memory.readBytes(at: GuestAddress(UInt64(address)), count: Int(rxDriver.usedElement(UInt16(index)).length))
        }
        #expect(delivered == typed + Array("!".utf8))
        #expect(try guest.drivers[tx].usedIdx() == 2)
    }

    /// A queue that faulted stays faulted in the restored device; its other queue keeps working.
    @Test func faultedQueuesStayFaultedAfterRestore() throws {
        let rx = VirtioConsole.receiveQueue, tx = VirtioConsole.transmitQueue
        let console = VirtioConsole(output: RecordingOutput())
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console, eventIdx: true)
        try harness.drivers[tx].publish(99)   // head beyond the queue
        console.queueNotified(tx)
        #expect(harness.interrupt.needsResetCount == 1)
        let state = try #require(console.captureState())
        #expect(state.faultedQueues == [tx])

        let guest = try DeviceHarness(copying: harness)
        let output = RecordingOutput()
        let restored = VirtioConsole(output: output)
        try guest.restore(restored, from: state)
        try guest.memory.writeBytes([0x41], to: GuestAddress(0x20000))
        try guest.submit([.readable(0x20000, 1)], queue: tx, to: restored)
        #expect(output.emitted.isEmpty)
        #expect(try guest.drivers[tx].usedIdx() == 0)
        #expect(restored.enqueueInput([0x42]) == 1)
        try guest.submit([.writable(0x40000, 8)], queue: rx, to: restored)
        #expect(try guest.drivers[rx].usedIdx() == 1)
        #expect(restored.captureState()?.faultedQueues == [tx])
    }

    @Test func inactiveDevicesCaptureNothing() throws {
        let console = VirtioConsole(output: RecordingOutput())
        _ = console.enqueueInput([1, 2, 3])
        #expect(console.captureState() == nil)
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console, eventIdx: true)
        #expect(console.captureState() != nil)
        console.reset()
        #expect(console.captureState() == nil)
        #expect(VirtioEntropyDevice().captureState() == nil)
    }
}
