/// Limits that keep hostile headers from driving huge allocations (qemu uses the same values).
enum QCOW2Limits {
    static let maxL1Bytes: UInt64 = 32 << 20
    static let maxRefcountTableBytes: UInt64 = 8 << 20
    static let maxSnapshots: UInt32 = 65536
    static let maxSnapshotTableBytes: UInt64 = 64 << 20
    static let maxVirtualSize: UInt64 = 1 << 56
    static let metadataCacheBytes = 4 << 20
}

/// All mutable qcow2 state; used only under `QCOW2Image`'s lock.
final class QCOW2Engine {
    let file: PosixFile
    let path: String
    var header: QCOW2Header
    let g: QCOW2Geometry
    let readOnly: Bool
    var backing: (any BlockDevice)?
    var l1: [UInt64]
    var refcountTable: [UInt64]
    var l2Cache: TableCache
    var refcountCache: TableCache
    var fileSize: UInt64
    var nextFreeCluster: UInt64
    /// Scratch space reused by every request, so the hot path allocates nothing.
    var clusterBuffer: [UInt8]
    var compressedInput: [UInt8]
    var decompressed: [UInt8]
    var decompressedHost: UInt64?
    /// Partly filled host cluster that `convert -c` packs compressed clusters into.
    var compressedCursor: UInt64?
    /// Lazy refcounts: the dirty bit is on disk while allocations are not yet flushed.
    var dirtyMarked = false
    /// Clusters whose refcount of 1 is already durable but which nothing references yet (see allocateCluster).
    var reserved: Range<UInt64> = 0..<0
    /// The fsyncs that make refcounts durable before the references to them (each allocation
    /// batch, each new L2 table). Off only for a file no one can use before its final flush
    /// (`QCOW2Image.skipOrderingSyncs`, convert's fresh output).
    var orderingSyncs = true
    /// References dropped in memory whose refcount decrement waits until the new metadata is durable.
    var pendingReleases: [ClusterMapping] = []

    /// `allowFlagged` opens dirty or corrupt images writable, for repair only. `metadataOnly`: the
    /// open changes no data the guest sees (repair, a new backing name), so persistent bitmaps
    /// stay valid; any other write open marks them stale (see QCOW2Bitmaps.swift).
    init(file: PosixFile, readOnly: Bool, allowFlagged: Bool = false, metadataOnly: Bool = false) throws {
        self.file = file
        self.path = file.path
        self.readOnly = readOnly
        fileSize = try file.size()
        var head = [UInt8](repeating: 0, count: Int(min(fileSize, 1 << 21)))
        try head.withUnsafeMutableBytes { try file.readExactly(into: $0, at: 0) }
        var parsed = try QCOW2Header.parse(head, path: file.path)
        if UInt64(head.count) > parsed.clusterSize {
            // Extensions and the backing name must lie inside the first cluster: parse that alone.
            head.removeLast(head.count - Int(parsed.clusterSize))
            parsed = try QCOW2Header.parse(head, path: file.path)
        }
        header = parsed
        g = QCOW2Geometry(header: parsed)
        let metadataSlots = QCOW2Limits.metadataCacheBytes / Int(g.clusterSize)
        l2Cache = TableCache(capacity: min(1024, max(16, metadataSlots)), tableSize: Int(g.clusterSize))
        refcountCache = TableCache(capacity: min(256, max(8, metadataSlots / 4)), tableSize: Int(g.clusterSize))
        clusterBuffer = [UInt8](repeating: 0, count: Int(g.clusterSize))
        compressedInput = [UInt8](repeating: 0, count: Int(2 * g.clusterSize + 512))
        decompressed = [UInt8](repeating: 0, count: Int(g.clusterSize))
        nextFreeCluster = (fileSize + g.clusterMask) >> g.clusterBits
        l1 = []
        refcountTable = []
        try validateLayout()
        l1 = try loadTable(offset: header.l1TableOffset, entries: UInt64(header.l1Size), what: "L1 table")
        refcountTable = try loadTable(offset: header.refcountTableOffset,
                                      entries: UInt64(header.refcountTableClusters) * g.clusterSize / 8,
                                      what: "refcount table")
        try validateRefcountTable()
        if !readOnly { try prepareForWriting(allowFlagged: allowFlagged, metadataOnly: metadataOnly) }
    }

