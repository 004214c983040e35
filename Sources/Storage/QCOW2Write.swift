/// The write path. Ordering per allocation: refcount written, then data, then the L2 entry, then
/// (for a new L2 table) the L1 entry; references to replaced clusters are dropped last.
extension QCOW2Engine {
    func requireWritable() throws {
        guard !readOnly else { throw StorageError.readOnly(path: path) }
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try requireWritable()
        guard rangeFits(offset, UInt64(buffer.count), within: header.size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
        }
        var done = 0
        while done < buffer.count {
            let guest = offset + UInt64(done)
            let inCluster = guest & g.clusterMask
            if inCluster == 0, buffer.count - done >= 2 * Int(g.clusterSize),
               let written = try writeFreshClusters(guest >> g.clusterBits, data: UnsafeRawBufferPointer(rebasing: buffer[done...])) {
                done += written
                continue
            }
            let length = Int(min(UInt64(buffer.count - done), g.clusterSize - inCluster))
            try writeCluster(guest >> g.clusterBits, inCluster: Int(inCluster),
                             data: UnsafeRawBufferPointer(rebasing: buffer[done..<(done + length)]))
            done += length
        }
    }

    /// Writes whole clusters that hold nothing yet (unallocated, or zero without a host cluster),
    /// from `firstCluster` on, into clusters that are contiguous in the file: one data write and
    /// one L2 write for the run (what `vireo img convert` mostly does: it was three writes a
    /// cluster). The run stops at the end of `data`'s whole clusters, of the L2 table, of the
    /// reserved clusters, or at a cluster that holds something; nil when the first cluster does.
    /// The order of the cluster-by-cluster path holds: refcounts durable (reservation), then
    /// data, then L2 entries.
    private func writeFreshClusters(_ firstCluster: UInt64, data: UnsafeRawBufferPointer) throws -> Int? {
        let (slot, firstEntry) = try writableL2(forCluster: firstCluster)
        let wanted = min(UInt64(data.count) >> g.clusterBits, g.l2Entries - firstCluster % g.l2Entries)
        var count: UInt64 = 0
        while count < wanted, try isFresh(slot: slot, entryOffset: firstEntry + Int(count) * g.l2EntryBytes) { count += 1 }
        guard count > 0 else { return nil }
        // Contiguous host clusters: from the reservation (its refcounts are already durable).
        try markDirtyIfLazy()
        if reserved.isEmpty { try refillReservation() }
        let run = min(count, UInt64(reserved.count))
        let host = reserved.lowerBound << g.clusterBits
        reserved = (reserved.lowerBound + run)..<reserved.upperBound
        let bytes = Int(run << g.clusterBits)
        try file.write(UnsafeRawBufferPointer(rebasing: data[data.startIndex..<(data.startIndex + bytes)]), at: host)
        fileSize = max(fileSize, host + UInt64(bytes))
        for index in 0..<Int(run) {
            let entryOffset = firstEntry + index * g.l2EntryBytes
            l2Cache.tables[slot].setBE64(entryOffset, (host + UInt64(index) << g.clusterBits) | QCOW2Geometry.copiedFlag)
            if g.extendedL2 { l2Cache.tables[slot].setBE64(entryOffset + 8, QCOW2Geometry.allSubclustersAllocated) }
        }
        let entries = firstEntry..<(firstEntry + Int(run) * g.l2EntryBytes)
        try l2Cache.tables[slot].withUnsafeBytes {
            try file.write(UnsafeRawBufferPointer(rebasing: $0[entries]), at: l2Cache.offsets[slot] + UInt64(entries.lowerBound))
        }
        return bytes
    }

    private func isFresh(slot: Int, entryOffset: Int) throws -> Bool {
        switch try mapping(slot: slot, entryOffset: entryOffset) {
        case .unallocated, .zero(nil, _): return true
        default: return false
        }
    }

