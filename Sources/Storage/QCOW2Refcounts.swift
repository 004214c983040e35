/// Refcount table and blocks: lookups, write-through updates, and cluster allocation.
/// Allocation only appends at the end of the file, so a freed cluster is never reused while
/// stale metadata on disk might still point at it.
extension QCOW2Engine {
    static let allocationSkipLimit: UInt64 = 1 << 20

    func refcountBlockSlot(tableIndex: UInt64) throws -> Int? {
        guard tableIndex < UInt64(refcountTable.count) else { return nil }
        let block = refcountTable[Int(tableIndex)] & ~UInt64(511)
        guard block != 0 else { return nil }
        if let slot = refcountCache.slot(for: block) { return slot }
        let slot = refcountCache.claimSlot(for: block)
        do {
            try refcountCache.tables[slot].withUnsafeMutableBytes { try file.readExactly(into: $0, at: block) }
        } catch {
            refcountCache.invalidate(block)
            throw error
        }
        return slot
    }

    func refcount(ofCluster cluster: UInt64) throws -> UInt64 {
        guard let slot = try refcountBlockSlot(tableIndex: cluster / g.refcountEntriesPerBlock) else { return 0 }
        return Self.entry(in: refcountCache.tables[slot], index: cluster % g.refcountEntriesPerBlock, order: g.refcountOrder)
    }

    static func entry(in block: [UInt8], index: UInt64, order: UInt64) -> UInt64 {
        switch order {
        case 0...2:
            let bits = UInt64(1) << order
            let bitIndex = index * bits
            return UInt64(block[Int(bitIndex / 8)] >> UInt8(bitIndex % 8)) & ((1 << bits) - 1)
        case 3: return UInt64(block[Int(index)])
        case 4: return UInt64(block.be16(Int(index) * 2))
        case 5: return UInt64(block.be32(Int(index) * 4))
        default: return block.be64(Int(index) * 8)
        }
    }

    /// Stores a refcount in a block buffer; returns the byte range that changed.
    static func setEntry(in block: inout [UInt8], index: UInt64, order: UInt64, value: UInt64) -> Range<Int> {
        switch order {
        case 0...2:
            let bits = UInt64(1) << order
            let bitIndex = index * bits
            let byte = Int(bitIndex / 8)
            let mask = UInt8(((1 << bits) - 1) << (bitIndex % 8))
            block[byte] = block[byte] & ~mask | (UInt8(truncatingIfNeeded: value << (bitIndex % 8)) & mask)
            return byte..<(byte + 1)
        case 3: block[Int(index)] = UInt8(truncatingIfNeeded: value); return Int(index)..<Int(index) + 1
        case 4: block.setBE16(Int(index) * 2, UInt16(truncatingIfNeeded: value)); return Int(index) * 2..<Int(index) * 2 + 2
        case 5: block.setBE32(Int(index) * 4, UInt32(truncatingIfNeeded: value)); return Int(index) * 4..<Int(index) * 4 + 4
        default: block.setBE64(Int(index) * 8, value); return Int(index) * 8..<Int(index) * 8 + 8
        }
    }

    /// Sets a refcount, creating the refcount block if it is missing; written through to disk.
    func setRefcount(ofCluster cluster: UInt64, to value: UInt64) throws {
        guard value <= g.maxRefcount else {
            throw invalid("refcount of cluster \(cluster) would exceed \(g.maxRefcount)", cluster << g.clusterBits)
        }
        let tableIndex = cluster / g.refcountEntriesPerBlock
        var slot = try refcountBlockSlot(tableIndex: tableIndex)
        if slot == nil {
            guard value != 0 else { return }
            try createRefcountBlock(tableIndex: tableIndex)
            slot = try refcountBlockSlot(tableIndex: tableIndex)
        }
        guard let slot else { throw invalid("refcount block missing after allocation", cluster << g.clusterBits) }
        let changed = Self.setEntry(in: &refcountCache.tables[slot], index: cluster % g.refcountEntriesPerBlock,
                                    order: g.refcountOrder, value: value)
        let blockOffset = refcountCache.offsets[slot]
        try refcountCache.tables[slot].withUnsafeBytes {
            try file.write(UnsafeRawBufferPointer(rebasing: $0[changed]), at: blockOffset + UInt64(changed.lowerBound))
        }
    }

    /// Sets the refcounts of a run of clusters whose refcount blocks exist: one write per block
    /// (an allocation of 64 clusters was 64 two-byte writes).
    func setRefcounts(ofClusters clusters: Range<UInt64>, to value: UInt64) throws {
        guard value <= g.maxRefcount else {
            throw invalid("refcount of cluster \(clusters.lowerBound) would exceed \(g.maxRefcount)", clusters.lowerBound << g.clusterBits)
        }
        var cluster = clusters.lowerBound
        while cluster < clusters.upperBound {
            let tableIndex = cluster / g.refcountEntriesPerBlock
            let blockEnd = min(clusters.upperBound, (tableIndex + 1) * g.refcountEntriesPerBlock)
            guard let slot = try refcountBlockSlot(tableIndex: tableIndex) else {
                throw invalid("refcount block missing for cluster \(cluster)", cluster << g.clusterBits)
            }
            var changed: Range<Int>?
            for index in cluster..<blockEnd {
                let bytes = Self.setEntry(in: &refcountCache.tables[slot], index: index % g.refcountEntriesPerBlock,
                                          order: g.refcountOrder, value: value)
                changed = changed.map { min($0.lowerBound, bytes.lowerBound)..<max($0.upperBound, bytes.upperBound) } ?? bytes
            }
            if let changed {
                let blockOffset = refcountCache.offsets[slot]
                try refcountCache.tables[slot].withUnsafeBytes {
                    try file.write(UnsafeRawBufferPointer(rebasing: $0[changed]), at: blockOffset + UInt64(changed.lowerBound))
                }
            }
            cluster = blockEnd
        }
    }

