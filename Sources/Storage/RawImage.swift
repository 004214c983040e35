/// A raw disk image: guest offset == file offset.
public final class RawImage: ExtentMapping {
    let file: PosixFile
    public let path: String
    public let isReadOnly: Bool
    public let size: UInt64
    public var backingDevice: (any BlockDevice)? { nil }
    /// Opened without a format, by probing: writes may not give the first sector another
    /// format's signature (`ImageSignature`), and must cover all of it to touch it.
    public let probed: Bool

    public init(path: String, readOnly: Bool, probed: Bool = false, sharing: ImageSharing = .standard,
                allowBlockDevice: Bool = true) throws {
        self.file = try PosixFile(path: path, mode: readOnly ? .readOnly : .readWrite, sharing: sharing,
                                  allowBlockDevice: allowBlockDevice)
        self.path = path
        self.isReadOnly = readOnly
        self.probed = probed
        self.size = try file.size()
    }

    /// QEMU's rule for probed raw images: a write touching the first sector must cover all of it
    /// and leave it without any known format's signature.
    private func checkProbedHeader(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard probed, offset < UInt64(ImageSignature.headLength), buffer.count > 0 else { return }
        guard offset == 0, buffer.count >= ImageSignature.headLength,
              ImageSignature.format(head: buffer.prefix(ImageSignature.headLength)) == nil else {
            throw StorageError.probedRawHeaderWrite(path: path)
        }
    }

    /// Creates (or truncates) a sparse raw image of `size` bytes.
    public static func create(path: String, size: UInt64) throws {
        let file = try PosixFile(path: path, mode: .createTruncate)
        try file.truncate(to: size)
        try file.sync()
    }

    /// Grows or shrinks the file; the caller must hold no other open handle expecting the old size.
    public static func resize(path: String, to newSize: UInt64) throws {
        let file = try PosixFile(path: path, mode: .readWrite)
        try file.truncate(to: newSize)
        try file.sync()
    }

    public var allocatedBytes: UInt64 { (try? file.allocatedBytes()) ?? 0 }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard rangeFits(offset, UInt64(buffer.count), within: size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
        }
        try file.readZeroFilled(into: buffer, at: offset)
    }

    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard !isReadOnly else { throw StorageError.readOnly(path: path) }
        guard rangeFits(offset, UInt64(buffer.count), within: size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
        }
        try checkProbedHeader(buffer, at: offset)
        try file.write(buffer, at: offset)
    }

    public func releaseLocks() { file.lock?.release() }
    public func acquireLocks() throws { try file.lock?.acquire() }

    public func flush() throws {
        guard !isReadOnly else { return }
        try file.sync()
    }

    public func discard(at offset: UInt64, length: UInt64) throws {
        try writeZeroes(at: offset, length: length)
    }

    public func writeZeroes(at offset: UInt64, length: UInt64) throws {
        guard !isReadOnly else { throw StorageError.readOnly(path: path) }
        guard rangeFits(offset, length, within: size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: length)
        }
        // Ranges that are already holes read as zeroes and are left alone.
        let chunk = [UInt8](repeating: 0, count: 1 << 16)
        var done: UInt64 = 0
        while done < length {
            let n = Int(min(UInt64(chunk.count), length - done))
            if let data = file.nextData(from: offset + done), data >= offset + done + UInt64(n) {
                done += UInt64(n)
                continue
            }
            try chunk.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: offset + done) }
            done += UInt64(n)
        }
    }

    /// Holes in the file are reported as zero extents, everything else as data.
    public func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus {
        guard offset < size else { throw StorageError.outOfRange(path: path, offset: offset, length: maxLength) }
        let limit = min(maxLength, size - offset)
        guard let data = file.nextData(from: offset) else { return ExtentStatus(length: limit, kind: .zero) }
        if data > offset { return ExtentStatus(length: min(limit, data - offset), kind: .zero) }
        let hole = file.nextHole(from: offset) ?? size
        return ExtentStatus(length: min(limit, max(hole, offset + 1) - offset), kind: .data(hostOffset: offset, compressed: false))
    }
}
