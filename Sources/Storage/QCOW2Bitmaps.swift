/// Persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps"): what incremental backups of a
/// QEMU image are made from. Vireo reads them so that `check` counts their clusters as used (and
/// repair never frees them) and `info` lists them, and `vireo img bitmap` adds, removes, clears,
/// enables and disables them in a closed image, as `qemu-img bitmap` does. It does not maintain
/// them while a VM writes: opening an image to change what the guest sees clears the bitmaps
/// autoclear bit, which tells QEMU the bitmaps are stale (exactly what an older QEMU does), so a
/// backup never trusts a bitmap that missed writes.
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
    /// Bytes of extra data in the directory entry (none that QEMU writes today).
    public var extraDataSize: UInt32 = 0

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
                                     tableOffset: directory.be64(at), tableSize: directory.be32(at + 8), extraDataSize: UInt32(extraSize))
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

/// What `vireo img bitmap` does to one bitmap (qemu-img bitmap's operations, less --merge).
public enum QCOW2BitmapChange: Equatable, Sendable {
    /// A new, empty bitmap; `granularity` nil: the cluster size (at least 4 KiB), as QEMU picks.
    case add(name: String, granularity: UInt64?, enabled: Bool)
    case remove(name: String)
    /// Every bit to zero (its data clusters are freed).
    case clear(name: String)
    case enable(name: String)
    case disable(name: String)
}

