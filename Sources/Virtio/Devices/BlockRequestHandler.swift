import GuestMemory
import Storage

/// Request types and status values of struct virtio_blk_req (§5.2.6).
enum BlockRequestType {
    static let read: UInt32 = 0
    static let write: UInt32 = 1
    static let flush: UInt32 = 4
    static let getID: UInt32 = 8
    static let discard: UInt32 = 11
    static let writeZeroes: UInt32 = 13
}

enum BlockStatus {
    static let ok: UInt8 = 0
    static let ioError: UInt8 = 1
    static let unsupported: UInt8 = 2
}

/// What one request did, for the used ring and the statistics.
struct BlockRequestOutcome: Equatable {
    enum Kind: Equatable { case read, write, flush, getID, discard, other }
    var kind: Kind
    var status: UInt8
    /// Data bytes moved between guest and disk.
    var bytes: UInt64 = 0
    /// Bytes written into the device-writable buffers, status byte included (§2.7.8).
    var usedLength: UInt32 = 1
}

/// Scratch memory owned by one device; only touched under that device's queue lock.
final class ScratchBuffer: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer

    init(count: Int) {
        bytes = .allocate(byteCount: count, alignment: 4096)
        bytes.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit { bytes.deallocate() }
}

/// Executes virtio-blk requests against a BlockDevice. Every guest value (sector, lengths,
/// segment counts) is checked with overflow-checked arithmetic before it reaches the disk.
struct BlockRequestHandler: Sendable {
    let backend: any BlockDevice
    let readOnly: Bool
    /// Capacity in bytes: the capacity field times 512, so never more than the backend holds.
    let capacityBytes: UInt64
    /// Largest data payload accepted in one request: seg_max * size_max.
    let maxDataBytes: UInt64
    let serial: [UInt8]
    let scratch: ScratchBuffer

    /// Serves one chain and writes its status byte. Throws MalformedRequest when the chain has no
    /// room for a header or a status (no in-band way to answer) and VirtqueueError on memory faults.
    func handle(_ chain: DescriptorChain, memory: GuestMemory, features: UInt64) throws -> BlockRequestOutcome {
        // §5.2.6: a request is a 16-byte device-readable header ... a device-writable status byte.
        guard chain.readableLength >= VirtioBlockLimits.headerBytes else {
            throw MalformedRequest("virtio-blk request header is \(chain.readableLength) bytes, expected 16")
        }
        guard let statusBuffer = chain.writable.last else {
            throw MalformedRequest("virtio-blk request has no device-writable status byte")
        }
        let header = try chain.readReadable(from: memory, maxBytes: VirtioBlockLimits.headerBytes)
        let type = littleEndian(header, 0, as: UInt32.self)
        let sector = littleEndian(header, 8, as: UInt64.self)
        let dataIn = Int(chain.writableLength) - 1
        let dataOut = Int(chain.readableLength) - VirtioBlockLimits.headerBytes

        var outcome: BlockRequestOutcome
        switch type {
        case BlockRequestType.read:
            outcome = try read(chain, sector: sector, length: dataIn, memory: memory)
        case BlockRequestType.write:
            outcome = try write(chain, sector: sector, length: dataOut, memory: memory, features: features)
        case BlockRequestType.flush:
            outcome = BlockRequestOutcome(kind: .flush, status: perform { try backend.flush() })
        case BlockRequestType.getID:
            var cursor = GuestBufferCursor(chain.writable, limit: dataIn)
            let written = try serial.withUnsafeBytes { bytes throws(VirtqueueError) in try cursor.scatter(bytes, to: memory) }
            outcome = BlockRequestOutcome(kind: .getID, status: BlockStatus.ok, usedLength: UInt32(written) + 1)
        case BlockRequestType.discard where features & VirtioBlockFeature.discard != 0,
             BlockRequestType.writeZeroes where features & VirtioBlockFeature.writeZeroes != 0:
            outcome = try discardOrZero(chain, zero: type == BlockRequestType.writeZeroes, length: dataOut, memory: memory)
        default:
            // §5.2.6.2: unknown types, and DISCARD/WRITE_ZEROES without their feature, are UNSUPP.
            outcome = BlockRequestOutcome(kind: .other, status: BlockStatus.unsupported)
        }
        // The status is the last byte of the last writable buffer (§5.2.6); the walk kept it in RAM.
        let statusAddress = GuestAddress(statusBuffer.address.raw + UInt64(statusBuffer.length) - 1)
        try ringAccess { try memory.write(outcome.status, at: statusAddress) }
        return outcome
    }

    /// The disk offset of `length` bytes at `sector`, or nil when any of it lies past the capacity.
    func byteOffset(sector: UInt64, length: UInt64) -> UInt64? {
        let (offset, overflow) = sector.multipliedReportingOverflow(by: VirtioBlockLimits.sectorSize)
        guard !overflow else { return nil }
        let (end, endOverflow) = offset.addingReportingOverflow(length)
        guard !endOverflow, end <= capacityBytes else { return nil }
        return offset
    }

    /// Checks shared by reads and writes: whole sectors, within the advertised size, on the disk.
    private func dataOffset(sector: UInt64, length: Int) -> UInt64? {
        guard length >= 0, UInt64(length) % VirtioBlockLimits.sectorSize == 0, UInt64(length) <= maxDataBytes else { return nil }
        return byteOffset(sector: sector, length: UInt64(length))
    }

