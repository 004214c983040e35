import Foundation
import Storage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A guest disk as the devices use it, with write tracking for `--copy-storage-all`: while a
/// migration mirrors the disk, every write, discard or zeroing marks the 1 MiB chunks it touched,
/// so later rounds send them again. Off, it costs one atomic load per request.
final class TrackedDisk: BlockDevice, @unchecked Sendable {
    static let chunkSize: UInt64 = 1 << 20

    let inner: any BlockDevice
    private let tracking = Atomic<Bool>(false)
    private let dirty = Mutex<[UInt64]>([])

    init(_ inner: any BlockDevice) { self.inner = inner }

    var size: UInt64 { inner.size }
    var isReadOnly: Bool { inner.isReadOnly }
    var chunkCount: Int { Int((inner.size + Self.chunkSize - 1) / Self.chunkSize) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try inner.read(into: buffer, at: offset) }

    // Marked after the write: a mirror that read the chunk before the write finished sends it again.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        defer { mark(offset, UInt64(buffer.count)) }
        try inner.write(buffer, at: offset)
    }

    func flush() throws { try inner.flush() }

    func discard(at offset: UInt64, length: UInt64) throws {
        defer { mark(offset, length) }
        try inner.discard(at: offset, length: length)
    }

    func writeZeroes(at offset: UInt64, length: UInt64) throws {
        defer { mark(offset, length) }
        try inner.writeZeroes(at: offset, length: length)
    }

    func startTracking() {
        dirty.withLock { $0 = [UInt64](repeating: 0, count: (chunkCount + 63) / 64) }
        tracking.store(true, ordering: .releasing)
    }

    func stopTracking() {
        tracking.store(false, ordering: .releasing)
        dirty.withLock { $0 = [] }
    }

    /// The chunks written since tracking started or since the last call (one bit per chunk).
    func takeDirtyChunks() -> [UInt64] {
        dirty.withLock { bits in
            defer { bits = [UInt64](repeating: 0, count: bits.count) }
            return bits
        }
    }

    private func mark(_ offset: UInt64, _ length: UInt64) {
        guard tracking.load(ordering: .acquiring), length > 0 else { return }
        let first = offset / Self.chunkSize, last = (offset + length - 1) / Self.chunkSize
        dirty.withLock { bits in
            for chunk in first...last where Int(chunk / 64) < bits.count { bits[Int(chunk / 64)] |= 1 << (chunk % 64) }
        }
    }
}

/// What the destination needs to know about each disk a `--copy-storage-all` migration mirrors.
struct MirroredDisk: Codable, Equatable {
    var size: UInt64
    /// The source's file, to refuse a destination that would write into the very same file (one
    /// host, same path): device and inode numbers, and the boot this identity is valid in.
    var device: UInt64
    var inode: UInt64
    var bootID: String