extension QCOW2Engine {
    /// Applies `change` to the bitmap directory: new tables and a new directory are written and
    /// made durable first, then the header points at them, then what they replaced is freed (a
    /// crash leaves leaks at worst, never a directory pointing at freed clusters).
    func changeBitmaps(_ change: QCOW2BitmapChange) throws {
        try requireWritable()
        guard header.version == 3 else {
            throw QCOW2Error.invalidOperation(path: path, reason: "persistent bitmaps need a version 3 (compat=1.1) image")
        }
        var bitmaps = try readBitmaps()
        if let foreign = bitmaps.first(where: { $0.extraDataSize != 0 }) {
            throw QCOW2Error.invalidOperation(path: path, reason: "bitmap '\(foreign.name)' has extra data Vireo does not keep; use qemu-img bitmap")
        }
        let old = bitmapsExtension
        var released: [(offset: UInt64, length: UInt64)] = []
        func index(_ name: String) throws -> Int {
            guard let found = bitmaps.firstIndex(where: { $0.name == name }) else {
                throw QCOW2Error.invalidOperation(path: path, reason: "bitmap '\(name)' not found")
            }
            return found
        }
        func usable(_ index: Int) throws {
            guard bitmaps[index].flags & QCOW2Bitmap.Flag.inUse == 0 else {
                throw QCOW2Error.invalidOperation(path: path, reason: "bitmap '\(bitmaps[index].name)' is marked in use (inconsistent): it can only be removed")
            }
        }
        /// The data clusters of a bitmap's table, each checked (aligned, no reserved bits, inside
        /// the file, referenced) before anything is freed on its word.
        func dataClusters(_ bitmap: QCOW2Bitmap) throws -> [UInt64] {
            try loadTable(offset: bitmap.tableOffset, entries: UInt64(bitmap.tableSize), what: "bitmap table")
                .enumerated().compactMap { index, entry -> UInt64? in
                    let offset = entry & Self.bitmapEntryOffsetMask
                    let reserved = entry & ~Self.bitmapEntryOffsetMask & ~(offset == 0 ? UInt64(1) : 0)
                    guard offset != 0 else { return nil }
                    guard reserved == 0, offset & g.clusterMask == 0, offset >= g.clusterSize,
                          rangeFits(offset, g.clusterSize, within: fileSize), try refcount(ofCluster: offset >> g.clusterBits) > 0 else {
                        throw invalid("bitmap '\(bitmap.name)': table entry \(index) (0x\(String(entry, radix: 16))) is not a valid data cluster; 'vireo img check' reports it", bitmap.tableOffset)
                    }
                    return offset
                }
        }
        func tableBytes(_ bitmap: QCOW2Bitmap) -> UInt64 { (UInt64(bitmap.tableSize) * 8 + g.clusterMask) & ~g.clusterMask }

        switch change {
        case let .add(name, granularity, enabled):
            guard !name.isEmpty, name.utf8.count <= QCOW2BitmapLimits.maxNameBytes else {
                throw QCOW2Error.invalidOperation(path: path, reason: "a bitmap name must have 1 to 1023 bytes")
            }
            guard !bitmaps.contains(where: { $0.name == name }) else {
                throw QCOW2Error.invalidOperation(path: path, reason: "bitmap '\(name)' already exists")
            }
            guard UInt32(bitmaps.count) < QCOW2BitmapLimits.maxBitmaps else {
                throw QCOW2Error.invalidOperation(path: path, reason: "the image already has 65535 bitmaps")
            }
            let chosen = granularity ?? max(4096, g.clusterSize)
            guard chosen.nonzeroBitCount == 1, QCOW2BitmapLimits.granularityBits.contains(UInt8(chosen.trailingZeroBitCount)) else {
                throw QCOW2Error.invalidOperation(path: path, reason: "granularity \(chosen) is not a power of two from 512 bytes to 2 GiB")
            }
            let bits = (header.size + chosen - 1) / chosen
            let entries = max(1, ((bits + 7) / 8 + g.clusterMask) >> g.clusterBits)
            // An empty bitmap: every table entry 0 (all zeros), no data clusters.
            let tableLength = (entries * 8 + g.clusterMask) & ~g.clusterMask
            let tableOffset = try allocateClusters(tableLength >> g.clusterBits)
            try file.write([UInt8](repeating: 0, count: Int(tableLength)), at: tableOffset)
            fileSize = max(fileSize, tableOffset + tableLength)
            bitmaps.append(QCOW2Bitmap(name: name, flags: enabled ? QCOW2Bitmap.Flag.auto : 0, type: 1,
                                       granularityBits: UInt8(chosen.trailingZeroBitCount), tableOffset: tableOffset,
                                       tableSize: UInt32(entries)))
        case let .remove(name):
            let found = try index(name)
            let bitmap = bitmaps.remove(at: found)
            released += try dataClusters(bitmap).map { ($0, g.clusterSize) }
            released.append((bitmap.tableOffset, tableBytes(bitmap)))
        case let .clear(name):
            let found = try index(name)
            try usable(found)
            // A new, empty table, so that the old one stays whole until the header moves on.
            let bitmap = bitmaps[found]
            let data = try dataClusters(bitmap)
            let tableOffset = try allocateClusters(tableBytes(bitmap) >> g.clusterBits)
            try file.write([UInt8](repeating: 0, count: Int(tableBytes(bitmap))), at: tableOffset)
            fileSize = max(fileSize, tableOffset + tableBytes(bitmap))
            released += data.map { ($0, g.clusterSize) }
            released.append((bitmap.tableOffset, tableBytes(bitmap)))
            bitmaps[found].tableOffset = tableOffset
        case let .enable(name):
            let found = try index(name)
            try usable(found)
            bitmaps[found].flags |= QCOW2Bitmap.Flag.auto
        case let .disable(name):
            let found = try index(name)
            try usable(found)
            bitmaps[found].flags &= ~QCOW2Bitmap.Flag.auto
        }

        // The new directory, in clusters of its own.
        var directory: [UInt8] = []
        for bitmap in bitmaps {
            var entry = [UInt8](repeating: 0, count: 24)
            entry.setBE64(0, bitmap.tableOffset)
            entry.setBE32(8, bitmap.tableSize)
            entry.setBE32(12, bitmap.flags)
            entry[16] = bitmap.type
            entry[17] = bitmap.granularityBits
            entry.setBE16(18, UInt16(bitmap.name.utf8.count))
            entry += Array(bitmap.name.utf8)
            entry += [UInt8](repeating: 0, count: (8 - entry.count % 8) % 8)
            directory += entry
        }
        var directoryOffset: UInt64 = 0
        if !directory.isEmpty {
            let length = (UInt64(directory.count) + g.clusterMask) & ~g.clusterMask
            directoryOffset = try allocateClusters(length >> g.clusterBits)
            try file.write(directory + [UInt8](repeating: 0, count: Int(length) - directory.count), at: directoryOffset)
            fileSize = max(fileSize, directoryOffset + length)
        }
        try file.sync()

        // The header: the extension (or none) and the autoclear bit that says the bitmaps are valid.
        var updated = header
        updated.otherExtensions.removeAll { $0.type == QCOW2Header.ExtensionType.bitmaps.rawValue }
        if bitmaps.isEmpty {
            updated.autoclearFeatures &= ~QCOW2Header.Autoclear.bitmaps
        } else {
            var data = [UInt8](repeating: 0, count: QCOW2BitmapsExtension.length)
            data.setBE32(0, UInt32(bitmaps.count))
            data.setBE64(8, UInt64(directory.count))
            data.setBE64(16, directoryOffset)
            updated.otherExtensions.append(QCOW2Header.RawExtension(type: QCOW2Header.ExtensionType.bitmaps.rawValue, data: data))
            updated.autoclearFeatures |= QCOW2Header.Autoclear.bitmaps
        }
        try rewriteHeader(updated)

        if let old, old.count > 0, old.directorySize > 0 {
            released.append((old.directoryOffset, (old.directorySize + g.clusterMask) & ~g.clusterMask))
        }
        for (offset, length) in released { try releaseClusters(at: offset, length: length) }
        try file.sync()
    }

    /// Writes `updated` as the header cluster's start (made durable) and makes it the current one.
    func rewriteHeader(_ updated: QCOW2Header) throws {
        let bytes = try updated.encode(path: path)
        var padded = bytes + [UInt8](repeating: 0, count: Int(min(g.clusterSize, 4096)) - min(bytes.count, Int(min(g.clusterSize, 4096))))
        if padded.count > Int(g.clusterSize) { padded.removeLast(padded.count - Int(g.clusterSize)) }
        try file.write(padded, at: 0)
        try file.sync()
        header = try QCOW2Header.parse(padded, path: path)
    }
}

extension QCOW2Image {
    /// Adds, removes, clears, enables or disables a persistent bitmap of a closed image.
    public static func changeBitmaps(path: String, _ change: QCOW2BitmapChange) throws {
        let engine = try QCOW2Engine(file: try PosixFile(path: path, mode: .readWrite), readOnly: false, metadataOnly: true)
        try engine.changeBitmaps(change)
    }

    /// The image's persistent bitmaps as QEMU would see them (none when they are stale).
    public static func bitmaps(path: String, sharing: ImageSharing = .standard) throws -> [QCOW2Bitmap] {
        let engine = try QCOW2Engine(file: try PosixFile(path: path, mode: .readOnly, sharing: sharing), readOnly: true)
        return try engine.readBitmaps()
    }
}
