import CZlib
import GuestMemory

/// One CRC-32 per 4 KiB page of guest RAM, for a migration's "verify".
enum PageChecksums {
    static func compute(_ memory: GuestMemory) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(Int(memory.totalSize / 4096) * 4)
        for bytes in memory.withRegionBytes({ _, bytes in bytes }) {
            for page in stride(from: 0, to: bytes.count, by: 4096) {
                let crc = UInt32(truncatingIfNeeded: crc32(0, (bytes.baseAddress! + page).assumingMemoryBound(to: Bytef.self), 4096))
                withUnsafeBytes(of: crc.littleEndian) { result += $0 }
            }
        }
        return result
    }

    /// The guest-physical addresses of the pages whose checksum differs.
    static func mismatches(_ payload: UnsafeRawBufferPointer, memory: GuestMemory) throws -> [UInt64] {
        guard UInt64(payload.count) == memory.totalSize / 4096 * 4 else {
            throw MigrationError.corrupt("page checksums for \(payload.count / 4) pages; RAM has \(memory.totalSize / 4096)")
        }
        var result: [UInt64] = []
        var index = 0
        for (region, bytes) in zip(memory.regions, memory.withRegionBytes({ _, bytes in bytes })) {
            for page in stride(from: 0, to: bytes.count, by: 4096) {
                let crc = UInt32(truncatingIfNeeded: crc32(0, (bytes.baseAddress! + page).assumingMemoryBound(to: Bytef.self), 4096))
                if crc != MigrationChannel.get(payload, index * 4) as UInt32 { result.append(region.start.raw + UInt64(page)) }
                index += 1
            }
        }
        return result
    }
}
