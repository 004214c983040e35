/// Cluster arithmetic derived from a validated header.
struct QCOW2Geometry: Sendable {
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00  // bits 9-55 of L1/L2 entries
    static let copiedFlag: UInt64 = 1 << 63
    static let compressedFlag: UInt64 = 1 << 62
    static let zeroFlag: UInt64 = 1
    static let allSubclustersAllocated: UInt64 = 0xFFFF_FFFF
    static let allSubclustersZero: UInt64 = 0xFFFF_FFFF << 32

    let clusterBits: UInt64
    let clusterSize: UInt64
    let extendedL2: Bool
    let l2EntryBytes: Int
    let l2Entries: UInt64
    let subclusterSize: UInt64
    let refcountOrder: UInt64
    let refcountEntriesPerBlock: UInt64
    /// First bit of the compressed-size field in a compressed L2 descriptor (x in the spec).
    let compressedSizeShift: UInt64

    init(header: QCOW2Header) {
        clusterBits = UInt64(header.clusterBits)
        clusterSize = 1 << clusterBits
        extendedL2 = header.hasExtendedL2
        l2EntryBytes = extendedL2 ? 16 : 8
        l2Entries = clusterSize / UInt64(l2EntryBytes)
        subclusterSize = extendedL2 ? clusterSize / 32 : clusterSize
        refcountOrder = UInt64(header.refcountOrder)
        refcountEntriesPerBlock = (clusterSize * 8) >> refcountOrder
        compressedSizeShift = 62 - (clusterBits - 8)
    }

    var clusterMask: UInt64 { clusterSize - 1 }
    var maxRefcount: UInt64 { refcountOrder == 6 ? UInt64.max : (1 << (1 << refcountOrder)) - 1 }

    /// L1 entries needed to map `size` guest bytes (nil on overflow).
    func l1EntriesNeeded(forSize size: UInt64) -> UInt64 {
        let clusters = size / clusterSize + (size % clusterSize == 0 ? 0 : 1)
        return clusters / l2Entries + (clusters % l2Entries == 0 ? 0 : 1)
    }

    func isAligned(_ offset: UInt64) -> Bool { offset & clusterMask == 0 }
}

/// What one L2 entry says about a guest cluster.
enum ClusterMapping: Equatable {
    case unallocated
    /// Reads as zeroes; `host` is a preallocated cluster that may be reused on write.
    case zero(host: UInt64?, copied: Bool)
    case data(host: UInt64, copied: Bool)
    /// Deflate stream at a byte offset; `length` bytes may be read (sector-rounded).
    case compressed(host: UInt64, length: UInt64)
    /// Extended L2 standard cluster with per-subcluster allocation and zero bits.
    case subclusters(host: UInt64, copied: Bool, allocated: UInt32, zero: UInt32)

    /// Host offset of the cluster this entry holds a reference to, if any.
    var referencedHost: UInt64? {
        switch self {
        case .unallocated: return nil
        case let .zero(host, _): return host
        case let .data(host, _): return host
        case let .compressed(host, _): return host
        case let .subclusters(host, _, _, _): return host == 0 ? nil : host
        }
    }
}

extension QCOW2Geometry {
    /// Decodes and validates an L2 entry (plus its subcluster bitmap when extended).
    func decode(_ entry: UInt64, bitmap: UInt64, version: UInt32, path: String, fileSize: UInt64) throws -> ClusterMapping {
        if entry & QCOW2Geometry.compressedFlag != 0 {
            let offsetBits = compressedSizeShift
            let host = entry & ((1 << offsetBits) - 1)
            let sectorField = (entry >> offsetBits) & ((1 << (62 - offsetBits)) - 1)
            let length = (sectorField + 1) * 512 - (host & 511)
            guard host >= clusterSize, host < fileSize else {
                throw QCOW2Error.corruptMetadata(path: path, what: "compressed cluster offset outside the image file", offset: host)
            }
            return .compressed(host: host, length: length)
        }
        let host = entry & QCOW2Geometry.offsetMask
        let copied = entry & QCOW2Geometry.copiedFlag != 0
        if host != 0 {
            guard isAligned(host) else {
                throw QCOW2Error.corruptMetadata(path: path, what: "data cluster offset is not cluster aligned", offset: host)
            }
            guard host >= clusterSize else {
                throw QCOW2Error.corruptMetadata(path: path, what: "data cluster points into the image header", offset: host)
            }
        }
        if extendedL2 {
            let allocated = UInt32(truncatingIfNeeded: bitmap)
            let zero = UInt32(truncatingIfNeeded: bitmap >> 32)
            guard allocated & zero == 0 else {
                throw QCOW2Error.corruptMetadata(path: path, what: "subcluster both allocated and zero", offset: host)
            }
            if allocated != 0 {
                guard host != 0 else {
                    throw QCOW2Error.corruptMetadata(path: path, what: "allocated subclusters without a host cluster", offset: 0)
                }
                guard host < fileSize else {
                    throw QCOW2Error.corruptMetadata(path: path, what: "data cluster lies past the end of the file", offset: host)
                }
            }
            if allocated == 0 && zero == 0 && host == 0 { return .unallocated }
            return .subclusters(host: host, copied: copied, allocated: allocated, zero: zero)
        }
        if version >= 3 && entry & QCOW2Geometry.zeroFlag != 0 {
            return .zero(host: host == 0 ? nil : host, copied: copied)
        }
        if host == 0 { return .unallocated }
        guard host < fileSize else {
            throw QCOW2Error.corruptMetadata(path: path, what: "data cluster lies past the end of the file", offset: host)
        }
        return .data(host: host, copied: copied)
    }
}
