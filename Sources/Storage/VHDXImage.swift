/// Hyper-V's VHDX (MS-VHDX 2.0), read-only, for `vireo img convert` and `img info`: dynamic and
/// fixed disks, 512-byte or 4 KiB logical sectors. Layout, all little-endian:
///
/// - at 0: the file identifier ("vhdxfile"); at 64 KiB and 128 KiB two headers ("head", CRC-32C,
///   a sequence number: the valid one with the higher number is current), naming the log;
/// - at 192 KiB and 256 KiB two copies of the region table ("regi", CRC-32C) locating the block
///   allocation table (BAT) and the metadata region;
/// - metadata ("metadata"): block size and whether the disk has a parent, virtual size, logical
///   sector size;
/// - the BAT: one 64-bit entry per payload block (state in bits 0-2, file offset in MiB in bits
///   20-63), with a sector-bitmap entry after every `chunkRatio` of them.
///
/// Differencing disks (a parent) and files whose log still holds writes to replay are refused
/// with what to do; every offset and size from the file is checked before it is used.
final class VHDXImage: ForeignImageBase, ExtentMapping, @unchecked Sendable {
    private var blockSize: UInt64 = 0
    /// Per payload block: its file offset, or 0 when it reads as zeros (offset 0 is the file
    /// identifier, never a block). 8 bytes a block: 512 MiB for 64 TiB in 1 MiB blocks, as the BAT.
    private var blocks: [UInt64] = []

    static let identifier = Array("vhdxfile".utf8)
    private static let headerOffsets: [UInt64] = [64 << 10, 128 << 10]
    private static let regionTableOffsets: [UInt64] = [192 << 10, 256 << 10]
    private static let batGUID = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
    private static let metadataGUID = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    private static let fileParametersGUID = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
    private static let virtualDiskSizeGUID = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
    private static let logicalSectorSizeGUID = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
    /// Payload block states: present (data in the file); the rest read as zeros in a disk without
    /// a parent, except partially present, which only a differencing disk has.
    private static let fullyPresent: UInt64 = 6, partiallyPresent: UInt64 = 7

    init(file: PosixFile, path: String) throws {
        try super.init(file: file, path: path, format: "vhdx")
        guard try bytes(at: 0, count: 8, what: "file identifier") == Self.identifier else { throw corrupt("no VHDX file identifier") }

        // The current header: the valid one with the higher sequence number.
        var current: (sequence: UInt64, bytes: [UInt8])?
        for offset in Self.headerOffsets {
            let header = try bytes(at: offset, count: 4096, what: "header")
            guard header.starts(with: Array("head".utf8)), Self.checksumHolds(header), header.le16(66) == 1 else { continue }
            let sequence = header.le64(8)
            if current == nil || sequence > current!.sequence { current = (sequence, header) }
        }
        guard let header = current?.bytes else { throw corrupt("neither header is valid (signature, CRC-32C or version)") }
        if header[48..<64].contains(where: { $0 != 0 }) {
            throw StorageError.foreignFormat(path: path, format: "VHDX with writes still in its log (not closed cleanly: open it once with Hyper-V or 'qemu-img check -r all' to replay the log, then convert)")
        }

        // The region table (the first valid copy) must name the BAT and the metadata.
        var regions: [[UInt8]: (offset: UInt64, length: UInt64)]?
        for offset in Self.regionTableOffsets {
            let table = try bytes(at: offset, count: 64 << 10, what: "region table")
            guard table.starts(with: Array("regi".utf8)), Self.checksumHolds(table) else { continue }
            let count = Int(table.le32(8))
            guard count <= 2047 else { throw corrupt("region table with \(count) entries (at most 2047)") }
            var found: [[UInt8]: (UInt64, UInt64)] = [:]
            for index in 0..<count {
                let entry = Array(table[(16 + 32 * index)..<(48 + 32 * index)])
                let id = Array(entry[0..<16]), fileOffset = entry.le64(16), length = UInt64(entry.le32(24))
                let required = entry.le32(28) & 1 != 0
                if id != Self.batGUID && id != Self.metadataGUID && required {
                    throw StorageError.foreignFormat(path: path, format: "VHDX with a required region Vireo does not know (\(Self.text(id)))")
                }
                guard fileOffset % (1 << 20) == 0, length % (1 << 20) == 0, rangeFits(fileOffset, length, within: fileSize) else {
                    throw corrupt("region \(Self.text(id)) at \(fileOffset) (+\(length)) is not MiB-aligned inside the file")
                }
                found[id] = (fileOffset, length)
            }
            regions = found
            break
        }
        guard let regions else { throw corrupt("neither region table is valid (signature or CRC-32C)") }
        guard let bat = regions[Self.batGUID], let metadata = regions[Self.metadataGUID] else {
            throw corrupt("the region table names no block allocation table or no metadata region")
        }

        // Metadata: block size, parent, virtual size, logical sector size.
        let items = try Self.metadataItems(try bytes(at: metadata.offset, count: Int(min(metadata.length, 1 << 20)), what: "metadata region"),
                                           regionLength: metadata.length, corrupt: corrupt)
        func item(_ id: [UInt8], _ length: Int, _ what: String) throws -> [UInt8] {
            guard let (offset, itemLength) = items[id], itemLength >= length else { throw corrupt("metadata has no \(what)") }
            return try bytes(at: metadata.offset + offset, count: length, what: what)
        }
        let parameters = try item(Self.fileParametersGUID, 8, "file parameters")
        blockSize = UInt64(parameters.le32(0))
        if parameters.le32(4) & 2 != 0 {
            throw StorageError.foreignFormat(path: path, format: "differencing VHDX (a child of another VHDX: convert the whole chain with qemu-img)")
        }
        guard blockSize >= 1 << 20, blockSize <= 256 << 20, blockSize.nonzeroBitCount == 1 else {
            throw corrupt("block size \(blockSize) is not a power of two from 1 MiB to 256 MiB")
        }
        size = try item(Self.virtualDiskSizeGUID, 8, "virtual disk size").le64(0)
        let sectorSize = UInt64(try item(Self.logicalSectorSizeGUID, 4, "logical sector size").le32(0))
        guard sectorSize == 512 || sectorSize == 4096 else { throw corrupt("logical sector size \(sectorSize) (512 or 4096)") }
        guard size > 0, size % sectorSize == 0, size <= 64 << 40 else {
            throw corrupt("virtual size \(size) is not a whole number of \(sectorSize)-byte sectors up to 64 TiB")
        }

        // The BAT: payload entries, with a sector bitmap entry after each chunk of them.
        let chunkRatio = (UInt64(1) << 23) * sectorSize / blockSize
        let payloadBlocks = (size + blockSize - 1) / blockSize
        let entries = payloadBlocks + (payloadBlocks - 1) / chunkRatio
        guard entries * 8 <= bat.length else { throw corrupt("the BAT (\(bat.length) bytes) cannot hold \(entries) entries") }
        let raw = try bytes(at: bat.offset, count: Int(entries * 8), what: "block allocation table")
        blocks = try (0..<payloadBlocks).map { block in
            let entry = raw.le64(Int((block + block / chunkRatio) * 8))
            switch entry & 7 {
            case Self.fullyPresent:
                let offset = (entry >> 20) << 20
                guard rangeFits(offset, blockSize, within: fileSize) || (block == payloadBlocks - 1 && rangeFits(offset, size - block * blockSize, within: fileSize)) else {
                    throw corrupt("block \(block) at offset \(offset) lies past the end of the file")
                }
                guard offset > 0 else { throw corrupt("block \(block) at offset 0") }
                return offset
            case Self.partiallyPresent: throw corrupt("block \(block) is partially present, which only a differencing disk may be")
            default: return 0
            }
        }
    }

