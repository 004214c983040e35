import Foundation

/// Whole-image operations (resize, backing file, snapshots, check) exposed on QCOW2Image.
extension QCOW2Engine {
    func resize(to newSize: UInt64, allowShrink: Bool) throws {
        try requireWritable()
        guard newSize <= QCOW2Limits.maxVirtualSize else {
            throw QCOW2Error.limitExceeded(path: path, what: "virtual size \(newSize) exceeds the 64 PiB limit")
        }
        guard header.snapshotCount == 0 else {
            throw QCOW2Error.invalidOperation(path: path, reason: "can't resize an image which has snapshots")
        }
        if newSize < header.size {
            guard allowShrink else {
                throw QCOW2Error.invalidOperation(path: path, reason: "shrinking needs --shrink (data past the new end is lost)")
            }
            try unmapClusters(from: (newSize + g.clusterMask) >> g.clusterBits)
        }
        let needed = g.l1EntriesNeeded(forSize: newSize)
        guard needed * 8 <= QCOW2Limits.maxL1Bytes else {
            throw QCOW2Error.limitExceeded(path: path, what: "size \(newSize) needs an L1 table over 32 MiB")
        }
        if needed > UInt64(l1.count) { try growL1(entries: needed) }
        try file.sync()
        header.size = newSize
        try writeHeaderField(at: 24, newSize.bigEndianBytes)
        try file.sync()
    }

    /// Copies the L1 table to a larger allocation, switches the header to it, then frees the old one.
    private func growL1(entries: UInt64) throws {
        let bytes = entries * 8
        let newOffset = try allocateClusters((bytes + g.clusterMask) >> g.clusterBits)
        var raw = [UInt8](repeating: 0, count: Int(bytes))
        for (i, entry) in l1.enumerated() { raw.setBE64(i * 8, entry) }
        try file.write(raw, at: newOffset)
        fileSize = max(fileSize, newOffset + bytes)
        try file.sync()
        let oldOffset = header.l1TableOffset, oldBytes = UInt64(l1.count) * 8
        header.l1Size = UInt32(entries)
        header.l1TableOffset = newOffset
        try writeHeaderField(at: 36, header.l1Size.bigEndianBytes + newOffset.bigEndianBytes)
        try file.sync()
        l1 += [UInt64](repeating: 0, count: Int(entries) - l1.count)
        if oldBytes > 0 { try releaseClusters(at: oldOffset, length: (oldBytes + g.clusterMask) & ~g.clusterMask) }
    }

    /// Rewrites the header cluster with a new backing file name and format (no data is copied).
    func setBacking(name: String?, format: String?) throws {
        try requireWritable()
        var updated = header
        updated.backingFile = name
        updated.backingFormat = name == nil ? nil : format
        updated.backingFileOffset = 0
        updated.backingFileSize = 0
        try rewriteHeader(updated)
    }
}

extension QCOW2Image {
    /// Re-opens `path` with the lock-free read-write engine for one maintenance operation.
    private static func withEngine<T>(path: String, allowFlagged: Bool = false, metadataOnly: Bool = false,
                                      _ body: (QCOW2Engine) throws -> T) throws -> T {
        let file = try PosixFile(path: path, mode: .readWrite)
        let engine = try QCOW2Engine(file: file, readOnly: false, allowFlagged: allowFlagged, metadataOnly: metadataOnly)
        return try body(engine)
    }

    public static func resize(path: String, to size: UInt64, allowShrink: Bool = false) throws {
        try withEngine(path: path) { try $0.resize(to: size, allowShrink: allowShrink) }
    }

    public static func setBacking(path: String, name: String?, format: String?) throws {
        try withEngine(path: path, metadataOnly: true) { try $0.setBacking(name: name, format: format) }
    }

    public static func snapshots(path: String, sharing: ImageSharing = .standard) throws -> [QCOW2Snapshot] {
        let engine = try QCOW2Engine(file: try PosixFile(path: path, mode: .readOnly, sharing: sharing), readOnly: true)
        return try engine.readSnapshots()
    }

    public static func createSnapshot(path: String, name: String) throws {
        let now = Date().timeIntervalSince1970
        let seconds = UInt32(clamping: Int64(now))
        let nanoseconds = UInt32(clamping: Int64((now - Double(Int64(now))) * 1e9))
        try withEngine(path: path) { try $0.createSnapshot(name: name, now: (seconds, nanoseconds)) }
    }

    public static func applySnapshot(path: String, name: String) throws {
        try withEngine(path: path) { try $0.applySnapshot(name: name) }
    }

    public static func deleteSnapshot(path: String, name: String) throws {
        try withEngine(path: path) { try $0.deleteSnapshot(name: name) }
    }

    /// Checks the image; with a repair mode, opens it writable (even if marked dirty or corrupt) and fixes refcounts.
    public static func check(path: String, repair: QCOW2RepairMode = .none, sharing: ImageSharing = .standard) throws -> QCOW2CheckResult {
        if repair == .none {
            let engine = try QCOW2Engine(file: try PosixFile(path: path, mode: .readOnly, sharing: sharing), readOnly: true)
            return try engine.check()
        }
        return try withEngine(path: path, allowFlagged: true, metadataOnly: true) { try $0.repair(mode: repair) }
    }

    /// Drops every cluster of the active layer, so all reads fall through to the backing file (commit).
    public static func makeEmpty(path: String) throws {
        try withEngine(path: path) { engine in
            try engine.unmapClusters(from: 0)
            try engine.file.sync()
        }
    }
}
