/// Where ELF images decompressed from bzImage payloads are kept between boots, so the next boot
/// of the same kernel skips the host-side decompression (seconds for an xz kernel where host user
/// space is slow). Boot reads no files itself: the caller supplies the store (VMM's
/// `KernelPayloadCacheDirectory`), and whatever it returns is checked like any untrusted file.
public protocol BzImagePayloadCache: Sendable {
    /// Names the bzImage's contents (a strong hash of the whole file); nil when no key can be
    /// computed, which only means no caching.
    func key(for bzImage: [UInt8]) -> PayloadCacheKey?
    /// The ELF stored under `key`; entries larger than `maximumSize` are not read.
    func load(_ key: PayloadCacheKey, maximumSize: Int) -> PayloadCacheLookup
    /// Stores (or replaces) the entry; returns why it was not stored, nil on success.
    func store(_ elf: [UInt8], for key: PayloadCacheKey) -> String?
}

public struct PayloadCacheKey: Sendable, Hashable {
    /// Lower-case hex digest, also the entry's file name.
    public let digest: String
    /// What the notes call it, e.g. "sha256 1a2b3c4d…".
    public let label: String

    public init(digest: String, label: String) { self.digest = digest; self.label = label }
}

public enum PayloadCacheLookup: Sendable, Equatable {
    case miss
    case hit([UInt8])
    /// An entry exists but could not be read (permissions, I/O error, too large): treated as a miss
    /// and replaced.
    case unreadable(String)
}
