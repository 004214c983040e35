import Synchronization

/// A qcow2 image (version 2 or 3) usable as a block device; thread safe through one lock.
public final class QCOW2Image: ExtentMapping {
    /// Only touched inside `lock`; the engine holds buffers and caches that are not thread safe.
    nonisolated(unsafe) let engine: QCOW2Engine
    let lock = Mutex<Void>(())
    public let path: String
    public let isReadOnly: Bool
    public let backingDevice: (any BlockDevice)?

    /// Opens `path` and, unless `openBacking` is false, its whole backing chain (read-only).
    public convenience init(path: String, readOnly: Bool, openBacking: Bool = true, sharing: ImageSharing = .standard) throws {
        try self.init(path: path, readOnly: readOnly, openBacking: openBacking, sharing: sharing, chain: [canonicalPath(path)])
    }

    init(path: String, readOnly: Bool, openBacking: Bool, sharing: ImageSharing, chain: [String],
         allowBlockDevice: Bool = true) throws {
        let file = try PosixFile(path: path, mode: readOnly ? .readOnly : .readWrite, sharing: sharing,
                                 allowBlockDevice: allowBlockDevice)
        let engine = try QCOW2Engine(file: file, readOnly: readOnly)
        var backing: (any BlockDevice)?
        if openBacking, let name = engine.header.backingFile {
            backing = try DiskImage.openBacking(name: name, format: engine.header.backingFormat, of: path, chain: chain,
                                                sharing: sharing)
        }
        engine.backing = backing
        self.backingDevice = backing
        self.engine = engine
        self.path = path
        self.isReadOnly = readOnly
    }

    public func releaseLocks() {
        locked { $0.file.lock?.release() }
        releaseBackingLocks()
    }

    public func acquireLocks() throws {
        try acquireBackingLocks()
        try locked { try $0.file.lock?.acquire() }
    }

    func locked<T>(_ body: (QCOW2Engine) throws -> T) rethrows -> T {
        try lock.withLock { _ in try body(engine) }
    }

    public var size: UInt64 { locked { $0.header.size } }
    public var header: QCOW2Header { locked { $0.header } }
    public var clusterSize: UInt64 { locked { $0.g.clusterSize } }
    /// Host bytes allocated to the file (qemu-img's "disk size").
    public var allocatedBytes: UInt64 { locked { (try? $0.file.allocatedBytes()) ?? 0 } }
    public var fileLength: UInt64 { locked { $0.fileSize } }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try locked { try $0.read(into: buffer, at: offset) }
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try locked { try $0.write(buffer, at: offset) }
    }

    /// For an image no one can use before this writer's final `flush` (the fresh output of
    /// `vireo img convert`): leaves out the fsyncs that order refcounts before the references to
    /// them while writing (one per 4 MiB allocated, one per new L2 table); `flush` still makes
    /// everything durable. A crash before that flush leaves an unfinished output either way.
    public func skipOrderingSyncs() {
        locked { $0.orderingSyncs = false }
    }

    public func flush() throws {
        guard !isReadOnly else { return }
        try locked { try $0.flush() }
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        try locked { try $0.zeroRange(at: offset, length: length, discardOnly: true) }
    }

    public func writeZeroes(at offset: UInt64, length: UInt64) throws {
        try locked { try $0.zeroRange(at: offset, length: length, discardOnly: false) }
    }

    public func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus {
        try locked { try $0.extentStatus(at: offset, maxLength: maxLength) }
    }

    /// Writes whole clusters deflated, starting at a cluster-aligned `offset` (used by convert -c).
    public func writeCompressed(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try locked { engine in
            let clusterSize = Int(engine.g.clusterSize)
            guard offset & engine.g.clusterMask == 0 else {
                throw StorageError.invalidArgument("compressed writes must start on a cluster boundary")
            }
            var deflater = Deflater()
            var done = 0
            while done < buffer.count {
                let guest = offset + UInt64(done)
                let length = min(clusterSize, buffer.count - done)
                let piece = UnsafeRawBufferPointer(rebasing: buffer[done..<(done + length)])
                if length == clusterSize {
                    try engine.writeCompressed(guest >> engine.g.clusterBits, data: piece, deflater: &deflater)
                } else {
                    try engine.write(piece, at: guest)  // the disk's last, partial cluster
                }
                done += length
            }
        }
    }
}
