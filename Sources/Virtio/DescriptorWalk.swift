import GuestMemory

/// Flags of `struct virtq_desc` (§2.7.5).
enum DescriptorFlag {
    static let next: UInt16 = 1
    static let write: UInt16 = 2
    static let indirect: UInt16 = 4
}

/// One raw 16-byte descriptor as the guest wrote it: nothing in it is trusted yet.
struct RawDescriptor {
    var address: UInt64
    var length: UInt32
    var flags: UInt16
    var next: UInt16

    static func read(from memory: GuestMemory, at address: GuestAddress) throws(VirtqueueError) -> RawDescriptor {
        var raw: (UInt64, UInt64) = (0, 0)
        try ringAccess { try withUnsafeMutableBytes(of: &raw) { try memory.read(into: $0, from: address) } }
        let tail = UInt64(littleEndian: raw.1)
        return RawDescriptor(address: UInt64(littleEndian: raw.0), length: UInt32(truncatingIfNeeded: tail),
                             flags: UInt16(truncatingIfNeeded: tail >> 32), next: UInt16(truncatingIfNeeded: tail >> 48))
    }
}

/// Walks and validates the chain starting at `head`. Every value read from the guest is checked
/// before use; the walk is bounded, so a hostile table yields an error, never a hang.
func walkDescriptorChain(head: UInt16, config: VirtqueueConfig,
                         memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain {
    // §2.7.6: ring entries index the descriptor table, which has Queue Size entries.
    guard head < config.size else { throw .headOutOfRange(index: head, size: config.size) }

    var table = config.descTable
    var tableSize = UInt32(config.size)
    var index = head
    var insideIndirect = false
    // §2.7.5.2 (loops are forbidden) and §2.7.5.3.1 (no chain longer than Queue Size): a walk
    // that visits more descriptors than its table holds must be looping.
    var visited: UInt32 = 0
    var readable: [GuestBuffer] = []
    var writable: [GuestBuffer] = []
    var readableLength: UInt64 = 0
    var writableLength: UInt64 = 0
    var seenWritable = false

    while true {
        visited += 1
        guard visited <= tableSize else { throw .chainTooLong(limit: tableSize) }
        // index < tableSize <= 32768, so the offset cannot overflow; the table itself was validated.
        guard let slot = table.adding(16 * UInt64(index)) else { throw .nextOutOfRange(index: index, tableSize: tableSize) }
        let descriptor = try RawDescriptor.read(from: memory, at: slot)

        if descriptor.flags & DescriptorFlag.indirect != 0 {
            // §2.7.5.3.1: "The driver MUST NOT set the VIRTQ_DESC_F_INDIRECT flag within an
            // indirect descriptor (ie. only one table per descriptor)."
            guard !insideIndirect else { throw .nestedIndirect(table: table) }
            // §2.7.5.3.1: "A driver MUST NOT set both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT".
            guard descriptor.flags & DescriptorFlag.next == 0 else { throw .indirectWithNext(index: index) }
            // §2.7.5.3: the table is an array of 16-byte descriptors of len/16 entries. Empty tables
            // describe nothing; more entries than the largest queue would only buy a longer walk.
            let entries = descriptor.length / 16
            guard descriptor.length % 16 == 0, entries > 0, entries <= UInt32(VirtqueueConfig.maximumSize) else {
                throw .indirectLengthInvalid(length: descriptor.length)
            }
            // The spec sets no alignment for indirect tables (Linux kmalloc()s them), so none is
            // demanded here; the whole table must be RAM (GuestMemory reads unaligned safely).
            let tableAddress = GuestAddress(descriptor.address)
            guard memory.isValid(tableAddress, length: UInt64(descriptor.length)) else {
                throw .indirectTableOutsideRAM(address: tableAddress, length: descriptor.length)
            }
            // §2.7.5.3.2: the device MUST ignore the WRITE flag of the descriptor naming the table.
            table = tableAddress
            tableSize = entries
            index = 0
            insideIndirect = true
            visited = 0
            continue
        }

        let address = GuestAddress(descriptor.address)
        guard address.adding(UInt64(descriptor.length)) != nil else {
            throw .bufferAddressOverflow(address: address, length: descriptor.length)
        }
        let isWritable = descriptor.flags & DescriptorFlag.write != 0
        // §2.7.4.2: "The driver MUST place any device-writable descriptor elements after any
        // device-readable descriptor elements." Empty descriptors count too: order is per element.
        if isWritable { seenWritable = true } else if seenWritable { throw .writableBeforeReadable(index: index) }
        if descriptor.length > 0 {
            // Checks the whole range: a buffer straddling a hole between regions is rejected.
            guard memory.isValid(address, length: UInt64(descriptor.length)) else {
                throw .bufferOutsideRAM(address: address, length: descriptor.length)
            }
            // §2.7.5.2: "Drivers MUST NOT add a descriptor chain longer than 2^32 bytes in total".
            guard readableLength + writableLength + UInt64(descriptor.length) <= UInt64(UInt32.max) else {
                throw .chainLengthOverflow
            }
            let buffer = GuestBuffer(address: address, length: descriptor.length)
            if isWritable {
                writable.append(buffer)
                writableLength += UInt64(descriptor.length)
            } else {
                readable.append(buffer)
                readableLength += UInt64(descriptor.length)
            }
        }

        guard descriptor.flags & DescriptorFlag.next != 0 else { break }
        // §2.7.5: next indexes the same table (the indirect one while inside it).
        guard UInt32(descriptor.next) < tableSize else {
            throw .nextOutOfRange(index: descriptor.next, tableSize: tableSize)
        }
        index = descriptor.next
    }
    // Both totals were checked against UInt32.max above.
    return DescriptorChain(headIndex: head, readable: readable, writable: writable,
                           readableLength: UInt32(readableLength), writableLength: UInt32(writableLength))
}