    /// Metadata item id → (offset in the region, length), checked against the region.
    private static func metadataItems(_ bytes: [UInt8], regionLength: UInt64, corrupt: (String) -> StorageError) throws -> [[UInt8]: (UInt64, UInt64)] {
        guard bytes.count >= 32, bytes.starts(with: Array("metadata".utf8)) else { throw corrupt("no metadata table signature") }
        let count = Int(bytes.le16(10))
        guard count <= 2047, 32 + 32 * count <= bytes.count else { throw corrupt("metadata table with \(count) entries") }
        var items: [[UInt8]: (UInt64, UInt64)] = [:]
        for index in 0..<count {
            let entry = Array(bytes[(32 + 32 * index)..<(64 + 32 * index)])
            let offset = UInt64(entry.le32(16)), length = UInt64(entry.le32(20))
            guard length == 0 || (offset >= 64 << 10 && rangeFits(offset, length, within: regionLength)) else {
                throw corrupt("metadata item \(text(Array(entry[0..<16]))) at \(offset) (+\(length)) lies outside its region")
            }
            items[Array(entry[0..<16])] = (offset, length)
        }
        return items
    }

    /// A header or region table's CRC-32C (Castagnoli), computed with its own field as zero.
    private static func checksumHolds(_ bytes: [UInt8]) -> Bool {
        var zeroed = bytes
        zeroed.replaceSubrange(4..<8, with: [0, 0, 0, 0])
        return crc32c(zeroed) == bytes.le32(4)
    }

    private static let crcTable: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 != 0 ? (value >> 1) ^ 0x82F6_3B78 : value >> 1 }
        return value
    }

    static func crc32c(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = crcTable[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return ~crc
    }

    /// A GUID as stored on disk: the first three fields little-endian, the rest as written.
    static func guid(_ text: String) -> [UInt8] {
        let hex = Array(text.utf8.filter { $0 != UInt8(ascii: "-") })
        let bytes = stride(from: 0, to: 32, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        return Array(bytes[0..<4].reversed()) + Array(bytes[4..<6].reversed()) + Array(bytes[6..<8].reversed()) + Array(bytes[8...])
    }

    private static func text(_ guid: [UInt8]) -> String {
        let ordered = Array(guid[0..<4].reversed()) + Array(guid[4..<6].reversed()) + Array(guid[6..<8].reversed()) + Array(guid[8...])
        let hex = ordered.map { ($0 < 16 ? "0" : "") + String($0, radix: 16, uppercase: true) }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }

    /// Where guest `offset` lives in the file (nil: reads as zero) and how far that holds.
    private func locate(_ offset: UInt64) -> (host: UInt64?, run: UInt64) {
        let block = offset / blockSize, within = offset % blockSize
        let run = min(blockSize - within, size - offset)
        let offset = blocks[Int(block)]
        return (offset == 0 ? nil : offset + within, run)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try read(into: buffer, at: offset, locate: locate)
    }

    func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus {
        let (host, run) = locate(offset)
        return ExtentStatus(length: min(run, maxLength), kind: host.map { .data(hostOffset: $0, compressed: false) } ?? .zero)
    }
}