    /// L2 table for `guestCluster` that may be modified in place (allocated or copied as needed).
    func writableL2(forCluster guestCluster: UInt64) throws -> (slot: Int, entryOffset: Int) {
        let l1Index = Int(guestCluster / g.l2Entries)
        let entryOffset = Int(guestCluster % g.l2Entries) * g.l2EntryBytes
        guard l1Index < l1.count else {
            throw StorageError.outOfRange(path: path, offset: guestCluster << g.clusterBits, length: g.clusterSize)
        }
        let l1Entry = l1[l1Index]
        let oldOffset = l1Entry & QCOW2Geometry.offsetMask
        if oldOffset != 0 && l1Entry & QCOW2Geometry.copiedFlag != 0 {
            return (try l2Slot(oldOffset), entryOffset)
        }
        if oldOffset != 0 {
            // Shared with a snapshot: copy the table; its clusters stay shared, so no COPIED bits.
            let oldSlot = try l2Slot(oldOffset)
            clusterBuffer = l2Cache.tables[oldSlot]
            var at = 0
            while at < clusterBuffer.count {
                clusterBuffer.setBE64(at, clusterBuffer.be64(at) & ~QCOW2Geometry.copiedFlag)
                at += g.l2EntryBytes
            }
        } else {
            _ = clusterBuffer.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 0) }
        }
        let newOffset = try allocateCluster()
        try file.write(clusterBuffer, at: newOffset)
        fileSize = max(fileSize, newOffset + g.clusterSize)
        let slot = l2Cache.claimSlot(for: newOffset)
        l2Cache.tables[slot] = clusterBuffer
        if orderingSyncs { try file.sync() }  // the table's content is durable before L1 points at it (once per new L2 table)
        l1[l1Index] = newOffset | QCOW2Geometry.copiedFlag
        try file.write(l1[l1Index].bigEndianBytes, at: header.l1TableOffset + UInt64(l1Index) * 8)
        if oldOffset != 0 { try deferRelease(.data(host: oldOffset, copied: false)) }
        return (slot, entryOffset)
    }

    func setL2Entry(slot: Int, entryOffset: Int, entry: UInt64, bitmap: UInt64) throws {
        l2Cache.tables[slot].setBE64(entryOffset, entry)
        if g.extendedL2 { l2Cache.tables[slot].setBE64(entryOffset + 8, bitmap) }
        let tableOffset = l2Cache.offsets[slot]
        try l2Cache.tables[slot].withUnsafeBytes {
            try file.write(UnsafeRawBufferPointer(rebasing: $0[entryOffset..<(entryOffset + g.l2EntryBytes)]),
                           at: tableOffset + UInt64(entryOffset))
        }
    }

    func mapping(slot: Int, entryOffset: Int) throws -> ClusterMapping {
        let entry = l2Cache.tables[slot].be64(entryOffset)
        let bitmap = g.extendedL2 ? l2Cache.tables[slot].be64(entryOffset + 8) : 0
        return try g.decode(entry, bitmap: bitmap, version: header.version, path: path, fileSize: fileSize)
    }

    /// Writes part of one guest cluster, copying the rest of the cluster (backing, compressed, shared) first.
    func writeCluster(_ guestCluster: UInt64, inCluster: Int, data: UnsafeRawBufferPointer) throws {
        let (slot, entryOffset) = try writableL2(forCluster: guestCluster)
        let current = try mapping(slot: slot, entryOffset: entryOffset)
        switch current {
        case let .data(host, true):
            try file.write(data, at: host + UInt64(inCluster))
            fileSize = max(fileSize, host + UInt64(inCluster) + UInt64(data.count))
            return
        case let .subclusters(host, true, allocated, _) where allocated == UInt32.max:
            try file.write(data, at: host + UInt64(inCluster))
            return
        default:
            break
        }
        let whole = data.count == Int(g.clusterSize)
        if !whole {
            try clusterBuffer.withUnsafeMutableBytes { try readMapped(current, into: $0, guest: guestCluster << g.clusterBits) }
            clusterBuffer.withUnsafeMutableBytes {
                UnsafeMutableRawBufferPointer(rebasing: $0[inCluster..<(inCluster + data.count)]).copyMemory(from: data)
            }
        }
        let target: UInt64
        let reused: Bool
        switch current {
        case let .zero(host?, true): (target, reused) = (host, true)
        case let .subclusters(host, true, _, _) where host != 0: (target, reused) = (host, true)
        default: (target, reused) = (try allocateCluster(), false)
        }
        if whole {
            try file.write(data, at: target)
        } else {
            try file.write(clusterBuffer, at: target)
        }
        fileSize = max(fileSize, target + g.clusterSize)
        try setL2Entry(slot: slot, entryOffset: entryOffset, entry: target | QCOW2Geometry.copiedFlag,
                       bitmap: QCOW2Geometry.allSubclustersAllocated)
        if !reused { try deferRelease(current) }
    }

    /// Zeroes a range: whole clusters lose their data (zero flag or unallocated), partial ones are written.
    func zeroRange(at offset: UInt64, length: UInt64, discardOnly: Bool) throws {
        try requireWritable()
        guard rangeFits(offset, length, within: header.size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: length)
        }
        var position = offset
        let end = offset + length
        while position < end {
            let inCluster = position & g.clusterMask
            let count = min(end - position, g.clusterSize - inCluster)
            let wholeCluster = inCluster == 0 && (count == g.clusterSize || position + count == header.size)
            if wholeCluster {
                try zeroWholeCluster(position >> g.clusterBits)
            } else if !discardOnly {
                let zeroes = [UInt8](repeating: 0, count: Int(count))
                try zeroes.withUnsafeBytes { try writeCluster(position >> g.clusterBits, inCluster: Int(inCluster), data: $0) }
            }
            position += count
        }
    }

    private func zeroWholeCluster(_ guestCluster: UInt64) throws {
        let current = try lookup(guestCluster)
        let backingHasData = backing.map { (guestCluster << g.clusterBits) < $0.size } ?? false
        switch current {
        case .zero: return
        case .unallocated where !backingHasData: return
        default: break
        }
        if header.version == 2 && backingHasData {
            // Version 2 has no zero flag: only real zeroes hide the backing data.
            let zeroes = [UInt8](repeating: 0, count: Int(g.clusterSize))
            try zeroes.withUnsafeBytes { try writeCluster(guestCluster, inCluster: 0, data: $0) }
            return
        }
        let (slot, entryOffset) = try writableL2(forCluster: guestCluster)
        let mapped = try mapping(slot: slot, entryOffset: entryOffset)
        let (entry, bitmap): (UInt64, UInt64)
        if !backingHasData {
            (entry, bitmap) = (0, 0)
        } else if g.extendedL2 {
            (entry, bitmap) = (0, QCOW2Geometry.allSubclustersZero)
        } else {
            (entry, bitmap) = (QCOW2Geometry.zeroFlag, 0)
        }
        try setL2Entry(slot: slot, entryOffset: entryOffset, entry: entry, bitmap: bitmap)
        try deferRelease(mapped)
    }

    /// Stores one full guest cluster deflated (convert -c); falls back to a plain write when it does not shrink.
    func writeCompressed(_ guestCluster: UInt64, data: UnsafeRawBufferPointer, deflater: inout Deflater) throws {
        try requireWritable()
        guard data.count == Int(g.clusterSize), (guestCluster << g.clusterBits) < header.size else {
            throw StorageError.invalidArgument("compressed writes must cover exactly one cluster")
        }
        let limit = Int(g.clusterSize) - 512
        let compressedLength = compressedInput.withUnsafeMutableBytes {
            let target = UnsafeMutableRawBufferPointer(rebasing: $0[0..<limit])
            return clusterCompression == .zstd ? ZstdCluster.compress(data, into: target) : deflater.compress(data, into: target)
        }
        let (slot, entryOffset) = try writableL2(forCluster: guestCluster)
        let current = try mapping(slot: slot, entryOffset: entryOffset)
        guard let length = compressedLength.map(UInt64.init), current == .unallocated else {
            try writeCluster(guestCluster, inCluster: 0, data: data)
            return
        }
        let host: UInt64
        if let cursor = compressedCursor, (cursor & g.clusterMask) + length <= g.clusterSize {
            host = cursor
            try adjustRefcount(ofCluster: cursor >> g.clusterBits, by: 1)
        } else {
            host = try allocateCluster()
        }
        try compressedInput.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<Int(length)]), at: host) }
        fileSize = max(fileSize, host + length)
        let nextCursor = host + length
        compressedCursor = nextCursor & g.clusterMask == 0 ? nil : nextCursor
        let sectors = ((host + length - 1) >> 9) - (host >> 9)
        let entry = QCOW2Geometry.compressedFlag | sectors << g.compressedSizeShift | host
        try setL2Entry(slot: slot, entryOffset: entryOffset, entry: entry, bitmap: 0)
    }
}
