/// Parameters of a new qcow2 image (qemu-img create -o names in comments).
public struct QCOW2CreateOptions: Sendable {
    public var size: UInt64
    public var clusterSize: UInt64 = 65536      // cluster_size
    public var version: UInt32 = 3              // compat=0.10 (2) or 1.1 (3)
    public var lazyRefcounts = false            // lazy_refcounts
    public var extendedL2 = false               // extended_l2
    public var refcountBits: UInt64 = 16        // refcount_bits
    public var backingFile: String?             // -b
    public var backingFormat: String?           // -F

    public init(size: UInt64) { self.size = size }
}

extension QCOW2Image {
    /// Writes a new empty image: header, refcount table and blocks, then a zeroed L1 table.
    public static func create(path: String, options: QCOW2CreateOptions, overwrite: Bool = true) throws {
        func reject(_ reason: String) -> QCOW2Error { .invalidOperation(path: path, reason: reason) }
        let clusterSize = options.clusterSize
        guard clusterSize.nonzeroBitCount == 1, (512...(2 << 20)).contains(clusterSize) else {
            throw reject("cluster size must be a power of two between 512 and 2M")
        }
        guard options.refcountBits.nonzeroBitCount == 1, options.refcountBits <= 64 else {
            throw reject("refcount width must be a power of two up to 64 bits")
        }
        guard options.version == 3 || options.version == 2 else { throw reject("compat level must be 0.10 or 1.1") }
        if options.version == 2 {
            guard options.refcountBits == 16 else { throw reject("compat=0.10 supports only 16-bit refcounts") }
            guard !options.lazyRefcounts, !options.extendedL2 else { throw reject("lazy refcounts and extended L2 need compat=1.1") }
        }
        guard !options.extendedL2 || clusterSize >= 16384 else {
            throw reject("extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        }
        guard options.size <= QCOW2Limits.maxVirtualSize else { throw reject("virtual size exceeds the 64 PiB limit") }
        var header = QCOW2Header()
        header.version = options.version
        header.clusterBits = UInt32(clusterSize.trailingZeroBitCount)
        header.size = options.size
        header.refcountOrder = UInt32(options.refcountBits.trailingZeroBitCount)
        header.headerLength = options.version == 3 ? 112 : 72
        if options.version == 3 {
            header.featureNames = QCOW2Header.standardFeatureNames
            if options.lazyRefcounts { header.compatibleFeatures |= QCOW2Header.Compatible.lazyRefcounts }
            if options.extendedL2 { header.incompatibleFeatures |= QCOW2Header.Incompatible.extendedL2 }
        }
        header.backingFile = options.backingFile
        header.backingFormat = options.backingFile == nil ? nil : options.backingFormat
        let geometry = QCOW2Geometry(header: header)
        let l1Entries = geometry.l1EntriesNeeded(forSize: options.size)
        guard l1Entries * 8 <= QCOW2Limits.maxL1Bytes else {
            throw reject("virtual size is too large for cluster size \(clusterSize) (L1 table would exceed 32 MiB)")
        }
        let l1Clusters = (l1Entries * 8 + clusterSize - 1) / clusterSize
        // Refcount structures must cover themselves, the header and the L1 table.
        var tableClusters: UInt64 = 1
        var blockCount: UInt64 = 1
        while true {
            let total = 1 + tableClusters + blockCount + l1Clusters
            let blocks = (total + geometry.refcountEntriesPerBlock - 1) / geometry.refcountEntriesPerBlock
            let table = max(1, (blocks * 8 + clusterSize - 1) / clusterSize)
            if blocks == blockCount && table == tableClusters { break }
            (blockCount, tableClusters) = (blocks, table)
        }
        guard tableClusters * clusterSize <= QCOW2Limits.maxRefcountTableBytes else {
            throw reject("refcount table would exceed 8 MiB")
        }
        let totalClusters = 1 + tableClusters + blockCount + l1Clusters
        header.refcountTableOffset = clusterSize
        header.refcountTableClusters = UInt32(tableClusters)
        header.l1TableOffset = (1 + tableClusters + blockCount) * clusterSize
        header.l1Size = UInt32(l1Entries)

        let file = try PosixFile(path: path, mode: overwrite ? .createTruncate : .createExclusive)
        try file.write(try header.encode(path: path), at: 0)
        var table = [UInt8](repeating: 0, count: Int(tableClusters * clusterSize))
        for block in 0..<blockCount { table.setBE64(Int(block) * 8, (1 + tableClusters + block) * clusterSize) }
        try file.write(table, at: clusterSize)
        for block in 0..<blockCount {
            var bytes = [UInt8](repeating: 0, count: Int(clusterSize))
            let first = block * geometry.refcountEntriesPerBlock
            for cluster in first..<min(totalClusters, first + geometry.refcountEntriesPerBlock) {
                _ = QCOW2Engine.setEntry(in: &bytes, index: cluster - first, order: geometry.refcountOrder, value: 1)
            }
            try file.write(bytes, at: (1 + tableClusters + block) * clusterSize)
        }
        try file.truncate(to: totalClusters * clusterSize)
        try file.sync()
    }
}
