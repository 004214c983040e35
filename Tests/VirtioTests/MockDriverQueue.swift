import GuestMemory
@testable import Virtio

/// The driver side of a split virtqueue, written the way a guest driver would lay it out, so
/// device code is tested against real ring memory (after rust-vmm virtio-queue's MockSplitQueue).
/// Raw writers let hostile tests put any bytes anywhere.
final class MockDriverQueue {
    struct Buffer {
        var address: GuestAddress
        var length: UInt32
        var writable: Bool

        static func readable(_ address: UInt64, _ length: UInt32) -> Buffer { Buffer(address: GuestAddress(address), length: length, writable: false) }
        static func writable(_ address: UInt64, _ length: UInt32) -> Buffer { Buffer(address: GuestAddress(address), length: length, writable: true) }
    }

    let memory: GuestMemory
    let config: VirtqueueConfig
    /// Next free descriptor-table slot handed out by addChain (wraps at size).
    private(set) var nextDescriptor: UInt16 = 0
    /// The driver's free-running avail->idx.
    private(set) var availIdx: UInt16 = 0

    /// Places desc table, avail ring and used ring back to back from `base` (16-byte aligned).
    init(memory: GuestMemory, size: UInt16, base: UInt64 = 0x1000) throws {
        let desc = base
        let avail = desc + 16 * UInt64(size)
        let used = (avail + 6 + 2 * UInt64(size) + 3) & ~3
        self.memory = memory
        self.config = VirtqueueConfig(size: size, descTable: GuestAddress(desc), availRing: GuestAddress(avail),
                                      usedRing: GuestAddress(used), ready: true)
        try memory.zero(at: GuestAddress(desc), length: used + 6 + 8 * UInt64(size) - desc)
    }

    /// The same driver queue in a copy of its guest memory (a restored snapshot): the rings are
    /// already there, so nothing is zeroed, and the driver's own indices carry on.
    init(continuing other: MockDriverQueue, in memory: GuestMemory) {
        self.memory = memory
        config = other.config
        nextDescriptor = other.nextDescriptor
        availIdx = other.availIdx
    }

    func makeDeviceQueue(eventIdx: Bool = false) throws -> SplitVirtqueue {
        try SplitVirtqueue(config: config, eventIdx: eventIdx, memory: memory)
    }

    static func flags(next: Bool, writable: Bool, indirect: Bool = false) -> UInt16 {
        (next ? DescriptorFlag.next : 0) | (writable ? DescriptorFlag.write : 0) | (indirect ? DescriptorFlag.indirect : 0)
    }

    /// Writes one raw descriptor into any table (the queue's own or an indirect one).
    func writeDescriptor(table: GuestAddress? = nil, index: UInt16, address: UInt64, length: UInt32,
                         flags: UInt16, next: UInt16) throws {
        let slot = GuestAddress((table ?? config.descTable).raw + 16 * UInt64(index))
        try memory.write(address, at: slot)
        try memory.write(length, at: GuestAddress(slot.raw + 8))
        try memory.write(flags, at: GuestAddress(slot.raw + 12))
        try memory.write(next, at: GuestAddress(slot.raw + 14))
    }

    /// Links `buffers` as consecutive descriptors in the queue's table; returns the head index.
    @discardableResult
    func addChain(_ buffers: [Buffer]) throws -> UInt16 {
        let head = nextDescriptor
        for (position, buffer) in buffers.enumerated() {
            let index = nextDescriptor
            nextDescriptor = (nextDescriptor &+ 1) & (config.size - 1)
            let last = position == buffers.count - 1
            try writeDescriptor(index: index, address: buffer.address.raw, length: buffer.length,
                                flags: Self.flags(next: !last, writable: buffer.writable), next: nextDescriptor)
        }
        return head
    }

    /// Writes `buffers` as an indirect table at `table` and one head descriptor naming it.
    @discardableResult
    func addIndirectChain(table: GuestAddress, _ buffers: [Buffer]) throws -> UInt16 {
        for (position, buffer) in buffers.enumerated() {
            let last = position == buffers.count - 1
            try writeDescriptor(table: table, index: UInt16(position), address: buffer.address.raw, length: buffer.length,
                                flags: Self.flags(next: !last, writable: buffer.writable), next: UInt16(position + 1))
        }
        let head = nextDescriptor
        nextDescriptor = (nextDescriptor &+ 1) & (config.size - 1)
        try writeDescriptor(index: head, address: table.raw, length: UInt32(16 * buffers.count),
                            flags: DescriptorFlag.indirect, next: 0)
        return head
    }

    /// Puts `head` in the next avail slot and bumps avail->idx, as the driver does (§2.7.13.2-3).
    func publish(_ head: UInt16) throws {
        let slot = UInt64(availIdx & (config.size - 1))
        try memory.write(head, at: GuestAddress(config.availRing.raw + 4 + 2 * slot))
        availIdx &+= 1
        try memory.write(availIdx, at: GuestAddress(config.availRing.raw + 2))
    }

    /// Overwrites avail->idx directly (wrap-around and hostile tests).
    func setAvailIdx(_ value: UInt16) throws {
        availIdx = value
        try memory.write(value, at: GuestAddress(config.availRing.raw + 2))
    }

    func setAvailFlags(_ flags: UInt16) throws { try memory.write(flags, at: config.availRing) }

    func setUsedEvent(_ value: UInt16) throws {
        try memory.write(value, at: GuestAddress(config.availRing.raw + 4 + 2 * UInt64(config.size)))
    }

    func availEvent() throws -> UInt16 {
        try memory.read(at: GuestAddress(config.usedRing.raw + 4 + 8 * UInt64(config.size)))
    }

    func usedFlags() throws -> UInt16 { try memory.read(at: config.usedRing) }

    func usedIdx() throws -> UInt16 { try memory.read(at: GuestAddress(config.usedRing.raw + 2)) }

    /// The used element at free-running index `index` (taken modulo the size).
    func usedElement(_ index: UInt16) throws -> (id: UInt32, length: UInt32) {
        let slot = GuestAddress(config.usedRing.raw + 4 + 8 * UInt64(index & (config.size - 1)))
        return (try memory.read(at: slot), try memory.read(at: GuestAddress(slot.raw + 4)))
    }
}