    private func read(_ chain: DescriptorChain, sector: UInt64, length: Int, memory: GuestMemory) throws -> BlockRequestOutcome {
        guard var offset = dataOffset(sector: sector, length: length) else {
            return BlockRequestOutcome(kind: .read, status: BlockStatus.ioError)
        }
        var cursor = GuestBufferCursor(chain.writable, limit: length)
        var moved = 0
        while cursor.remaining > 0 {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[0 ..< min(cursor.remaining, scratch.bytes.count)])
            guard perform({ try backend.read(into: chunk, at: offset) }) == BlockStatus.ok else {
                return BlockRequestOutcome(kind: .read, status: BlockStatus.ioError, usedLength: UInt32(moved) + 1)
            }
            moved += try cursor.scatter(UnsafeRawBufferPointer(chunk), to: memory)
            offset += UInt64(chunk.count)
        }
        return BlockRequestOutcome(kind: .read, status: BlockStatus.ok, bytes: UInt64(moved), usedLength: UInt32(moved) + 1)
    }

    private func write(_ chain: DescriptorChain, sector: UInt64, length: Int, memory: GuestMemory,
                       features: UInt64) throws -> BlockRequestOutcome {
        // §5.2.6.2: a read-only device answers IOERR and writes nothing.
        guard !readOnly, var offset = dataOffset(sector: sector, length: length) else {
            return BlockRequestOutcome(kind: .write, status: BlockStatus.ioError)
        }
        var cursor = GuestBufferCursor(chain.readable, skipping: VirtioBlockLimits.headerBytes, limit: length)
        var moved = 0
        while cursor.remaining > 0 {
            let chunk = UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[0 ..< min(cursor.remaining, scratch.bytes.count)])
            let count = try cursor.gather(into: chunk, from: memory)
            let filled = UnsafeRawBufferPointer(rebasing: chunk[0 ..< count])
            guard perform({ try backend.write(filled, at: offset) }) == BlockStatus.ok else {
                return BlockRequestOutcome(kind: .write, status: BlockStatus.ioError)
            }
            moved += count
            offset += UInt64(count)
        }
        // §5.2.6.2: without a negotiated FLUSH the driver cannot ask for durability, so give
        // write-through semantics and sync before completing.
        if features & VirtioBlockFeature.flush == 0, perform({ try backend.flush() }) != BlockStatus.ok {
            return BlockRequestOutcome(kind: .write, status: BlockStatus.ioError)
        }
        return BlockRequestOutcome(kind: .write, status: BlockStatus.ok, bytes: UInt64(moved))
    }

    /// DISCARD and WRITE_ZEROES: a list of 16-byte ranges {le64 sector; le32 num_sectors; le32 flags}.
    private func discardOrZero(_ chain: DescriptorChain, zero: Bool, length: Int, memory: GuestMemory) throws -> BlockRequestOutcome {
        let segmentBytes = VirtioBlockLimits.discardSegmentBytes
        let segments = length / segmentBytes
        // Checked before reading, so the copy below is at most 16 * 16 bytes.
        guard !readOnly, length % segmentBytes == 0, segments >= 1, segments <= Int(VirtioBlockLimits.maxDiscardSegments) else {
            return BlockRequestOutcome(kind: .discard, status: BlockStatus.ioError)
        }
        let payload = try chain.readReadable(from: memory, maxBytes: VirtioBlockLimits.headerBytes + length)
        var ranges: [(offset: UInt64, length: UInt64)] = []
        for index in 0 ..< segments {
            let base = VirtioBlockLimits.headerBytes + index * segmentBytes
            let sector = littleEndian(payload, base, as: UInt64.self)
            let sectors = littleEndian(payload, base + 8, as: UInt32.self)
            let flags = littleEndian(payload, base + 12, as: UInt32.self)
            let unmap: UInt32 = 1
            // §5.2.6.2: unknown flags, and unmap on a discard, are UNSUPP.
            guard flags & ~unmap == 0, zero || flags & unmap == 0 else {
                return BlockRequestOutcome(kind: .discard, status: BlockStatus.unsupported)
            }
            let bytes = UInt64(sectors) * VirtioBlockLimits.sectorSize   // < 2^41: no overflow
            guard sectors <= VirtioBlockLimits.maxDiscardSectors, let offset = byteOffset(sector: sector, length: bytes) else {
                return BlockRequestOutcome(kind: .discard, status: BlockStatus.ioError)
            }
            ranges.append((offset, bytes))
        }
        // Every range was checked first, so a bad one never leaves the others half done.
        var total: UInt64 = 0
        for range in ranges {
            let status = perform {
                if zero { try backend.writeZeroes(at: range.offset, length: range.length) } else { try backend.discard(at: range.offset, length: range.length) }
            }
            guard status == BlockStatus.ok else { return BlockRequestOutcome(kind: .discard, status: status) }
            total += range.length
        }
        return BlockRequestOutcome(kind: .discard, status: BlockStatus.ok, bytes: total)
    }

    /// Runs a backend call; any host I/O error becomes VIRTIO_BLK_S_IOERR for the guest.
    private func perform(_ body: () throws -> Void) -> UInt8 {
        do {
            try body()
            return BlockStatus.ok
        } catch {
            return BlockStatus.ioError
        }
    }
}

/// Reads a little-endian integer from `bytes` at a layout offset the caller has length-checked.
func littleEndian<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, as type: T.Type) -> T {
    var value: T = 0
    for index in (0 ..< MemoryLayout<T>.size).reversed() where offset + index < bytes.count {
        value = value << 8 | T(bytes[offset + index])
    }
    return value
}
