import GuestMemory
import Testing
@testable import Virtio

/// Chains a malicious or buggy driver could publish. Each must end in a typed error, quickly,
/// without touching memory outside guest RAM.
@Suite struct HostileChainTests {
    let memory: GuestMemory
    let driver: MockDriverQueue
    let next = DescriptorFlag.next, write = DescriptorFlag.write, indirect = DescriptorFlag.indirect

    init() throws {
        memory = try makeTestMemory()
        driver = try MockDriverQueue(memory: memory, size: 8)
    }

    /// Publishes `head` and returns what a device that has consumed everything before it throws.
    func popError(head: UInt16) throws -> VirtqueueError? {
        let state = VirtqueueState(config: driver.config, lastAvailIdx: driver.availIdx, usedIdx: driver.availIdx)
        var queue = try SplitVirtqueue(restoring: state, memory: memory)
        try driver.publish(head)
        do {
            _ = try queue.popAvailable(memory: memory)
            return nil
        } catch {
            return error
        }
    }

    @Test func descriptorLoopIsAnError() throws {
        try driver.writeDescriptor(index: 0, address: 0x8000, length: 8, flags: next, next: 1)
        try driver.writeDescriptor(index: 1, address: 0x8100, length: 8, flags: next, next: 0)
        #expect(try popError(head: 0) == .chainTooLong(limit: 8))
    }

    @Test func selfLoopIsAnError() throws {
        try driver.writeDescriptor(index: 3, address: 0x8000, length: 0, flags: next, next: 3)
        #expect(try popError(head: 3) == .chainTooLong(limit: 8))
    }

    @Test func chainLongerThanQueueIsAnError() throws {
        // Nine distinct descriptors cannot exist in an 8-entry table, so 8 linked + 1 revisit is the most.
        for i in UInt16(0)..<8 { try driver.writeDescriptor(index: i, address: 0x8000, length: 1, flags: next, next: (i + 1) % 8) }
        #expect(try popError(head: 0) == .chainTooLong(limit: 8))
    }

    @Test func fullLengthChainIsAccepted() throws {
        for i in UInt16(0)..<8 { try driver.writeDescriptor(index: i, address: 0x8000, length: 1, flags: i < 7 ? next : 0, next: i + 1) }
        #expect(try popError(head: 0) == nil)
    }

    @Test func headOutOfRange() throws {
        #expect(try popError(head: 8) == .headOutOfRange(index: 8, size: 8))
        #expect(try popError(head: 0xffff) == .headOutOfRange(index: 0xffff, size: 8))
    }

    @Test func nextOutOfRange() throws {
        try driver.writeDescriptor(index: 0, address: 0x8000, length: 8, flags: next, next: 8)
        #expect(try popError(head: 0) == .nextOutOfRange(index: 8, tableSize: 8))
    }

    @Test func bufferAddressOverflow() throws {
        try driver.writeDescriptor(index: 0, address: 0xffff_ffff_ffff_fff0, length: 0x20, flags: 0, next: 0)
        #expect(try popError(head: 0) == .bufferAddressOverflow(address: GuestAddress(0xffff_ffff_ffff_fff0), length: 0x20))
    }

    @Test func bufferOutsideRAM() throws {
        try driver.writeDescriptor(index: 0, address: 0x30000, length: 16, flags: write, next: 0)
        #expect(try popError(head: 0) == .bufferOutsideRAM(address: GuestAddress(0x30000), length: 16))
    }

    @Test func bufferStraddlingHole() throws {
        try driver.writeDescriptor(index: 0, address: holeStart - 8, length: 16, flags: write, next: 0)
        #expect(try popError(head: 0) == .bufferOutsideRAM(address: GuestAddress(holeStart - 8), length: 16))
    }

    @Test func totalLengthOverflow() throws {
        // Needs 4 GiB of guest RAM for both buffers to be valid; MAP_NORESERVE makes that cheap.
        let big = try GuestMemory(ranges: [(GuestAddress(0), 0x1_0000_0000), (GuestAddress(0x1_0000_0000), 0x1000)])
        let bigDriver = try MockDriverQueue(memory: big, size: 4)
        try bigDriver.writeDescriptor(index: 0, address: 0, length: 0xffff_f000, flags: next, next: 1)
        try bigDriver.writeDescriptor(index: 1, address: 0x1_0000_0000, length: 0x1000, flags: write, next: 0)
        try bigDriver.publish(0)
        var queue = try bigDriver.makeDeviceQueue()
        #expect(throws: VirtqueueError.chainLengthOverflow) { try queue.popAvailable(memory: big) }
    }

