/// The interface a virtual disk offers to virtio-blk and to the image tools, whatever the format.
public protocol BlockDevice: AnyObject, Sendable {
    var size: UInt64 { get }
    var isReadOnly: Bool { get }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes every completed write durable (fsync).
    func flush() throws
    /// Advisory: the range's contents become unspecified-but-stable; backends may do nothing.
    func discard(at offset: UInt64, length: UInt64) throws
    /// The range reads as zeroes afterwards, allocating as little as possible.
    func writeZeroes(at offset: UInt64, length: UInt64) throws
}

/// How one layer of an image describes a run of guest bytes (qemu-img map's vocabulary).
public struct ExtentStatus: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// Not described by this layer: reads fall through to the backing image (or zeroes).
        case unallocated
        /// Described by this layer as zeroes.
        case zero
        /// Data stored in this layer at `hostOffset` (nil when not a plain file offset).
        case data(hostOffset: UInt64?, compressed: Bool)
    }
    public var length: UInt64
    public var kind: Kind

    public init(length: UInt64, kind: Kind) {
        self.length = length
        self.kind = kind
    }
}

/// Images that can report how their layer maps guest ranges (for map, convert, commit, rebase).
public protocol ExtentMapping: BlockDevice {
    /// Status of the run starting at `offset`, at most `maxLength` bytes long (never 0 inside the disk).
    func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus
    /// The image this layer falls through to, if any.
    var backingDevice: (any BlockDevice)? { get }
    /// Lets go of this layer's image locks (`ImageLock`) and its backing chain's: a migration
    /// source hands its disks over so. The image stays open and usable.
    func releaseLocks()
    /// Takes the locks again after `releaseLocks`; throws `StorageError.locked` on a conflict.
    func acquireLocks() throws
}

extension ExtentMapping {
    /// The backing chain's part of `releaseLocks`.
    func releaseBackingLocks() { (backingDevice as? any ExtentMapping)?.releaseLocks() }
    func acquireBackingLocks() throws { try (backingDevice as? any ExtentMapping)?.acquireLocks() }
}
