/// virtio-blk feature bits (VIRTIO 1.2 §5.2.3).
public enum VirtioBlockFeature {
    public static let sizeMax: UInt64 = 1 << 1
    public static let segMax: UInt64 = 1 << 2
    public static let readOnly: UInt64 = 1 << 5
    public static let blockSize: UInt64 = 1 << 6
    public static let flush: UInt64 = 1 << 9
    public static let discard: UInt64 = 1 << 13
    public static let writeZeroes: UInt64 = 1 << 14
}

/// Host settings for one virtio-blk disk (`--disk path=..,readonly=on,serial=..`).
public struct VirtioBlockConfiguration: Sendable, Equatable {
    /// Refuse writes even when the backend could take them (a read-only backend forces this on).
    public var readOnly: Bool
    /// What VIRTIO_BLK_T_GET_ID returns: at most 20 bytes of UTF-8, NUL-padded (§5.2.6).
    public var serial: String
    /// Logical block size the guest sees (blk_size, §5.2.4): a power of two from 512 to 4096.
    public var logicalBlockSize: UInt32
    /// Offer DISCARD and WRITE_ZEROES (only ever offered on a writable disk).
    public var discard: Bool
    /// Descriptors in the request queue: a power of two from 4 to 1024.
    public var queueSize: UInt16

    public init(readOnly: Bool = false, serial: String = "", logicalBlockSize: UInt32 = 512,
                discard: Bool = true, queueSize: UInt16 = 256) {
        self.readOnly = readOnly
        self.serial = serial
        self.logicalBlockSize = logicalBlockSize
        self.discard = discard
        self.queueSize = queueSize
    }

    /// Checks every field; returns the serial as the 20 bytes GET_ID writes.
    func validatedSerial() throws(VirtioBlockConfigurationError) -> [UInt8] {
        let serialBytes = Array(serial.utf8)
        guard serialBytes.count <= VirtioBlockLimits.idBytes else {
            throw .serialTooLong(serial, bytes: serialBytes.count)
        }
        // Linux caps its own block size at the page size; smaller than a sector makes no sense.
        guard logicalBlockSize >= 512, logicalBlockSize <= 4096, logicalBlockSize & (logicalBlockSize - 1) == 0 else {
            throw .invalidBlockSize(logicalBlockSize)
        }
        guard queueSize >= 4, queueSize <= 1024, queueSize & (queueSize - 1) == 0 else {
            throw .invalidQueueSize(queueSize)
        }
        return serialBytes + [UInt8](repeating: 0, count: VirtioBlockLimits.idBytes - serialBytes.count)
    }
}

public enum VirtioBlockConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case serialTooLong(String, bytes: Int)
    case invalidBlockSize(UInt32)
    case invalidQueueSize(UInt16)

    public var description: String {
        switch self {
        case let .serialTooLong(serial, bytes):
            return "disk serial '\(serial)' is \(bytes) bytes; virtio-blk allows at most \(VirtioBlockLimits.idBytes)"
        case let .invalidBlockSize(size):
            return "logical block size \(size) is not a power of two from 512 to 4096"
        case let .invalidQueueSize(size):
            return "virtio-blk queue size \(size) is not a power of two from 4 to 1024"
        }
    }
}

/// What the disk has served, for domstats. Counters only grow; they wrap at 2^64 like /proc's.
public struct VirtioBlockStatistics: Sendable, Equatable, Codable {
    public var readRequests: UInt64 = 0
    public var readBytes: UInt64 = 0
    public var writeRequests: UInt64 = 0
    public var writeBytes: UInt64 = 0
    public var flushRequests: UInt64 = 0
    /// DISCARD and WRITE_ZEROES requests.
    public var discardRequests: UInt64 = 0
    /// Requests answered VIRTIO_BLK_S_IOERR (bad range, read-only disk, backend failure).
    public var errors: UInt64 = 0
    /// Requests answered VIRTIO_BLK_S_UNSUPP.
    public var unsupported: UInt64 = 0

    public init() {}
}

/// Fixed limits this implementation advertises and enforces.
enum VirtioBlockLimits {
    static let sectorSize: UInt64 = 512
    static let headerBytes = 16
    static let idBytes = 20
    /// size_max: largest single data segment the driver may use.
    static let sizeMax: UInt32 = 1 << 20
    /// Data moves through a scratch buffer of this size, whatever the request length.
    static let scratchBytes = 256 << 10
    /// Per-request caps for DISCARD / WRITE_ZEROES (each range is served synchronously).
    static let maxDiscardSectors: UInt32 = 1 << 17
    static let maxDiscardSegments: UInt32 = 16
    static let discardSegmentBytes = 16
}

/// Offsets in struct virtio_blk_config (§5.2.4).
enum VirtioBlockConfigLayout {
    static let capacity = 0
    static let sizeMax = 8
    static let segMax = 12
    static let blockSize = 20
    static let maxDiscardSectors = 36
    static let maxDiscardSegments = 40
    static let discardSectorAlignment = 44
    static let maxWriteZeroesSectors = 48
    static let maxWriteZeroesSegments = 52
    static let writeZeroesMayUnmap = 56
    /// Through the secure-erase fields, which stay zero (the feature is not offered).
    static let size = 72
}