    func adjustRefcount(ofCluster cluster: UInt64, by delta: Int64) throws {
        let current = try refcount(ofCluster: cluster)
        if delta < 0 {
            guard current >= delta.magnitude else {
                throw invalid("refcount of cluster \(cluster) would drop below zero", cluster << g.clusterBits)
            }
            try setRefcount(ofCluster: cluster, to: current - delta.magnitude)
        } else {
            let (value, overflow) = current.addingReportingOverflow(UInt64(delta))
            guard !overflow else { throw invalid("refcount overflow", cluster << g.clusterBits) }
            try setRefcount(ofCluster: cluster, to: value)
        }
    }

    /// Drops one reference from every cluster the byte range touches (compressed data may span two).
    func releaseClusters(at offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        let first = offset >> g.clusterBits
        let last = (offset + length - 1) >> g.clusterBits
        for cluster in first...last { try adjustRefcount(ofCluster: cluster, by: -1) }
    }

    func releaseReference(of mapping: ClusterMapping) throws {
        switch mapping {
        case let .compressed(host, length): try releaseClusters(at: host & ~UInt64(511), length: length)
        default: if let host = mapping.referencedHost { try adjustRefcount(ofCluster: host >> g.clusterBits, by: -1) }
        }
    }

    /// One cluster for data or an L2 table. Refcounts are raised (and fsynced) for a batch of clusters
    /// ahead of use, so a reference written later can never reach the disk before its refcount, even
    /// if a power loss reorders page writeback; a crash leaks at most the unused part of the batch.
    func allocateCluster() throws -> UInt64 {
        try markDirtyIfLazy()
        if reserved.isEmpty { try refillReservation() }
        let cluster = reserved.lowerBound
        reserved = (cluster + 1)..<reserved.upperBound
        return cluster << g.clusterBits
    }

    /// Reserves the next batch of contiguous clusters (4 MiB; 8 to 256 clusters), refcounts durable.
    func refillReservation() throws {
        let batch: UInt64 = min(256, max(8, (4 << 20) >> g.clusterBits))
        let first = try allocateClusters(batch) >> g.clusterBits
        if orderingSyncs { try file.sync() }
        reserved = first..<(first + batch)
    }

    /// Gives unused reserved clusters back (before a check, and on close).
    func releaseReservation() throws {
        let unused = reserved
        reserved = 0..<0
        for cluster in unused { try setRefcount(ofCluster: cluster, to: 0) }
    }

    /// Drops a reference once the metadata that replaced it is durable (at the next flush).
    func deferRelease(_ mapping: ClusterMapping) throws {
        guard mapping.referencedHost != nil else { return }
        pendingReleases.append(mapping)
        if pendingReleases.count >= 4096 { try flush() }
    }

    /// Allocates `count` contiguous clusters at the end of the image with refcount 1 (on disk before return).
    func allocateClusters(_ count: UInt64) throws -> UInt64 {
        guard count > 0 else { throw StorageError.invalidArgument("cannot allocate zero clusters") }
        try markDirtyIfLazy()
        var skipped: UInt64 = 0
        var attempts = 0
        while true {
            attempts += 1
            guard attempts < 1 << 16 else { throw QCOW2Error.limitExceeded(path: path, what: "cluster allocation did not converge") }
            let start = nextFreeCluster
            let (end, overflow) = start.addingReportingOverflow(count)
            guard !overflow, end <= (QCOW2Limits.maxVirtualSize >> g.clusterBits) * 4 else {
                throw QCOW2Error.limitExceeded(path: path, what: "image file would grow past the addressable limit")
            }
            var missing: UInt64?
            for tableIndex in (start / g.refcountEntriesPerBlock)...((end - 1) / g.refcountEntriesPerBlock) {
                if tableIndex >= UInt64(refcountTable.count) || refcountTable[Int(tableIndex)] == 0 {
                    missing = tableIndex
                    break
                }
            }
            if let missing {
                try createRefcountBlock(tableIndex: missing)
                continue
            }
            // Clusters past EOF may still carry refcounts (preallocation, or a hostile image): skip them.
            var inUse: UInt64?
            for cluster in start..<end {
                if try refcount(ofCluster: cluster) != 0 { inUse = cluster }
            }
            if let inUse {
                skipped += inUse + 1 - start
                guard skipped < Self.allocationSkipLimit else {
                    throw invalid("refcounts claim too many clusters past the end of the file", start << g.clusterBits)
                }
                nextFreeCluster = inUse + 1
                continue
            }
            try setRefcounts(ofClusters: start..<end, to: 1)
            nextFreeCluster = end
            return start << g.clusterBits
        }
    }

