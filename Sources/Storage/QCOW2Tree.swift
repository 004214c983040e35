/// Operations over a whole L1/L2 tree: references for snapshots and check, COPIED flags, unmapping.
extension QCOW2Engine {
    /// A host range one tree holds a reference to.
    enum Reference {
        case l2Table(offset: UInt64, l1Index: Int)
        case data(range: (offset: UInt64, length: UInt64), l2Offset: UInt64, entryOffset: Int, compressed: Bool)
    }

    /// Reads an L2 table without caching it (check and snapshot walks touch every table once).
    func readTableUncached(_ offset: UInt64, into table: inout [UInt8]) throws {
        try checkMetadataCluster(offset, what: "L2 table")
        try table.withUnsafeMutableBytes { try file.readExactly(into: $0, at: offset) }
    }

    /// Bits of an L1 entry that must be zero (bits 0-8 and 56-62), and of a standard L2 entry
    /// that maps a cluster (bits 1-8 and 56-61): what qemu-img check reports.
    static let l1ReservedMask: UInt64 = 0x7F00_0000_0000_01FF
    static let l2ReservedMask: UInt64 = 0x3F00_0000_0000_01FE

    /// Calls `body` for every reference of `l1Table`; `invalidEntry` receives entries that fail to
    /// decode, `reservedBits` (check) entries with reserved bits set, in qemu-img check's words.
    func walkTree(_ l1Table: [UInt64], invalidEntry: (String, UInt64) -> Void = { _, _ in },
                  reservedBits: ((String) -> Void)? = nil, body: (Reference) throws -> Void) throws {
        var table = [UInt8](repeating: 0, count: Int(g.clusterSize))
        for (l1Index, l1Entry) in l1Table.enumerated() {
            if l1Entry & Self.l1ReservedMask != 0 {
                reservedBits?("ERROR found L1 entry with reserved bits set: \(String(l1Entry, radix: 16))")
            }
            let l2Offset = l1Entry & QCOW2Geometry.offsetMask
            guard l2Offset != 0 else { continue }
            do {
                try readTableUncached(l2Offset, into: &table)
            } catch let error as QCOW2Error {
                invalidEntry("\(error)", l2Offset)
                continue
            } catch let error as StorageError {
                invalidEntry("\(error)", l2Offset)
                continue
            }
            try body(.l2Table(offset: l2Offset, l1Index: l1Index))
            var at = 0
            while at < table.count {
                let entry = table.be64(at)
                let bitmap = g.extendedL2 ? table.be64(at + 8) : 0
                do {
                    let mapping = try g.decode(entry, bitmap: bitmap, version: header.version, path: path, fileSize: fileSize)
                    switch mapping {
                    case let .compressed(host, length):
                        try body(.data(range: (host & ~UInt64(511), length), l2Offset: l2Offset, entryOffset: at, compressed: true))
                    default:
                        if let host = mapping.referencedHost {
                            if let reservedBits, entry & Self.l2ReservedMask != 0 {
                                reservedBits("ERROR found l2 entry with reserved bits set: \(String(entry, radix: 16))")
                            }
                            try body(.data(range: (host, g.clusterSize), l2Offset: l2Offset, entryOffset: at, compressed: false))
                        }
                    }
                } catch let error as QCOW2Error {
                    invalidEntry("\(error)", l2Offset + UInt64(at))
                }
                at += g.l2EntryBytes
            }
        }
    }

    /// Adds `delta` to the refcount of every cluster `l1Table` references (snapshot create/delete).
    func updateTreeRefcounts(_ l1Table: [UInt64], delta: Int64) throws {
        try walkTree(l1Table) { reference in
            switch reference {
            case let .l2Table(offset, _):
                try adjustRefcount(ofCluster: offset >> g.clusterBits, by: delta)
            case let .data(range, _, _, _):
                let last = (range.offset + range.length - 1) >> g.clusterBits
                for cluster in (range.offset >> g.clusterBits)...last { try adjustRefcount(ofCluster: cluster, by: delta) }
            }
        }
    }

    /// Recomputes COPIED flags of the active tree from refcounts (qemu-img check counts mismatches).
    func fixCopiedFlags() throws -> Int {
        var fixed = 0
        var table = [UInt8](repeating: 0, count: Int(g.clusterSize))
        for l1Index in l1.indices {
            let l2Offset = l1[l1Index] & QCOW2Geometry.offsetMask
            guard l2Offset != 0 else { continue }
            let tableExclusive = try refcount(ofCluster: l2Offset >> g.clusterBits) == 1
            let wantedL1 = tableExclusive ? l2Offset | QCOW2Geometry.copiedFlag : l2Offset
            if l1[l1Index] != wantedL1 {
                l1[l1Index] = wantedL1
                try file.write(wantedL1.bigEndianBytes, at: header.l1TableOffset + UInt64(l1Index) * 8)
                fixed += 1
            }
            guard (try? readTableUncached(l2Offset, into: &table)) != nil else { continue }
            var changed = false
            var at = 0
            while at < table.count {
                let entry = table.be64(at)
                let host = entry & QCOW2Geometry.offsetMask
                var wanted = entry & ~QCOW2Geometry.copiedFlag
                let exclusive = entry & QCOW2Geometry.compressedFlag == 0 && host != 0 && tableExclusive
                if try exclusive && refcount(ofCluster: host >> g.clusterBits) == 1 {
                    wanted |= QCOW2Geometry.copiedFlag
                }
                if wanted != entry {
                    table.setBE64(at, wanted)
                    changed = true
                    fixed += 1
                }
                at += g.l2EntryBytes
            }
            if changed {
                try file.write(table, at: l2Offset)
                l2Cache.invalidate(l2Offset)
            }
        }
        return fixed
    }

    /// Drops every mapping of guest clusters at or after `firstCluster` (shrink, commit's make-empty).
    func unmapClusters(from firstCluster: UInt64) throws {
        let total = (header.size + g.clusterMask) >> g.clusterBits
        var cluster = firstCluster
        while cluster < total {
            let l1Index = Int(cluster / g.l2Entries)
            guard l1Index < l1.count else { return }
            if l1[l1Index] & QCOW2Geometry.offsetMask == 0 {
                cluster = UInt64(l1Index + 1) * g.l2Entries
                continue
            }
            if try lookup(cluster) != .unallocated {
                let (slot, entryOffset) = try writableL2(forCluster: cluster)
                let old = try mapping(slot: slot, entryOffset: entryOffset)
                try setL2Entry(slot: slot, entryOffset: entryOffset, entry: 0, bitmap: 0)
                try deferRelease(old)
            }
            cluster += 1
        }
    }
}
