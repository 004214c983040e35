import GuestMemory

/// Reads or writes a chain's buffers as one byte stream in bounded steps, so a device can move a
/// request of any size through a fixed scratch buffer instead of allocating what the guest claims.
struct GuestBufferCursor {
    private let buffers: [GuestBuffer]
    private var bufferIndex = 0
    private var offsetInBuffer: UInt32 = 0
    /// Bytes still to be handed out (never more than the buffers hold).
    private(set) var remaining: Int

    /// A stream over `buffers` that starts `skipping` bytes in and stops after `limit` bytes.
    init(_ buffers: [GuestBuffer], skipping: Int = 0, limit: Int = .max) {
        self.buffers = buffers
        let total = buffers.reduce(0) { $0 + Int($1.length) }   // each <= UInt32.max, count <= 32768
        let skip = min(max(0, skipping), total)
        remaining = min(max(0, limit), total - skip)
        var toSkip = skip
        while toSkip > 0, bufferIndex < buffers.count {
            let left = Int(buffers[bufferIndex].length - offsetInBuffer)
            if toSkip < left {
                offsetInBuffer += UInt32(toSkip)
                toSkip = 0
            } else {
                toSkip -= left
                bufferIndex += 1
                offsetInBuffer = 0
            }
        }
    }

    /// The next contiguous piece of guest memory, at most `maxBytes` long.
    private mutating func nextPiece(maxBytes: Int) -> (address: GuestAddress, count: Int)? {
        while remaining > 0, maxBytes > 0, bufferIndex < buffers.count {
            let buffer = buffers[bufferIndex]
            let left = Int(buffer.length - offsetInBuffer)
            guard left > 0 else {
                bufferIndex += 1
                offsetInBuffer = 0
                continue
            }
            let count = min(left, maxBytes, remaining)
            // The walk checked that the whole buffer lies inside guest RAM, so this cannot overflow.
            let address = GuestAddress(buffer.address.raw + UInt64(offsetInBuffer))
            offsetInBuffer += UInt32(count)
            remaining -= count
            return (address, count)
        }
        return nil
    }

    /// Fills `destination` from the stream; returns the bytes copied (short only at the end).
    mutating func gather(into destination: UnsafeMutableRawBufferPointer, from memory: GuestMemory) throws(VirtqueueError) -> Int {
        var filled = 0
        while filled < destination.count, let piece = nextPiece(maxBytes: destination.count - filled) {
            let slice = UnsafeMutableRawBufferPointer(rebasing: destination[filled ..< filled + piece.count])
            try ringAccess { try memory.read(into: slice, from: piece.address) }
            filled += piece.count
        }
        return filled
    }

    /// Writes `source` into the stream; returns the bytes copied (short only at the end).
    mutating func scatter(_ source: UnsafeRawBufferPointer, to memory: GuestMemory) throws(VirtqueueError) -> Int {
        var copied = 0
        while copied < source.count, let piece = nextPiece(maxBytes: source.count - copied) {
            let slice = UnsafeRawBufferPointer(rebasing: source[copied ..< copied + piece.count])
            try ringAccess { try memory.write(slice, to: piece.address) }
            copied += piece.count
        }
        return copied
    }
}
