import GuestMemory

/// One guest buffer of a chain, already checked to lie inside guest RAM.
public struct GuestBuffer: Equatable, Sendable {
    public let address: GuestAddress
    public let length: UInt32

    public init(address: GuestAddress, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// A validated descriptor chain: device-readable buffers first, then device-writable ones (§2.7.4).
/// Zero-length descriptors are accepted (the spec does not forbid them) but carry no buffer,
/// so they never appear here and never cause a memory access.
public struct DescriptorChain: Equatable, Sendable {
    /// The head index to hand back through `SplitVirtqueue.addUsed`.
    public let headIndex: UInt16
    public let readable: [GuestBuffer]
    public let writable: [GuestBuffer]
    /// Totals fit in UInt32: the walk rejects chains over 2^32-1 bytes (§2.7.5.2).
    public let readableLength: UInt32
    public let writableLength: UInt32

    /// Copies up to `maxBytes` of the device-readable buffers, in chain order. The bound keeps a
    /// guest from making the device allocate as much as its chain claims.
    public func readReadable(from memory: GuestMemory, maxBytes: Int) throws(VirtqueueError) -> [UInt8] {
        let total = min(Int(readableLength), max(0, maxBytes))
        var out: [UInt8] = []
        out.reserveCapacity(total)
        for buffer in readable where out.count < total {
            let count = min(Int(buffer.length), total - out.count)
            let bytes = try ringAccess { try memory.readBytes(at: buffer.address, count: count) }
            out.append(contentsOf: bytes)
        }
        return out
    }

    /// Writes `bytes` across the device-writable buffers in chain order, stopping when either runs
    /// out. Returns the number of bytes written, which is what `addUsed` should report.
    @discardableResult
    public func writeWritable(_ bytes: [UInt8], to memory: GuestMemory) throws(VirtqueueError) -> UInt32 {
        var written = 0
        for buffer in writable where written < bytes.count {
            let count = min(Int(buffer.length), bytes.count - written)
            try ringAccess { try memory.writeBytes(bytes[written ..< written + count], to: buffer.address) }
            written += count
        }
        // written <= writableLength <= UInt32.max, so this conversion cannot trap.
        return UInt32(written)
    }
}