    @Test func writableBeforeReadable() throws {
        try driver.writeDescriptor(index: 0, address: 0x9000, length: 8, flags: write | next, next: 1)
        try driver.writeDescriptor(index: 1, address: 0x8000, length: 8, flags: 0, next: 0)
        #expect(try popError(head: 0) == .writableBeforeReadable(index: 1))
    }

    @Test func nestedIndirectTable() throws {
        let outer = GuestAddress(0x7000), inner = GuestAddress(0x7100)
        try driver.writeDescriptor(table: inner, index: 0, address: 0x8000, length: 8, flags: 0, next: 0)
        try driver.writeDescriptor(table: outer, index: 0, address: inner.raw, length: 16, flags: indirect, next: 0)
        try driver.writeDescriptor(index: 0, address: outer.raw, length: 16, flags: indirect, next: 0)
        #expect(try popError(head: 0) == .nestedIndirect(table: outer))
    }

    @Test func indirectWithNextFlag() throws {
        try driver.writeDescriptor(table: GuestAddress(0x7000), index: 0, address: 0x8000, length: 8, flags: 0, next: 0)
        try driver.writeDescriptor(index: 0, address: 0x7000, length: 16, flags: indirect | next, next: 1)
        #expect(try popError(head: 0) == .indirectWithNext(index: 0))
    }

    @Test(arguments: [0, 15, 17, 40, 16 * 32769] as [UInt32])
    func indirectBadLength(length: UInt32) throws {
        try driver.writeDescriptor(index: 0, address: 0x7000, length: length, flags: indirect, next: 0)
        #expect(try popError(head: 0) == .indirectLengthInvalid(length: length))
    }

    @Test func indirectTableOutsideRAM() throws {
        try driver.writeDescriptor(index: 0, address: holeStart - 16, length: 32, flags: indirect, next: 0)
        #expect(try popError(head: 0) == .indirectTableOutsideRAM(address: GuestAddress(holeStart - 16), length: 32))
        try driver.writeDescriptor(index: 1, address: 0xffff_ffff_ffff_fff0, length: 32, flags: indirect, next: 0)
        #expect(try popError(head: 1) == .indirectTableOutsideRAM(address: GuestAddress(0xffff_ffff_ffff_fff0), length: 32))
    }

    @Test func indirectLoopAndNextOutOfTable() throws {
        let table = GuestAddress(0x7000)
        try driver.writeDescriptor(table: table, index: 0, address: 0x8000, length: 8, flags: next, next: 1)
        try driver.writeDescriptor(table: table, index: 1, address: 0x8000, length: 8, flags: next, next: 0)
        try driver.writeDescriptor(index: 0, address: table.raw, length: 32, flags: indirect, next: 0)
        #expect(try popError(head: 0) == .chainTooLong(limit: 2))
        // next must stay inside the indirect table (2 entries), not the queue's table (8 entries).
        try driver.writeDescriptor(table: table, index: 1, address: 0x8000, length: 8, flags: next, next: 2)
        #expect(try popError(head: 0) == .nextOutOfRange(index: 2, tableSize: 2))
    }

    @Test func availIndexJumpingMoreThanSize() throws {
        var queue = try driver.makeDeviceQueue()
        try driver.setAvailIdx(9)
        #expect(throws: VirtqueueError.availIndexJump(lastSeen: 0, published: 9, size: 8)) { try queue.popAvailable(memory: memory) }
        // Exactly one full ring ahead is legal.
        try driver.setAvailIdx(8)
        #expect(try queue.popAvailable(memory: memory) != nil)
    }

    @Test func badChainIsConsumedSoTheQueueMovesOn() throws {
        var queue = try driver.makeDeviceQueue()
        try driver.publish(8)   // invalid head
        try driver.writeDescriptor(index: 2, address: 0x9000, length: 4, flags: write, next: 0)
        try driver.publish(2)
        #expect(throws: VirtqueueError.headOutOfRange(index: 8, size: 8)) { try queue.popAvailable(memory: memory) }
        #expect(try queue.popAvailable(memory: memory)?.headIndex == 2)
    }
}
