/// What `check` found (and, with repair, fixed); counts follow qemu-img check.
public struct QCOW2CheckResult: Sendable, Equatable {
    public var corruptions = 0
    public var leaks = 0
    public var corruptionsFixed = 0
    public var leaksFixed = 0
    /// One line per problem, in qemu-img's wording where it has one.
    public var messages: [String] = []
    public var imageEndOffset: UInt64 = 0
    public var totalClusters: UInt64 = 0
    public var allocatedClusters: UInt64 = 0
    public var fragmentedClusters: UInt64 = 0
    public var compressedClusters: UInt64 = 0

    /// qemu-img check's exit status: 0 clean, 2 corruptions, 3 leaks only.
    public var exitCode: Int32 { corruptions > 0 ? 2 : leaks > 0 ? 3 : 0 }
}

public enum QCOW2RepairMode: String, Sendable { case none, leaks, all }

extension QCOW2Engine {
    static let maxCheckedClusters: UInt64 = 1 << 27

    /// Counts how often every host cluster is referenced by the header, tables and all L1 trees.
    func referenceCounts(into result: inout QCOW2CheckResult) throws -> [UInt32] {
        let fileClusters = (fileSize + g.clusterMask) >> g.clusterBits
        guard fileClusters <= Self.maxCheckedClusters else {
            throw QCOW2Error.limitExceeded(path: path, what: "image has too many clusters to check (\(fileClusters))")
        }
        var expected = [UInt32](repeating: 0, count: Int(fileClusters))
        var problems: [String] = []
        func reference(_ offset: UInt64, _ length: UInt64, _ what: String) {
            guard length > 0 else { return }
            let first = offset >> g.clusterBits, last = (offset + length - 1) >> g.clusterBits
            for cluster in first...last {
                guard cluster < fileClusters else {
                    problems.append("ERROR \(what) at offset 0x\(String(offset, radix: 16)) lies past the end of the image file")
                    return
                }
                expected[Int(cluster)] &+= 1
            }
        }
        reference(0, g.clusterSize, "header")
        reference(header.refcountTableOffset, UInt64(header.refcountTableClusters) * g.clusterSize, "refcount table")
        for (index, entry) in refcountTable.enumerated() where entry != 0 {
            if entry & 511 != 0 { problems.append("ERROR refcount table entry \(index) has reserved bits set") }
            reference(entry & ~UInt64(511), g.clusterSize, "refcount block \(index)")
        }
        var trees: [[UInt64]] = [l1]
        reference(header.l1TableOffset, UInt64(l1.count) * 8, "L1 table")
        let snapshots = try readSnapshots()
        if header.snapshotCount > 0 {
            reference(header.snapshotsOffset, UInt64(Self.encodeSnapshots(snapshots).count), "snapshot table")
        }
        for snapshot in snapshots {
            reference(snapshot.l1TableOffset, UInt64(snapshot.l1Size) * 8, "snapshot L1 table")
            trees.append(try loadTable(offset: snapshot.l1TableOffset, entries: UInt64(snapshot.l1Size), what: "snapshot L1 table"))
        }
        referenceBitmapClusters(reference) { problems.append($0) }
        var previousHost: UInt64?
        var stats = (allocated: UInt64(0), compressed: UInt64(0), fragmented: UInt64(0))
        for (treeIndex, tree) in trees.enumerated() {
            try walkTree(tree, invalidEntry: { message, _ in problems.append("ERROR \(message)") },
                         reservedBits: { problems.append($0) }) { item in
                switch item {
                case let .l2Table(offset, _):
                    reference(offset, g.clusterSize, "L2 table")
                case let .data(range, _, _, compressed):
                    reference(range.offset, range.length, compressed ? "compressed cluster" : "data cluster")
                    guard treeIndex == 0 else { return }
                    stats.allocated += 1
                    if compressed { stats.compressed += 1 }
                    if let previousHost, previousHost + g.clusterSize != range.offset { stats.fragmented += 1 }
                    previousHost = range.offset
                }
            }
        }
        result.corruptions += problems.count
        result.messages += problems
        result.allocatedClusters = stats.allocated
        result.compressedClusters = stats.compressed
        result.fragmentedClusters = stats.fragmented
        return expected
    }

