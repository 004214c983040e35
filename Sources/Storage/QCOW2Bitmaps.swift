/// Persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps"): what incremental backups of a
/// QEMU image are made from. Vireo reads them so that `check` counts their clusters as used (and
/// repair never frees them) and `info` lists them. It does not maintain them: opening an image to
/// change what the guest sees clears the bitmaps autoclear bit, which tells QEMU the bitmaps are
/// stale (exactly what an older QEMU does), so a backup never trusts a bitmap that missed writes.
public struct QCOW2Bitmap: Equatable, Sendable {
    public enum Flag {
        /// Not saved correctly: may be inconsistent.
        public static let inUse: UInt32 = 1 << 0
        /// Enabled: must track every write.
        public static let auto: UInt32 = 1 << 1
        public static let extraDataCompatible: UInt32 = 1 << 2
        static let known: UInt32 = 0x7
    }

    public var name: String
    public var flags: UInt32
    public var type: UInt8
    public var granularityBits: UInt8
    public var tableOffset: UInt64
    public var tableSize: UInt32

    public var granularity: UInt64 { 1 << UInt64(granularityBits) }

    /// The flags as qemu-img info names them.
    public var flagNames: [String] {
        (flags & Flag.inUse != 0 ? ["in-use"] : []) + (flags & Flag.auto != 0 ? ["auto"] : [])
    }
}

/// The bitmaps header extension's fields.
struct QCOW2BitmapsExtension: Equatable, Sendable {
    static let length = 24
    var count: UInt32
    var directorySize: UInt64
    var directoryOffset: UInt64

    init(_ data: [UInt8], path: String) throws {
        guard data.count >= Self.length else {
            throw QCOW2Error.invalidHeader(path: path, reason: "bitmaps extension of \(data.count) bytes, not \(Self.length)")
        }
        count = data.be32(0)
        guard data.be32(4) == 0 else { throw QCOW2Error.invalidHeader(path: path, reason: "bitmaps extension: reserved field is not zero") }
        directorySize = data.be64(8)
        directoryOffset = data.be64(16)
    }
}

/// Limits against hostile directories (QEMU's values).
enum QCOW2BitmapLimits {
    static let maxBitmaps: UInt32 = 65535
    static let maxDirectoryBytes: UInt64 = 64 << 20
    static let maxTableEntries: UInt32 = 0x800_0000
    static let maxNameBytes = 1023
    static let granularityBits: ClosedRange<UInt8> = 9...31
}

extension QCOW2Engine {
    /// The bitmaps QEMU would consider: none when the extension is absent, or when the autoclear
    /// bit says a program that does not maintain them has written the image since (they are
    /// stale then, and their clusters are leaks, as `qemu-img check` reports them).
    var bitmapsExtension: QCOW2BitmapsExtension? {
        guard header.version == 3, header.autoclearFeatures & QCOW2Header.Autoclear.bitmaps != 0 else { return nil }
        return header.bitmaps
    }