    /// Closing hands back unused reserved clusters and applies deferred decrements (a crash instead leaves leaks).
    deinit {
        guard !readOnly else { return }
        try? flush()
        try? releaseReservation()
        try? file.sync()
    }

    func invalid(_ what: String, _ offset: UInt64) -> QCOW2Error {
        .corruptMetadata(path: path, what: what, offset: offset)
    }

    /// Header-level checks: sizes bounded, tables aligned, inside the file and clear of each other.
    private func validateLayout() throws {
        guard header.size <= QCOW2Limits.maxVirtualSize else {
            throw QCOW2Error.limitExceeded(path: path, what: "virtual size \(header.size) exceeds the 64 PiB limit")
        }
        guard UInt64(header.l1Size) * 8 <= QCOW2Limits.maxL1Bytes else {
            throw QCOW2Error.limitExceeded(path: path, what: "L1 table of \(header.l1Size) entries exceeds 32 MiB")
        }
        guard UInt64(header.l1Size) >= g.l1EntriesNeeded(forSize: header.size) else {
            throw QCOW2Error.invalidHeader(path: path, reason: "L1 table (\(header.l1Size) entries) too small for virtual size \(header.size)")
        }
        let refcountBytes = UInt64(header.refcountTableClusters) * g.clusterSize
        guard refcountBytes <= QCOW2Limits.maxRefcountTableBytes else {
            throw QCOW2Error.limitExceeded(path: path, what: "refcount table of \(header.refcountTableClusters) clusters exceeds 8 MiB")
        }
        guard header.refcountTableClusters > 0 else {
            throw QCOW2Error.invalidHeader(path: path, reason: "refcount table is empty")
        }
        try checkTableRange(header.l1TableOffset, UInt64(header.l1Size) * 8, what: "L1 table")
        try checkTableRange(header.refcountTableOffset, refcountBytes, what: "refcount table")
        if rangesOverlap(header.l1TableOffset, UInt64(header.l1Size) * 8, header.refcountTableOffset, refcountBytes) {
            throw invalid("L1 table overlaps the refcount table", header.l1TableOffset)
        }
        guard header.snapshotCount <= QCOW2Limits.maxSnapshots else {
            throw QCOW2Error.limitExceeded(path: path, what: "\(header.snapshotCount) snapshots exceed the limit of 65536")
        }
        if header.snapshotCount > 0 {
            try checkTableRange(header.snapshotsOffset, 40, what: "snapshot table")
        }
    }

    func rangesOverlap(_ a: UInt64, _ aLength: UInt64, _ b: UInt64, _ bLength: UInt64) -> Bool {
        guard aLength > 0, bLength > 0 else { return false }
        return a < b &+ bLength && b < a &+ aLength
    }

    /// A table must be cluster aligned, start after the header cluster and end inside the file.
    func checkTableRange(_ offset: UInt64, _ length: UInt64, what: String) throws {
        guard length > 0 else { return }
        guard g.isAligned(offset) else { throw invalid("\(what) is not cluster aligned", offset) }
        guard offset >= g.clusterSize else { throw invalid("\(what) points into the image header", offset) }
        guard rangeFits(offset, length, within: fileSize) else {
            throw invalid("\(what) (\(length) bytes) runs past the end of the file (\(fileSize) bytes)", offset)
        }
    }

    func loadTable(offset: UInt64, entries: UInt64, what: String) throws -> [UInt64] {
        guard entries > 0 else { return [] }
        var raw = [UInt8](repeating: 0, count: Int(entries * 8))
        try raw.withUnsafeMutableBytes { try file.readExactly(into: $0, at: offset) }
        return (0..<Int(entries)).map { raw.be64($0 * 8) }
    }

    /// Refcount blocks must be valid clusters that are not the header, the L1 or the refcount table.
    private func validateRefcountTable() throws {
        let tableBytes = UInt64(header.refcountTableClusters) * g.clusterSize
        for (index, entry) in refcountTable.enumerated() where entry != 0 {
            let block = entry & ~UInt64(511)
            try checkMetadataCluster(block, what: "refcount block \(index)")
            if rangesOverlap(block, g.clusterSize, header.refcountTableOffset, tableBytes) {
                throw invalid("refcount block \(index) overlaps the refcount table", block)
            }
        }
    }

    /// Validates a one-cluster metadata table offset (L2 table or refcount block).
    func checkMetadataCluster(_ offset: UInt64, what: String) throws {
        try checkTableRange(offset, g.clusterSize, what: what)
        if rangesOverlap(offset, g.clusterSize, header.l1TableOffset, UInt64(header.l1Size) * 8) {
            throw invalid("\(what) overlaps the L1 table", offset)
        }
    }