    func check() throws -> QCOW2CheckResult {
        var result = QCOW2CheckResult()
        let expected = try referenceCounts(into: &result)
        for cluster in 0..<UInt64(expected.count) {
            let stored = try refcount(ofCluster: cluster)
            let wanted = UInt64(expected[Int(cluster)])
            if stored < wanted {
                result.corruptions += 1
                result.messages.append("ERROR cluster \(cluster) refcount=\(stored) reference=\(wanted)")
            } else if stored > wanted {
                result.leaks += 1
                result.messages.append("Leaked cluster \(cluster) refcount=\(stored) reference=\(wanted)")
            }
            if wanted > 0 { result.imageEndOffset = (cluster + 1) << g.clusterBits }
        }
        try checkCopiedFlags(&result)
        result.totalClusters = (header.size + g.clusterMask) >> g.clusterBits
        return result
    }

    private func checkCopiedFlags(_ result: inout QCOW2CheckResult) throws {
        for (l1Index, l1Entry) in l1.enumerated() {
            let l2Offset = l1Entry & QCOW2Geometry.offsetMask
            guard l2Offset != 0, l2Offset < fileSize else { continue }
            let tableCount = try refcount(ofCluster: l2Offset >> g.clusterBits)
            if (tableCount == 1) != (l1Entry & QCOW2Geometry.copiedFlag != 0) {
                result.corruptions += 1
                result.messages.append("ERROR OFLAG_COPIED L2 cluster: l1_index=\(l1Index) l1_entry=\(String(l1Entry, radix: 16)) refcount=\(tableCount)")
            }
        }
        try walkTree(l1) { item in
            guard case let .data(range, l2Offset, entryOffset, compressed) = item else { return }
            let slot = try l2Slot(l2Offset)
            let entry = l2Cache.tables[slot].be64(entryOffset)
            let count = try refcount(ofCluster: range.offset >> g.clusterBits)
            let copied = entry & QCOW2Geometry.copiedFlag != 0
            if compressed ? copied : (count == 1) != copied {
                result.corruptions += 1
                result.messages.append("ERROR OFLAG_COPIED data cluster: l2_entry=\(String(entry, radix: 16)) refcount=\(count)")
            }
        }
    }

    /// Checks, repairs what `mode` allows by setting refcounts to the referenced counts, then re-checks.
    func repair(mode: QCOW2RepairMode) throws -> QCOW2CheckResult {
        if !readOnly {
            try flush()
            try releaseReservation()  // reserved clusters would otherwise count as leaks and be freed under us
        }
        let before = try check()
        guard mode != .none, before.corruptions + before.leaks > 0 else { return before }
        try requireWritable()
        var scratch = QCOW2CheckResult()
        let expected = try referenceCounts(into: &scratch)
        let fileClusters = UInt64(expected.count)
        var leaksFixed = 0, corruptionsFixed = 0
        for cluster in 0..<fileClusters {
            let stored = try refcount(ofCluster: cluster)
            let wanted = UInt64(expected[Int(cluster)])
            if stored > wanted {
                try setRefcount(ofCluster: cluster, to: wanted)
                leaksFixed += 1
            } else if stored < wanted && mode == .all {
                try setRefcount(ofCluster: cluster, to: wanted)
                corruptionsFixed += 1
            }
        }
        if mode == .all { corruptionsFixed += try fixCopiedFlags() }
        try file.sync()
        var after = try check()
        after.leaksFixed = leaksFixed
        after.corruptionsFixed = corruptionsFixed
        if after.corruptions == 0 && header.incompatibleFeatures & (QCOW2Header.Incompatible.dirty | QCOW2Header.Incompatible.corrupt) != 0 {
            header.incompatibleFeatures &= ~(QCOW2Header.Incompatible.dirty | QCOW2Header.Incompatible.corrupt)
            try writeHeaderField(at: 72, header.incompatibleFeatures.bigEndianBytes)
            try file.sync()
        }
        return after
    }
}