    /// Adds the refcount block for `tableIndex`, placing it at the end of the file.
    func createRefcountBlock(tableIndex: UInt64) throws {
        if tableIndex >= UInt64(refcountTable.count) {
            try growRefcountTable(minimumEntries: tableIndex + 1)
            return
        }
        let blockCluster = nextFreeCluster
        let ownTableIndex = blockCluster / g.refcountEntriesPerBlock
        var block = [UInt8](repeating: 0, count: Int(g.clusterSize))
        if ownTableIndex == tableIndex {
            // The block covers its own cluster: it records its own reference.
            _ = Self.setEntry(in: &block, index: blockCluster % g.refcountEntriesPerBlock, order: g.refcountOrder, value: 1)
            nextFreeCluster += 1
        } else {
            guard ownTableIndex < UInt64(refcountTable.count), refcountTable[Int(ownTableIndex)] != 0 else {
                try createRefcountBlock(tableIndex: ownTableIndex)
                return
            }
            guard try refcount(ofCluster: blockCluster) == 0 else {
                nextFreeCluster += 1
                return
            }
            nextFreeCluster += 1
            try setRefcount(ofCluster: blockCluster, to: 1)
        }
        let offset = blockCluster << g.clusterBits
        try file.write(block, at: offset)
        fileSize = max(fileSize, offset + g.clusterSize)
        refcountTable[Int(tableIndex)] = offset
        try file.write(offset.bigEndianBytes, at: header.refcountTableOffset + tableIndex * 8)
    }

    /// Moves the refcount table to a larger copy at the end of the file, with blocks covering itself.
    func growRefcountTable(minimumEntries: UInt64) throws {
        let perCluster = g.clusterSize / 8
        let oldCount = UInt64(refcountTable.count)
        var entries = max(minimumEntries, oldCount + oldCount / 2, perCluster)
        entries = (entries + perCluster - 1) / perCluster * perCluster
        let tableStart = nextFreeCluster
        var tableClusters: UInt64 = 0
        var newBlocks: [UInt64] = []
        var end: UInt64 = 0
        for _ in 0..<64 {
            tableClusters = entries / perCluster
            var blockCount: UInt64 = 0
            repeat {
                end = tableStart + tableClusters + blockCount
                newBlocks = ((tableStart / g.refcountEntriesPerBlock)...((end - 1) / g.refcountEntriesPerBlock)).filter {
                    $0 >= oldCount || refcountTable[Int($0)] == 0
                }
                if UInt64(newBlocks.count) == blockCount { break }
                blockCount = UInt64(newBlocks.count)
            } while true
            if (end - 1) / g.refcountEntriesPerBlock < entries { break }
            entries = ((end - 1) / g.refcountEntriesPerBlock + 1 + perCluster - 1) / perCluster * perCluster
        }
        guard entries * 8 <= QCOW2Limits.maxRefcountTableBytes else {
            throw QCOW2Error.limitExceeded(path: path, what: "refcount table would exceed 8 MiB")
        }
        // New clusters in ranges that already have blocks get their references through those blocks.
        var blocks: [UInt64: [UInt8]] = [:]
        for index in newBlocks { blocks[index] = [UInt8](repeating: 0, count: Int(g.clusterSize)) }
        for cluster in tableStart..<end {
            let index = cluster / g.refcountEntriesPerBlock
            if var block = blocks[index] {
                _ = Self.setEntry(in: &block, index: cluster % g.refcountEntriesPerBlock, order: g.refcountOrder, value: 1)
                blocks[index] = block
            } else {
                try setRefcount(ofCluster: cluster, to: 1)
            }
        }
        var table = refcountTable + [UInt64](repeating: 0, count: Int(entries - oldCount))
        for (i, index) in newBlocks.enumerated() {
            let offset = (tableStart + tableClusters + UInt64(i)) << g.clusterBits
            try file.write(blocks[index] ?? [], at: offset)
            table[Int(index)] = offset
        }
        var raw = [UInt8](repeating: 0, count: Int(entries * 8))
        for (i, entry) in table.enumerated() { raw.setBE64(i * 8, entry) }
        try file.write(raw, at: tableStart << g.clusterBits)
        try file.sync()
        let oldOffset = header.refcountTableOffset
        let oldClusters = UInt64(header.refcountTableClusters)
        header.refcountTableOffset = tableStart << g.clusterBits
        header.refcountTableClusters = UInt32(tableClusters)
        try writeHeaderField(at: 48, header.refcountTableOffset.bigEndianBytes + header.refcountTableClusters.bigEndianBytes)
        try file.sync()
        refcountTable = table
        fileSize = max(fileSize, end << g.clusterBits)
        nextFreeCluster = end
        for cluster in 0..<oldClusters { try adjustRefcount(ofCluster: (oldOffset >> g.clusterBits) + cluster, by: -1) }
    }
}