    /// Loads the L2 table at `offset` into the cache and returns its slot.
    func l2Slot(_ offset: UInt64) throws -> Int {
        if let slot = l2Cache.slot(for: offset) { return slot }
        try checkMetadataCluster(offset, what: "L2 table")
        if rangesOverlap(offset, g.clusterSize, header.refcountTableOffset, UInt64(header.refcountTableClusters) * g.clusterSize) {
            throw invalid("L2 table overlaps the refcount table", offset)
        }
        let slot = l2Cache.claimSlot(for: offset)
        do {
            try l2Cache.tables[slot].withUnsafeMutableBytes { try file.readExactly(into: $0, at: offset) }
        } catch {
            l2Cache.invalidate(offset)
            throw error
        }
        return slot
    }

    /// The mapping of guest cluster `guestCluster` in the active L1 table.
    func lookup(_ guestCluster: UInt64) throws -> ClusterMapping {
        let l1Index = guestCluster / g.l2Entries
        guard l1Index < UInt64(l1.count) else { return .unallocated }
        let l2Offset = l1[Int(l1Index)] & QCOW2Geometry.offsetMask
        guard l2Offset != 0 else { return .unallocated }
        let slot = try l2Slot(l2Offset)
        let at = Int(guestCluster % g.l2Entries) * g.l2EntryBytes
        let entry = l2Cache.tables[slot].be64(at)
        let bitmap = g.extendedL2 ? l2Cache.tables[slot].be64(at + 8) : 0
        return try g.decode(entry, bitmap: bitmap, version: header.version, path: path, fileSize: fileSize)
    }

    /// With lazy refcounts (compat bit 0), the dirty bit is made durable before the first allocation
    /// after a flush, so after a power loss the next open rebuilds refcounts whatever order pages hit the disk.
    func markDirtyIfLazy() throws {
        guard !dirtyMarked, header.version == 3,
              header.compatibleFeatures & QCOW2Header.Compatible.lazyRefcounts != 0 else { return }
        header.incompatibleFeatures |= QCOW2Header.Incompatible.dirty
        try writeHeaderField(at: 72, header.incompatibleFeatures.bigEndianBytes)
        try file.sync()
        dirtyMarked = true
    }

    /// fsync, then apply deferred refcount decrements (their replacements are now durable); then, if
    /// the dirty bit was set for lazy refcounts, clear it (durably).
    func flush() throws {
        try file.sync()
        if !pendingReleases.isEmpty {
            let releases = pendingReleases
            pendingReleases.removeAll(keepingCapacity: true)
            for mapping in releases { try releaseReference(of: mapping) }
            try file.sync()
        }
        guard dirtyMarked else { return }
        header.incompatibleFeatures &= ~QCOW2Header.Incompatible.dirty
        try writeHeaderField(at: 72, header.incompatibleFeatures.bigEndianBytes)
        try file.sync()
        dirtyMarked = false
    }

    /// Writes header bytes [at, at+bytes.count) in place; small enough to land atomically in one sector.
    func writeHeaderField(at offset: Int, _ bytes: [UInt8]) throws {
        try file.write(bytes, at: UInt64(offset))
    }

    /// A read-write open refuses images qemu would refuse and clears autoclear bits we do not
    /// maintain: all of them, except the bitmaps bit for an open that changes no guest data.
    private func prepareForWriting(allowFlagged: Bool, metadataOnly: Bool) throws {
        if header.incompatibleFeatures & QCOW2Header.Incompatible.corrupt != 0 && !allowFlagged {
            throw QCOW2Error.markedCorrupt(path: path)
        }
        if header.incompatibleFeatures & QCOW2Header.Incompatible.dirty != 0 && !allowFlagged {
            // Lazy refcounts: the refcounts may be stale, so rebuild them before any allocation (as qemu does).
            let result = try repair(mode: .all)
            guard result.corruptions == 0 else { throw QCOW2Error.markedDirty(path: path) }
        }
        let kept = metadataOnly ? header.autoclearFeatures & QCOW2Header.Autoclear.bitmaps : 0
        if header.version == 3 && header.autoclearFeatures != kept {
            header.autoclearFeatures = kept
            try writeHeaderField(at: 88, kept.bigEndianBytes)
        }
    }
}
