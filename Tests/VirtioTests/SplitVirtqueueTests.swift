import Foundation
import GuestMemory
import Testing
@testable import Virtio

@Suite struct SplitVirtqueueTests {
    @Test func popsDirectChainWithReadableThenWritableBuffers() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 16)
        var queue = try driver.makeDeviceQueue()
        #expect(try queue.popAvailable(memory: memory) == nil)

        let head = try driver.addChain([.readable(0x8000, 16), .readable(0x8100, 4), .writable(0x9000, 512)])
        try driver.publish(head)
        let chain = try #require(try queue.popAvailable(memory: memory))
        #expect(chain.headIndex == head)
        #expect(chain.readable == [GuestBuffer(address: GuestAddress(0x8000), length: 16),
                                   GuestBuffer(address: GuestAddress(0x8100), length: 4)])
        #expect(chain.writable == [GuestBuffer(address: GuestAddress(0x9000), length: 512)])
        #expect(chain.readableLength == 20 && chain.writableLength == 512)
        #expect(try queue.popAvailable(memory: memory) == nil)
    }

    @Test func popsIndirectChain() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        // Unaligned on purpose: the spec sets no alignment for indirect tables (Linux kmalloc()s them).
        let head = try driver.addIndirectChain(table: GuestAddress(0x7008), [.readable(0x8000, 8), .writable(0x9000, 64), .writable(0x9100, 1)])
        try driver.publish(head)
        let chain = try #require(try queue.popAvailable(memory: memory))
        #expect(chain.readable.map(\.length) == [8])
        #expect(chain.writable.map(\.address) == [GuestAddress(0x9000), GuestAddress(0x9100)])
        #expect(chain.writableLength == 65)
    }

    @Test func indirectTableMayExceedQueueSizeAndFollowDirectDescriptors() throws {
        // Linux sizes indirect tables by its scatterlist, not the ring (QEMU and rust-vmm accept
        // this too); the walk is still bounded by the table's own entry count.
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        let table = GuestAddress(0x7000)
        for i in UInt16(0)..<10 {
            try driver.writeDescriptor(table: table, index: i, address: 0x9000 + UInt64(i) * 0x10, length: 0x10,
                                       flags: DescriptorFlag.write | (i < 9 ? DescriptorFlag.next : 0), next: i + 1)
        }
        try driver.writeDescriptor(index: 0, address: 0x8000, length: 4, flags: DescriptorFlag.next, next: 1)
        try driver.writeDescriptor(index: 1, address: table.raw, length: 160, flags: DescriptorFlag.indirect, next: 0)
        try driver.publish(0)
        let chain = try #require(try queue.popAvailable(memory: memory))
        #expect(chain.readableLength == 4)
        #expect(chain.writable.count == 10 && chain.writableLength == 160)
    }

    @Test func readsAndWritesChainBytesWithinBounds() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try memory.writeBytes([1, 2, 3], to: GuestAddress(0x8000))
        try memory.writeBytes([4, 5], to: GuestAddress(0x8100))
        try driver.publish(try driver.addChain([.readable(0x8000, 3), .readable(0x8100, 2), .writable(0x9000, 2), .writable(0x9100, 2)]))
        let chain = try #require(try queue.popAvailable(memory: memory))
        #expect(try chain.readReadable(from: memory, maxBytes: 100) == [1, 2, 3, 4, 5])
        #expect(try chain.readReadable(from: memory, maxBytes: 4) == [1, 2, 3, 4])
        try memory.writeBytes([0xee, 0xee, 0xee], to: GuestAddress(0x9100))
        // Six bytes offered, four fit: the byte after the last buffer stays untouched.
        #expect(try chain.writeWritable([9, 8, 7, 6, 5, 4], to: memory) == 4)
        #expect(try memory.readBytes(at: GuestAddress(0x9000), count: 2) == [9, 8])
        #expect(try memory.readBytes(at: GuestAddress(0x9100), count: 3) == [7, 6, 0xee])
    }

    @Test func bufferMayCrossAdjacentRegions() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.publish(try driver.addChain([.writable(0xfff0, 0x20)]))
        #expect(try queue.popAvailable(memory: memory)?.writableLength == 0x20)
    }

    @Test func zeroLengthDescriptorsAreAcceptedButCarryNoBuffer() throws {
        // The spec does not forbid len == 0; such a descriptor names no memory, even at a bogus address.
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.publish(try driver.addChain([.readable(0xdead_0000_0000, 0), .writable(0x9000, 8), .writable(0xffff_ffff_0000, 0)]))
        let chain = try #require(try queue.popAvailable(memory: memory))
        #expect(chain.readable.isEmpty)
        #expect(chain.writable == [GuestBuffer(address: GuestAddress(0x9000), length: 8)])
    }

    @Test func writesUsedElementsAndIndex() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        let first = try driver.addChain([.writable(0x9000, 8)])
        let second = try driver.addChain([.writable(0x9100, 8)])
        try driver.publish(first)
        try driver.publish(second)
        let a = try #require(try queue.popAvailable(memory: memory))
        let b = try #require(try queue.popAvailable(memory: memory))
        try queue.addUsed(head: b.headIndex, length: 5, memory: memory)   // out of order is legal
        try queue.addUsed(head: a.headIndex, length: 8, memory: memory)
        #expect(try driver.usedIdx() == 2)
        #expect(try driver.usedElement(0).id == UInt32(second))
        #expect(try driver.usedElement(0).length == 5)
        #expect(try driver.usedElement(1).id == UInt32(first))
        #expect(try driver.usedElement(1).length == 8)
        #expect(throws: VirtqueueError.usedHeadOutOfRange(head: 4, size: 4)) {
            try queue.addUsed(head: 4, length: 0, memory: memory)
        }
    }

    @Test func indicesWrapPast65535() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 4)
        let start: UInt16 = 65534
        var queue = try SplitVirtqueue(restoring: VirtqueueState(config: driver.config, lastAvailIdx: start, usedIdx: start), memory: memory)
        try driver.setAvailIdx(start)
        var heads: [UInt16] = []
        for i in 0..<4 {
            let head = try driver.addChain([.writable(0x9000 + UInt64(i) * 0x100, 16)])
            try driver.publish(head)
            heads.append(head)
        }
        #expect(driver.availIdx == 2)   // 65534 + 4 wrapped
        for expected in heads {
            let chain = try #require(try queue.popAvailable(memory: memory))
            #expect(chain.headIndex == expected)
            try queue.addUsed(head: chain.headIndex, length: 16, memory: memory)
        }
        #expect(try queue.popAvailable(memory: memory) == nil)
        #expect(queue.state.lastAvailIdx == 2 && queue.state.usedIdx == 2)
        #expect(try driver.usedIdx() == 2)
        #expect(try driver.usedElement(65535).id == UInt32(heads[1]))
        #expect(try driver.usedElement(0).id == UInt32(heads[2]))
    }

    @Test func configValidationNamesTheProblem() throws {
        let memory = try makeTestMemory()
        let good = VirtqueueConfig(size: 8, descTable: GuestAddress(0x1000), availRing: GuestAddress(0x1080),
                                   usedRing: GuestAddress(0x1100), ready: true)
        try good.validate(in: memory)
        var bad = good
        for size: UInt16 in [0, 3, 65535, 65534] {
            bad = good; bad.size = size
            #expect(throws: VirtqueueError.invalidSize(size)) { try bad.validate(in: memory) }
        }
        bad = good; bad.descTable = GuestAddress(0x1008)
        #expect(throws: VirtqueueError.misaligned(area: "descriptor table", address: GuestAddress(0x1008), alignment: 16)) { try bad.validate(in: memory) }
        bad = good; bad.availRing = GuestAddress(0x1081)
        #expect(throws: VirtqueueError.misaligned(area: "available ring", address: GuestAddress(0x1081), alignment: 2)) { try bad.validate(in: memory) }
        bad = good; bad.usedRing = GuestAddress(0x1102)
        #expect(throws: VirtqueueError.misaligned(area: "used ring", address: GuestAddress(0x1102), alignment: 4)) { try bad.validate(in: memory) }
        // The used ring (6 + 64 bytes) would run into the hole.
        bad = good; bad.usedRing = GuestAddress(holeStart - 0x20)
        #expect(throws: VirtqueueError.areaOutsideRAM(area: "used ring", address: GuestAddress(holeStart - 0x20), length: 70)) { try bad.validate(in: memory) }
        bad = good; bad.descTable = GuestAddress(0xffff_ffff_ffff_fff0)
        #expect(throws: VirtqueueError.areaOutsideRAM(area: "descriptor table", address: GuestAddress(0xffff_ffff_ffff_fff0), length: 128)) { try bad.validate(in: memory) }
        bad = good; bad.ready = false
        #expect(throws: VirtqueueError.notReady) { try bad.validate(in: memory) }
        // A large queue whose tables exactly fit is accepted.
        let big = VirtqueueConfig(size: 1024, descTable: GuestAddress(0), availRing: GuestAddress(0x4000),
                                  usedRing: GuestAddress(0x5000), ready: true)
        #expect(throws: Never.self) { try big.validate(in: memory) }
    }

    @Test func stateRoundTripsThroughCodableAndRestores() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue(eventIdx: true)
        try driver.publish(try driver.addChain([.writable(0x9000, 4)]))
        try driver.publish(try driver.addChain([.writable(0x9100, 4)]))
        let first = try #require(try queue.popAvailable(memory: memory))
        try queue.addUsed(head: first.headIndex, length: 4, memory: memory)
        _ = try queue.needsNotification(memory: memory)

        let encoded = try JSONEncoder().encode(queue.state)
        let decoded = try JSONDecoder().decode(VirtqueueState.self, from: encoded)
        #expect(decoded == queue.state)
        var restored = try SplitVirtqueue(restoring: decoded, memory: memory)
        // The restored queue carries on where the original stopped: the second chain is next.
        #expect(try restored.popAvailable(memory: memory)?.writable.first?.address == GuestAddress(0x9100))
    }

    @Test func restoreRejectsInvalidState() throws {
        let memory = try makeTestMemory()
        let driver = try MockDriverQueue(memory: memory, size: 8)
        var state = VirtqueueState(config: driver.config)
        state.config.size = 12
        #expect(throws: VirtqueueError.invalidSize(12)) { try SplitVirtqueue(restoring: state, memory: memory) }
        state = VirtqueueState(config: driver.config)
        state.config.availRing = GuestAddress(holeStart)
        #expect(throws: VirtqueueError.self) { try SplitVirtqueue(restoring: state, memory: memory) }
        // More chains "in flight" than the queue can hold is impossible for an honest device.
        state = VirtqueueState(config: driver.config, lastAvailIdx: 9, usedIdx: 0)
        #expect(throws: VirtqueueError.inconsistentState("9 chains in flight exceed queue size 8")) {
            try SplitVirtqueue(restoring: state, memory: memory)
        }
        state = VirtqueueState(config: driver.config, lastAvailIdx: 3, usedIdx: 65535)   // 4 in flight across the wrap
        #expect(throws: Never.self) { try SplitVirtqueue(restoring: state, memory: memory) }
        state = VirtqueueState(config: driver.config, lastAvailIdx: 100, usedIdx: 100, signalledUsedIdx: 50)
        #expect(throws: VirtqueueError.self) { try SplitVirtqueue(restoring: state, memory: memory) }
    }
}