    /// Reads and validates the bitmap directory (bounds, names, granularity, table sizes).
    func readBitmaps() throws -> [QCOW2Bitmap] {
        guard let ext = bitmapsExtension, ext.count > 0 else { return [] }
        func bad(_ reason: String) -> QCOW2Error { invalid("bitmap directory: \(reason)", ext.directoryOffset) }
        guard ext.count <= QCOW2BitmapLimits.maxBitmaps else { throw bad("\(ext.count) bitmaps exceed the limit of 65535") }
        guard ext.directorySize <= QCOW2BitmapLimits.maxDirectoryBytes else { throw bad("\(ext.directorySize) bytes exceed 64 MiB") }
        guard ext.directorySize >= 24 * UInt64(ext.count) else { throw bad("\(ext.directorySize) bytes cannot hold \(ext.count) entries") }
        try checkTableRange(ext.directoryOffset, ext.directorySize, what: "bitmap directory")
        var directory = [UInt8](repeating: 0, count: Int(ext.directorySize))
        try directory.withUnsafeMutableBytes { try file.readExactly(into: $0, at: ext.directoryOffset) }

        // Bitmap data: one bit per granule of the virtual disk, in clusters.
        var bitmaps: [QCOW2Bitmap] = []
        var names: Set<String> = []
        var at = 0
        for index in 0..<Int(ext.count) {
            guard at + 24 <= directory.count else { throw bad("entry \(index) runs past the directory") }
            let nameSize = Int(directory.be16(at + 18)), extraSize = Int(directory.be32(at + 20))
            let entryEnd = at + 24 + extraSize + nameSize
            guard extraSize <= directory.count, entryEnd <= directory.count else { throw bad("entry \(index) runs past the directory") }
            guard nameSize > 0, nameSize <= QCOW2BitmapLimits.maxNameBytes else { throw bad("entry \(index): name of \(nameSize) bytes") }
            let bitmap = QCOW2Bitmap(name: String(decoding: directory[(at + 24 + extraSize)..<entryEnd], as: UTF8.self),
                                     flags: directory.be32(at + 12), type: directory[at + 16], granularityBits: directory[at + 17],
                                     tableOffset: directory.be64(at), tableSize: directory.be32(at + 8))
            let what = "bitmap '\(bitmap.name)'"
            guard bitmap.flags & ~QCOW2Bitmap.Flag.known == 0 else { throw bad("\(what) has reserved flags 0x\(String(bitmap.flags, radix: 16))") }
            guard bitmap.type == 1 else { throw bad("\(what) has type \(bitmap.type) (only 1, dirty tracking, is defined)") }
            guard QCOW2BitmapLimits.granularityBits.contains(bitmap.granularityBits) else {
                throw bad("\(what) has granularity bits \(bitmap.granularityBits), outside 9...31")
            }
            guard names.insert(bitmap.name).inserted else { throw bad("two bitmaps are named '\(bitmap.name)'") }
            let bits = (header.size + bitmap.granularity - 1) / bitmap.granularity
            let needed = ((bits + 7) / 8 + g.clusterMask) >> g.clusterBits
            guard bitmap.tableSize <= QCOW2BitmapLimits.maxTableEntries, UInt64(bitmap.tableSize) >= needed else {
                throw bad("\(what) has a table of \(bitmap.tableSize) entries; the disk's size needs \(needed)")
            }
            try checkTableRange(bitmap.tableOffset, UInt64(bitmap.tableSize) * 8, what: "\(what) table")
            bitmaps.append(bitmap)
            at = (entryEnd + 7) / 8 * 8
        }
        return bitmaps
    }

    /// Mask of a bitmap table entry's cluster offset (bits 9-55).
    static let bitmapEntryOffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00

    /// Every cluster the bitmaps use (directory, tables, data), for check's reference counts;
    /// `problem` gets what is malformed (a corruption, as qemu-img check counts it).
    func referenceBitmapClusters(_ reference: (UInt64, UInt64, String) -> Void, problem: (String) -> Void) {
        guard let ext = bitmapsExtension, ext.count > 0 else { return }
        let bitmaps: [QCOW2Bitmap]
        do {
            bitmaps = try readBitmaps()
        } catch {
            problem("ERROR bitmaps: \(error)")
            return
        }
        reference(ext.directoryOffset, ext.directorySize, "bitmap directory")
        for bitmap in bitmaps {
            reference(bitmap.tableOffset, UInt64(bitmap.tableSize) * 8, "bitmap table")
            let table: [UInt64]
            do {
                table = try loadTable(offset: bitmap.tableOffset, entries: UInt64(bitmap.tableSize), what: "bitmap table")
            } catch {
                problem("ERROR bitmap '\(bitmap.name)': \(error)")
                continue
            }
            for (index, entry) in table.enumerated() {
                let offset = entry & Self.bitmapEntryOffsetMask
                let reserved = entry & ~Self.bitmapEntryOffsetMask & ~(offset == 0 ? UInt64(1) : 0)
                if reserved != 0 || offset & g.clusterMask != 0 {
                    problem("ERROR bitmap '\(bitmap.name)': table entry \(index) (0x\(String(entry, radix: 16))) has reserved bits set or is unaligned")
                    continue
                }
                if offset != 0 { reference(offset, g.clusterSize, "bitmap data") }
            }
        }
    }
}

extension QCOW2Image {
    /// The image's persistent bitmaps as QEMU would see them (none when they are stale).
    public static func bitmaps(path: String, sharing: ImageSharing = .standard) throws -> [QCOW2Bitmap] {
        let engine = try QCOW2Engine(file: try PosixFile(path: path, mode: .readOnly, sharing: sharing), readOnly: true)
        return try engine.readBitmaps()
    }
}
