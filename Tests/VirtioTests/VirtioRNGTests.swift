import GuestMemory
import Testing
@testable import Virtio

@Suite struct VirtioRNGTests {
    @Test func fillsExactlyTheWritableBytesAndReportsTheLength() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        // Canary bytes around and between the buffers, and in a readable buffer the device must not touch.
        try memory.writeBytes([UInt8](repeating: 0xcc, count: 0x300), to: GuestAddress(0x8f00))
        let first = try driver.addChain([.readable(0x8f00, 16), .writable(0x9000, 10), .writable(0x9100, 6)])
        let second = try driver.addIndirectChain(table: GuestAddress(0x7000), [.writable(0x9180, 3)])
        try driver.publish(first)
        try driver.publish(second)

        var counter: UInt8 = 0
        let completed = try VirtioRNG().processRequests(queue: &queue, memory: memory) { bytes in
            for i in bytes.indices { counter &+= 1; bytes[i] = counter }
        }
        #expect(completed == 2)
        #expect(try driver.usedIdx() == 2)
        #expect(try driver.usedElement(0).id == UInt32(first))
        #expect(try driver.usedElement(0).length == 16)
        #expect(try driver.usedElement(1).id == UInt32(second))
        #expect(try driver.usedElement(1).length == 3)
        #expect(try memory.readBytes(at: GuestAddress(0x9000), count: 11) == Array(1...10) + [0xcc])
        #expect(try memory.readBytes(at: GuestAddress(0x9100), count: 7) == Array(11...16) + [0xcc])
        #expect(try memory.readBytes(at: GuestAddress(0x9180), count: 4) == [17, 18, 19, 0xcc])
        #expect(try memory.readBytes(at: GuestAddress(0x8f00), count: 16) == [UInt8](repeating: 0xcc, count: 16))
    }

    @Test func shortSourceReportsOnlyWhatWasWritten() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.publish(try driver.addChain([.writable(0x9000, 32)]))
        try VirtioRNG().processRequests(queue: &queue, memory: memory) { bytes in bytes = [7, 7] }
        #expect(try driver.usedElement(0).length == 2)
    }

    @Test func invalidChainSurfacesAsTypedError() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.writeDescriptor(index: 0, address: 0x30000, length: 64, flags: DescriptorFlag.write, next: 0)
        try driver.publish(0)
        #expect(throws: VirtqueueError.bufferOutsideRAM(address: GuestAddress(0x30000), length: 64)) {
            try VirtioRNG().processRequests(queue: &queue, memory: memory) { _ in Issue.record("source called for a bad chain") }
        }
        #expect(try driver.usedIdx() == 0)
    }
}
