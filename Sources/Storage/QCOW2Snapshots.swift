/// One internal snapshot (docs/interop/qcow2.txt, "Snapshots").
public struct QCOW2Snapshot: Equatable, Sendable {
    public var l1TableOffset: UInt64
    public var l1Size: UInt32
    public var id: String
    public var name: String
    public var dateSeconds: UInt32
    public var dateNanoseconds: UInt32
    public var vmClockNanoseconds: UInt64
    public var vmStateSize: UInt64
    public var diskSize: UInt64?
    public var icount: UInt64?
    /// Extra data beyond the fields above, preserved verbatim.
    var unknownExtra: [UInt8] = []
}

extension QCOW2Engine {
    func readSnapshots() throws -> [QCOW2Snapshot] {
        var result: [QCOW2Snapshot] = []
        var position = header.snapshotsOffset
        for index in 0..<header.snapshotCount {
            guard position - header.snapshotsOffset <= QCOW2Limits.maxSnapshotTableBytes else {
                throw QCOW2Error.limitExceeded(path: path, what: "snapshot table exceeds 64 MiB")
            }
            var fixed = [UInt8](repeating: 0, count: 40)
            try fixed.withUnsafeMutableBytes { try file.readExactly(into: $0, at: position) }
            let idLength = Int(fixed.be16(12)), nameLength = Int(fixed.be16(14))
            let extraLength = Int(fixed.be32(36))
            guard extraLength <= 1024 else { throw invalid("snapshot \(index) has \(extraLength) bytes of extra data", position) }
            var variable = [UInt8](repeating: 0, count: extraLength + idLength + nameLength)
            try variable.withUnsafeMutableBytes { try file.readExactly(into: $0, at: position + 40) }
            var snapshot = QCOW2Snapshot(
                l1TableOffset: fixed.be64(0), l1Size: fixed.be32(8),
                id: String(decoding: variable[extraLength..<(extraLength + idLength)], as: UTF8.self),
                name: String(decoding: variable[(extraLength + idLength)...], as: UTF8.self),
                dateSeconds: fixed.be32(16), dateNanoseconds: fixed.be32(20), vmClockNanoseconds: fixed.be64(24),
                vmStateSize: UInt64(fixed.be32(32)))
            if extraLength >= 8 { snapshot.vmStateSize = variable.be64(0) }
            if extraLength >= 16 { snapshot.diskSize = variable.be64(8) }
            if extraLength >= 24 { snapshot.icount = variable.be64(16) }
            if extraLength > 24 { snapshot.unknownExtra = Array(variable[24..<extraLength]) }
            guard UInt64(snapshot.l1Size) * 8 <= QCOW2Limits.maxL1Bytes else {
                throw QCOW2Error.limitExceeded(path: path, what: "snapshot '\(snapshot.name)' L1 table exceeds 32 MiB")
            }
            try checkTableRange(snapshot.l1TableOffset, UInt64(snapshot.l1Size) * 8, what: "snapshot '\(snapshot.name)' L1 table")
            result.append(snapshot)
            position += UInt64((40 + variable.count + 7) / 8 * 8)
        }
        return result
    }

    static func encodeSnapshots(_ snapshots: [QCOW2Snapshot]) -> [UInt8] {
        var out: [UInt8] = []
        for s in snapshots {
            var entry = [UInt8](repeating: 0, count: 40)
            entry.setBE64(0, s.l1TableOffset)
            entry.setBE32(8, s.l1Size)
            entry.setBE16(12, UInt16(s.id.utf8.count))
            entry.setBE16(14, UInt16(s.name.utf8.count))
            entry.setBE32(16, s.dateSeconds)
            entry.setBE32(20, s.dateNanoseconds)
            entry.setBE64(24, s.vmClockNanoseconds)
            entry.setBE32(32, UInt32(truncatingIfNeeded: min(s.vmStateSize, UInt64(UInt32.max))))
            var extra = [UInt8](repeating: 0, count: 24)
            extra.setBE64(0, s.vmStateSize)
            extra.setBE64(8, s.diskSize ?? 0)
            extra.setBE64(16, s.icount ?? 0)
            extra += s.unknownExtra
            entry.setBE32(36, UInt32(extra.count))
            entry += extra + Array(s.id.utf8) + Array(s.name.utf8)
            entry += [UInt8](repeating: 0, count: (8 - entry.count % 8) % 8)
            out += entry
        }
        return out
    }