    static func identity(of path: String) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    static var bootID: String {
        (readSmallFile("/proc/sys/kernel/random/boot_id", limit: 64) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// The source side of disk mirroring: sends whole disks, then what was written meanwhile.
final class DiskMirrorSender {
    let channel: MigrationChannel
    let disks: [TrackedDisk]
    private(set) var bytesSent: UInt64 = 0
    private var buffer = [UInt8](repeating: 0, count: 16 + Int(TrackedDisk.chunkSize))

    init(channel: MigrationChannel, disks: [TrackedDisk]) {
        self.channel = channel
        self.disks = disks
    }

    /// Round one: every disk, whole (data where the image, or its backing chain, has data; zeros
    /// elsewhere, as one small frame per run).
    func sendAll(cancelled: () -> Bool) throws {
        for (index, disk) in disks.enumerated() {
            var offset: UInt64 = 0
            while offset < disk.size {
                if cancelled() { throw MigrationError.cancelled }
                let extent = try ImageOperations.chainExtent(disk.inner, at: offset, maxLength: min(disk.size - offset, 64 << 20))
                guard extent.length > 0 else { throw MigrationError.corrupt("disk \(index): empty extent at \(offset)") }
                if extent.data {
                    var done: UInt64 = 0
                    while done < extent.length {
                        let count = min(TrackedDisk.chunkSize, extent.length - done)
                        try sendData(disk: index, offset: offset + done, length: count)
                        done += count
                    }
                } else {
                    try sendZeros(disk: index, offset: offset, length: extent.length)
                }
                offset += extent.length
            }
        }
    }

    /// The chunks written since the last look; returns the bytes that were dirty.
    @discardableResult
    func sendDirty() throws -> UInt64 {
        var bytes: UInt64 = 0
        for (index, disk) in disks.enumerated() {
            let bits = disk.takeDirtyChunks()
            for (word, value) in bits.enumerated() where value != 0 {
                for bit in 0..<64 where value & (1 << UInt64(bit)) != 0 {
                    let offset = UInt64(word * 64 + bit) * TrackedDisk.chunkSize
                    guard offset < disk.size else { break }
                    let length = min(TrackedDisk.chunkSize, disk.size - offset)
                    try sendData(disk: index, offset: offset, length: length)
                    bytes += length
                }
            }
        }
        return bytes
    }

    /// Dirty bytes waiting, without taking them.
    var pendingBytes: UInt64 {
        disks.reduce(0) { total, disk in
            let bits = disk.takeDirtyChunksPeek()
            return total + UInt64(bits.reduce(0) { $0 + $1.nonzeroBitCount }) * TrackedDisk.chunkSize
        }
    }

    private func sendData(disk: Int, offset: UInt64, length: UInt64) throws {
        MigrationChannel.put(UInt32(disk), at: 0, in: &buffer)
        MigrationChannel.put(UInt32(0), at: 4, in: &buffer)
        MigrationChannel.put(offset, at: 8, in: &buffer)
        try buffer.withUnsafeMutableBytes { raw in
            let data = UnsafeMutableRawBufferPointer(rebasing: raw[16..<(16 + Int(length))])
            try disks[disk].read(into: data, at: offset)
            if Self.isZero(UnsafeRawBufferPointer(data)) {
                try sendZeros(disk: disk, offset: offset, length: length)
            } else {
                try channel.send(.diskData, [UnsafeRawBufferPointer(rebasing: raw[0..<(16 + Int(length))])])
                bytesSent += length
            }
        }
    }

    private func sendZeros(disk: Int, offset: UInt64, length: UInt64) throws {
        var frame = [UInt8](repeating: 0, count: 24)
        MigrationChannel.put(UInt32(disk), at: 0, in: &frame)
        MigrationChannel.put(offset, at: 8, in: &frame)
        MigrationChannel.put(length, at: 16, in: &frame)
        try channel.send(.diskZeros, bytes: frame)
    }

    private static let zeros = [UInt8](repeating: 0, count: Int(TrackedDisk.chunkSize))

    private static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        zeros.withUnsafeBytes { memcmp(bytes.baseAddress!, $0.baseAddress!, bytes.count) == 0 }
    }
}

extension TrackedDisk {
    /// The dirty chunks without clearing them (for the expected-downtime estimate).
    func takeDirtyChunksPeek() -> [UInt64] { dirty.withLock { $0 } }
}

/// The destination side: the disks a `--copy-storage-all` migration writes, created when missing
/// (same format and size as the source's), opened read-write for the transfer and flushed and
/// closed before the machine is built (which opens them again as its own).
final class DiskMirrorReceiver {
    private var images: [any BlockDevice] = []

    /// `targets`: where this side's disks are (the launch's --disk paths, or the source's when none).
    init(mirrored: [MirroredDisk], targets: [DiskOptions], log: (String) -> Void) throws {
        guard mirrored.count == targets.count else {
            throw MigrationError.corrupt("\(mirrored.count) mirrored disks for \(targets.count) disks")
        }
        let bootID = MirroredDisk.bootID
        for (disk, target) in zip(mirrored, targets) {
            let path = target.path
            if let identity = MirroredDisk.identity(of: path), identity.device == disk.device, identity.inode == disk.inode,
               disk.bootID == bootID {
                throw MigrationError.busy("--copy-storage-all would copy the disk \(path) onto itself (source and destination are the same file on this host): give the destination its own --disk path=...")
            }
            let format = ImageFormat(rawValue: target.format?.rawValue ?? "raw") ?? .raw
            if access(path, F_OK) != 0 {
                switch format {
                case .raw: try RawImage.create(path: path, size: disk.size)
                case .qcow2: try QCOW2Image.create(path: path, options: QCOW2CreateOptions(size: disk.size), overwrite: false)
                }
                log("created \(format.rawValue) image \(path) (\(disk.size >> 20) MiB) for the mirrored disk")
            }
            let image = try DiskImage.open(path: path, format: format, readOnly: false)
            guard image.size >= disk.size else {
                throw MigrationError.busy("the destination's disk \(path) holds \(image.size) bytes; the source's has \(disk.size)")
            }
            images.append(image)
        }
    }

    func receiveData(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.count > 16 else { throw MigrationError.corrupt("a disk data frame of \(payload.count) bytes") }
        let (image, offset) = try target(payload, length: UInt64(payload.count - 16))
        try image.write(UnsafeRawBufferPointer(rebasing: payload[16...]), at: offset)
    }

    func receiveZeros(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.count == 24 else { throw MigrationError.corrupt("a disk zeros frame of \(payload.count) bytes") }
        let length: UInt64 = MigrationChannel.get(payload, 16)
        let (image, offset) = try target(payload, length: length)
        try image.writeZeroes(at: offset, length: length)
    }

    private func target(_ payload: UnsafeRawBufferPointer, length: UInt64) throws -> (any BlockDevice, UInt64) {
        let index = Int(MigrationChannel.get(payload, 0) as UInt32)
        let offset: UInt64 = MigrationChannel.get(payload, 8)
        guard index < images.count else { throw MigrationError.corrupt("data for disk \(index) of \(images.count)") }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= images[index].size else {
            throw MigrationError.corrupt("disk \(index): \(length) bytes at \(offset) lie outside the disk")
        }
        return (images[index], offset)
    }

    /// Makes everything durable and lets go of the images.
    func finish() throws {
        for image in images { try image.flush() }
        images = []
    }
}
