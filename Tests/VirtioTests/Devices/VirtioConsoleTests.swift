import GuestMemory
import Synchronization
import Testing
@testable import Virtio

@Suite struct VirtioConsoleTests {
    let rx = VirtioConsole.receiveQueue
    let tx = VirtioConsole.transmitQueue

    @Test func guestOutputReachesTheSinkInOrder() throws {
        let output = RecordingOutput()
        let console = VirtioConsole(output: output)
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console)
        try harness.memory.writeBytes(Array("hello, ".utf8), to: GuestAddress(0x20000))
        try harness.memory.writeBytes(Array("world\n".utf8), to: GuestAddress(0x30000))
        let head = try harness.submit([.readable(0x20000, 7), .readable(0x30000, 6)], queue: tx, to: console)
        #expect(output.emitted == Array("hello, world\n".utf8))
        #expect(try harness.drivers[tx].usedElement(0) == (id: UInt32(head), length: 0))
        #expect(harness.interrupt.signalledQueues == [tx])
    }

    @Test func longOutputIsStreamedInChunks() throws {
        let output = RecordingOutput()
        let console = VirtioConsole(output: output)
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console)
        let text = pattern(count: 10000, seed: 4)
        try harness.memory.writeBytes(text, to: GuestAddress(0x20000))
        try harness.submit([.readable(0x20000, 10000)], queue: tx, to: console)
        #expect(output.emitted == text)
    }

    @Test func inputWaitsForBuffersAndFillsThemInOrder() throws {
        let console = VirtioConsole(output: RecordingOutput())
        let harness = try DeviceHarness(queueCount: 2)
        // Typed before the driver is up: queued, not lost.
        #expect(console.enqueueInput(Array("ls -l\n".utf8)) == 6)
        try harness.activate(console)
        // Linux posts small receive buffers; the input spreads over them.
        try harness.submit([.writable(0x40000, 4)], queue: rx, to: console)
        try harness.submit([.writable(0x40100, 64)], queue: rx, to: console)
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40000), count: 4) == Array("ls -".utf8))
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40100), count: 2) == Array("l\n".utf8))
        #expect(try harness.drivers[rx].usedElement(0).length == 4)
        #expect(try harness.drivers[rx].usedElement(1).length == 2)
        // A buffer already posted takes the next input at once.
        try harness.submit([.writable(0x40200, 64)], queue: rx, to: console)
        #expect(try harness.drivers[rx].usedIdx() == 2)
        #expect(console.enqueueInput([0x71]) == 1)
        #expect(try harness.drivers[rx].usedIdx() == 3)
        #expect(try harness.memory.read(UInt8.self, at: GuestAddress(0x40200)) == 0x71)
    }

    @Test func inputIsFlowControlledLikeTheUART() throws {
        let spaceSignals = Mutex(0)
        let console = VirtioConsole(output: RecordingOutput(), onInputSpace: { spaceSignals.withLock { $0 += 1 } })
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console)
        let flood = pattern(count: VirtioConsole.inputCapacity + 100, seed: 8)
        #expect(console.enqueueInput(flood) == VirtioConsole.inputCapacity)
        #expect(console.enqueueInput([1]) == 0)
        #expect(console.inputSpace == 0)
        #expect(spaceSignals.withLock { $0 } == 0)
        // The guest takes 1000 bytes: room appears and the caller is told to retry.
        try harness.submit([.writable(0x40000, 1000)], queue: rx, to: console)
        #expect(console.inputSpace == 1000)
        #expect(spaceSignals.withLock { $0 } == 1)
        #expect(try harness.memory.readBytes(at: GuestAddress(0x40000), count: 1000) == Array(flood.prefix(1000)))
    }

    @Test func resetStopsServiceAndMissingQueuesAreRefused() throws {
        let output = RecordingOutput()
        let console = VirtioConsole(output: output)
        let harness = try DeviceHarness(queueCount: 2)
        #expect(throws: VirtioDeviceError.missingQueue(0)) { try harness.activate(console, missing: [0]) }
        try harness.activate(console)
        console.reset()
        try harness.memory.writeBytes([0x41], to: GuestAddress(0x20000))
        try harness.submit([.readable(0x20000, 1)], queue: tx, to: console)
        #expect(output.emitted.isEmpty)
        #expect(try harness.drivers[tx].usedIdx() == 0)
    }

    @Test func aHostileTransmitChainNeedsReset() throws {
        let output = RecordingOutput()
        let console = VirtioConsole(output: output)
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console)
        try harness.drivers[tx].writeDescriptor(index: 0, address: UInt64.max - 4, length: 16, flags: 0, next: 0)
        try harness.drivers[tx].publish(0)
        console.queueNotified(tx)
        #expect(harness.interrupt.needsResetCount == 1)
        #expect(console.lastError == .queue(index: tx, .bufferAddressOverflow(address: GuestAddress(UInt64.max - 4), length: 16)))
        #expect(output.emitted.isEmpty)
    }
}