    /// Writes a new snapshot table, switches the header to it, then frees the old one.
    func replaceSnapshotTable(_ snapshots: [QCOW2Snapshot]) throws {
        let oldOffset = header.snapshotsOffset
        let oldBytes = UInt64(Self.encodeSnapshots(try readSnapshots()).count)
        let bytes = Self.encodeSnapshots(snapshots)
        var newOffset: UInt64 = 0
        if !bytes.isEmpty {
            newOffset = try allocateClusters((UInt64(bytes.count) + g.clusterMask) >> g.clusterBits)
            try file.write(bytes, at: newOffset)
            fileSize = max(fileSize, newOffset + UInt64(bytes.count))
        }
        try file.sync()
        header.snapshotCount = UInt32(snapshots.count)
        header.snapshotsOffset = newOffset
        try writeHeaderField(at: 60, header.snapshotCount.bigEndianBytes + newOffset.bigEndianBytes)
        try file.sync()
        if oldOffset != 0 && oldBytes > 0 {
            try releaseClusters(at: oldOffset, length: (oldBytes + g.clusterMask) & ~g.clusterMask)
        }
    }

    func createSnapshot(name: String, now: (seconds: UInt32, nanoseconds: UInt32)) throws {
        try requireWritable()
        var snapshots = try readSnapshots()
        guard !snapshots.contains(where: { $0.name == name || $0.id == name }) else {
            throw QCOW2Error.invalidOperation(path: path, reason: "snapshot '\(name)' already exists")
        }
        guard snapshots.count < Int(QCOW2Limits.maxSnapshots) - 1 else {
            throw QCOW2Error.limitExceeded(path: path, what: "too many snapshots")
        }
        let nextID = (snapshots.compactMap { UInt64($0.id) }.max() ?? 0) + 1
        // References first (a crash leaves only leaks), then the copy of L1, then the table.
        try updateTreeRefcounts(l1, delta: 1)
        var raw = [UInt8](repeating: 0, count: l1.count * 8)
        for (i, entry) in l1.enumerated() { raw.setBE64(i * 8, entry & ~QCOW2Geometry.copiedFlag) }
        var l1Offset: UInt64 = 0
        if !raw.isEmpty {
            l1Offset = try allocateClusters((UInt64(raw.count) + g.clusterMask) >> g.clusterBits)
            try file.write(raw, at: l1Offset)
            fileSize = max(fileSize, l1Offset + UInt64(raw.count))
        }
        _ = try fixCopiedFlags()
        snapshots.append(QCOW2Snapshot(l1TableOffset: l1Offset, l1Size: UInt32(l1.count), id: String(nextID), name: name,
                                       dateSeconds: now.seconds, dateNanoseconds: now.nanoseconds, vmClockNanoseconds: 0,
                                       vmStateSize: 0, diskSize: header.size, icount: 0))
        try replaceSnapshotTable(snapshots)
    }

    func findSnapshot(_ name: String, in snapshots: [QCOW2Snapshot]) throws -> Int {
        guard let index = snapshots.firstIndex(where: { $0.name == name }) ?? snapshots.firstIndex(where: { $0.id == name }) else {
            throw QCOW2Error.snapshotNotFound(path: path, name: name)
        }
        return index
    }

    func applySnapshot(name: String) throws {
        try requireWritable()
        let snapshots = try readSnapshots()
        let snapshot = snapshots[try findSnapshot(name, in: snapshots)]
        guard Int(snapshot.l1Size) <= l1.count else {
            throw QCOW2Error.unsupported(path: path, feature: "applying a snapshot larger than the current disk")
        }
        let snapshotL1 = try loadTable(offset: snapshot.l1TableOffset, entries: UInt64(snapshot.l1Size), what: "snapshot L1 table")
        try updateTreeRefcounts(snapshotL1, delta: 1)
        let oldL1 = l1
        var newL1 = snapshotL1.map { $0 & ~QCOW2Geometry.copiedFlag }
        newL1 += [UInt64](repeating: 0, count: l1.count - newL1.count)
        var raw = [UInt8](repeating: 0, count: newL1.count * 8)
        for (i, entry) in newL1.enumerated() { raw.setBE64(i * 8, entry) }
        try file.write(raw, at: header.l1TableOffset)
        try file.sync()
        l1 = newL1
        l2Cache.removeAll()
        if let diskSize = snapshot.diskSize, diskSize != header.size, g.l1EntriesNeeded(forSize: diskSize) <= UInt64(l1.count) {
            header.size = diskSize
            try writeHeaderField(at: 24, diskSize.bigEndianBytes)
        }
        try updateTreeRefcounts(oldL1, delta: -1)
        _ = try fixCopiedFlags()
    }

    func deleteSnapshot(name: String) throws {
        try requireWritable()
        var snapshots = try readSnapshots()
        let snapshot = snapshots.remove(at: try findSnapshot(name, in: snapshots))
        let snapshotL1 = try loadTable(offset: snapshot.l1TableOffset, entries: UInt64(snapshot.l1Size), what: "snapshot L1 table")
        try replaceSnapshotTable(snapshots)
        try updateTreeRefcounts(snapshotL1, delta: -1)
        if snapshot.l1Size > 0 {
            try releaseClusters(at: snapshot.l1TableOffset, length: (UInt64(snapshot.l1Size) * 8 + g.clusterMask) & ~g.clusterMask)
        }
        l2Cache.removeAll()
        _ = try fixCopiedFlags()
    }
}
