/// The qcow2 file header and its extensions (docs/interop/qcow2.txt, "Header" and "Header extensions").
public struct QCOW2Header: Equatable, Sendable {
    public static let magic: UInt32 = 0x5146_49FB  // "QFI\xfb"
    static let v2Length = 72
    static let v3Length = 104
    static let maxBackingNameLength: UInt32 = 1023

    public enum Incompatible {
        public static let dirty: UInt64 = 1 << 0
        public static let corrupt: UInt64 = 1 << 1
        public static let externalDataFile: UInt64 = 1 << 2
        public static let compressionType: UInt64 = 1 << 3
        public static let extendedL2: UInt64 = 1 << 4
        static let known: UInt64 = 0x1F
    }
    public enum Compatible { public static let lazyRefcounts: UInt64 = 1 << 0 }
    public enum Autoclear { public static let bitmaps: UInt64 = 1 << 0; static let rawExternalData: UInt64 = 1 << 1 }

    enum ExtensionType: UInt32 {
        case end = 0
        case backingFormat = 0xE279_2ACA
        case featureNameTable = 0x6803_F857
        case bitmaps = 0x2385_2875
        case fullDiskEncryption = 0x0537_BE77
        case externalDataFile = 0x4441_5441
    }

    public struct FeatureName: Equatable, Sendable {
        public var type: UInt8
        public var bit: UInt8
        public var name: String
    }

    public struct RawExtension: Equatable, Sendable {
        public var type: UInt32
        public var data: [UInt8]
    }

    public var version: UInt32 = 3
    public var backingFileOffset: UInt64 = 0
    public var backingFileSize: UInt32 = 0
    public var clusterBits: UInt32 = 16
    public var size: UInt64 = 0
    public var cryptMethod: UInt32 = 0
    public var l1Size: UInt32 = 0
    public var l1TableOffset: UInt64 = 0
    public var refcountTableOffset: UInt64 = 0
    public var refcountTableClusters: UInt32 = 0
    public var snapshotCount: UInt32 = 0
    public var snapshotsOffset: UInt64 = 0
    public var incompatibleFeatures: UInt64 = 0
    public var compatibleFeatures: UInt64 = 0
    public var autoclearFeatures: UInt64 = 0
    public var refcountOrder: UInt32 = 4
    public var headerLength: UInt32 = 112
    public var compressionType: UInt8 = 0

    public var backingFile: String?
    public var backingFormat: String?
    public var featureNames: [FeatureName] = []
    /// The bitmaps extension's fields, when present (also kept raw in `otherExtensions`, so a
    /// rewritten header keeps it); whether they are valid is the autoclear bit's to say.
    var bitmaps: QCOW2BitmapsExtension?
    /// Extensions this implementation does not interpret, preserved when the header is rewritten.
    public var otherExtensions: [RawExtension] = []

    public var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    public var refcountBits: UInt64 { 1 << UInt64(refcountOrder) }
    public var hasExtendedL2: Bool { incompatibleFeatures & Incompatible.extendedL2 != 0 }

    public init() {}

    /// Parses the header from the start of the file (`bytes` holds at most the first cluster).
    public static func parse(_ bytes: [UInt8], path: String) throws -> QCOW2Header {
        func bad(_ reason: String) -> QCOW2Error { .invalidHeader(path: path, reason: reason) }
        guard bytes.count >= 8, bytes.be32(0) == magic else {
            throw bytes.count < 4 ? bad("file is too short (\(bytes.count) bytes)") : QCOW2Error.notQCOW2(path: path)
        }
        var h = QCOW2Header()
        h.version = bytes.be32(4)
        guard h.version == 2 || h.version == 3 else {
            throw QCOW2Error.unsupported(path: path, feature: "qcow2 version \(h.version)")
        }
        let fixedLength = h.version == 2 ? v2Length : v3Length
        guard bytes.count >= fixedLength else { throw bad("file is too short for a version \(h.version) header") }
        h.backingFileOffset = bytes.be64(8)
        h.backingFileSize = bytes.be32(16)
        h.clusterBits = bytes.be32(20)
        h.size = bytes.be64(24)
        h.cryptMethod = bytes.be32(32)
        h.l1Size = bytes.be32(36)
        h.l1TableOffset = bytes.be64(40)
        h.refcountTableOffset = bytes.be64(48)
        h.refcountTableClusters = bytes.be32(56)
        h.snapshotCount = bytes.be32(60)
        h.snapshotsOffset = bytes.be64(64)
        guard (9...21).contains(h.clusterBits) else { throw bad("cluster_bits \(h.clusterBits) outside 9...21") }
        if h.version == 2 {
            h.headerLength = UInt32(v2Length)
            h.refcountOrder = 4
        } else {
            h.incompatibleFeatures = bytes.be64(72)
            h.compatibleFeatures = bytes.be64(80)
            h.autoclearFeatures = bytes.be64(88)
            h.refcountOrder = bytes.be32(96)
            h.headerLength = bytes.be32(100)
            guard h.headerLength >= UInt32(v3Length), h.headerLength % 8 == 0 || h.headerLength == UInt32(v3Length),
                  UInt64(h.headerLength) <= h.clusterSize else {
                throw bad("header_length \(h.headerLength) is invalid")
            }
            guard Int(h.headerLength) <= bytes.count else { throw bad("header_length runs past end of file") }
            if h.headerLength > 104 { h.compressionType = bytes[104] }
        }
        guard h.refcountOrder <= 6 else { throw bad("refcount_order \(h.refcountOrder) exceeds 6") }
        guard h.cryptMethod == 0 else { throw QCOW2Error.unsupported(path: path, feature: "encryption (method \(h.cryptMethod))") }
        try h.parseExtensions(bytes, path: path)
        try h.checkFeatures(path: path)
        if h.backingFileOffset != 0 {
            guard h.backingFileSize <= maxBackingNameLength else { throw bad("backing file name longer than 1023 bytes") }
            guard rangeFits(h.backingFileOffset, UInt64(h.backingFileSize), within: UInt64(bytes.count)) else {
                throw bad("backing file name lies outside the header cluster")
            }
            let start = Int(h.backingFileOffset)
            h.backingFile = String(decoding: bytes[start..<start + Int(h.backingFileSize)], as: UTF8.self)
        }
        return h
    }

    private mutating func parseExtensions(_ bytes: [UInt8], path: String) throws {
        var at = Int(headerLength)
        let end = min(bytes.count, backingFileOffset != 0 && backingFileOffset < UInt64(bytes.count)
                      ? Int(backingFileOffset) : bytes.count)
        // Each extension consumes at least 8 bytes, so this loop ends within one cluster.
        while at + 8 <= end {
            let type = bytes.be32(at)
            let length = Int(bytes.be32(at + 4))
            if type == ExtensionType.end.rawValue { return }
            let dataStart = at + 8
            guard length <= end - dataStart else {
                throw QCOW2Error.invalidHeader(path: path, reason: "header extension 0x\(String(type, radix: 16)) runs past the header cluster")
            }
            let data = Array(bytes[dataStart..<dataStart + length])
            switch ExtensionType(rawValue: type) {
            case .backingFormat:
                backingFormat = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case .featureNameTable:
                var i = 0
                while i + 48 <= data.count {
                    let name = String(decoding: data[(i + 2)..<(i + 48)].prefix { $0 != 0 }, as: UTF8.self)
                    featureNames.append(FeatureName(type: data[i], bit: data[i + 1], name: name))
                    i += 48
                }
            case .bitmaps:
                bitmaps = try QCOW2BitmapsExtension(data, path: path)
                otherExtensions.append(RawExtension(type: type, data: data))
            case .fullDiskEncryption:
                throw QCOW2Error.unsupported(path: path, feature: "full disk encryption")
            case .externalDataFile:
                throw QCOW2Error.unsupported(path: path, feature: "external data file")
            default:
                otherExtensions.append(RawExtension(type: type, data: data))
            }
            at = dataStart + (length + 7) / 8 * 8
        }
    }

    private func checkFeatures(path: String) throws {
        let unknown = incompatibleFeatures & ~Incompatible.known
        if unknown != 0 {
            let names = (0..<64).filter { unknown & (1 << UInt64($0)) != 0 }.map { bit in
                featureNames.first { $0.type == 0 && Int($0.bit) == bit }?.name ?? "bit \(bit)"
            }
            throw QCOW2Error.unsupported(path: path, feature: "unknown incompatible feature(s): \(names.joined(separator: ", "))")
        }
        if autoclearFeatures & Autoclear.rawExternalData != 0 && incompatibleFeatures & Incompatible.externalDataFile == 0 {
            throw QCOW2Error.invalidHeader(path: path, reason: "data-file-raw is set, but the image has no external data file")
        }
        if incompatibleFeatures & Incompatible.externalDataFile != 0 {
            throw QCOW2Error.unsupported(path: path, feature: "external data file")
        }
        if incompatibleFeatures & Incompatible.compressionType != 0 || compressionType != 0 {
            guard headerLength > 104 else {
                throw QCOW2Error.invalidHeader(path: path, reason: "compression type bit set but header has no compression_type field")
            }
            guard ClusterCompression(rawValue: compressionType) != nil else {
                throw QCOW2Error.invalidHeader(path: path, reason: "unknown compression type \(compressionType)")
            }
        }
        if hasExtendedL2 && clusterBits < 14 {
            throw QCOW2Error.invalidHeader(path: path, reason: "extended L2 entries need clusters of at least 16 KiB")
        }
    }

    /// Serializes header, extensions and backing file name into the first cluster.
    public func encode(path: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: version == 2 ? QCOW2Header.v2Length : Int(max(headerLength, 104)))
        out.setBE32(0, QCOW2Header.magic)
        out.setBE32(4, version)
        out.setBE32(20, clusterBits)
        out.setBE64(24, size)
        out.setBE32(32, cryptMethod)
        out.setBE32(36, l1Size)
        out.setBE64(40, l1TableOffset)
        out.setBE64(48, refcountTableOffset)
        out.setBE32(56, refcountTableClusters)
        out.setBE32(60, snapshotCount)
        out.setBE64(64, snapshotsOffset)
        if version == 3 {
            out.setBE64(72, incompatibleFeatures)
            out.setBE64(80, compatibleFeatures)
            out.setBE64(88, autoclearFeatures)
            out.setBE32(96, refcountOrder)
            out.setBE32(100, UInt32(out.count))
            if out.count > 104 { out[104] = compressionType }
        }
        func appendExtension(_ type: UInt32, _ data: [UInt8]) {
            out += type.bigEndianBytes + UInt32(data.count).bigEndianBytes + data
            out += [UInt8](repeating: 0, count: (8 - data.count % 8) % 8)
        }
        if let backingFormat, backingFile != nil { appendExtension(ExtensionType.backingFormat.rawValue, Array(backingFormat.utf8)) }
        if version == 3 && !featureNames.isEmpty {
            var table: [UInt8] = []
            for feature in featureNames {
                var entry = [UInt8](repeating: 0, count: 48)
                entry[0] = feature.type
                entry[1] = feature.bit
                for (i, byte) in feature.name.utf8.prefix(46).enumerated() { entry[2 + i] = byte }
                table += entry
            }
            appendExtension(ExtensionType.featureNameTable.rawValue, table)
        }
        for ext in otherExtensions { appendExtension(ext.type, ext.data) }
        out += [UInt8](repeating: 0, count: 8)  // end of extensions
        if let backingFile {
            let name = Array(backingFile.utf8)
            guard name.count <= Int(QCOW2Header.maxBackingNameLength) else {
                throw QCOW2Error.invalidOperation(path: path, reason: "backing file name longer than 1023 bytes")
            }
            out.setBE64(8, UInt64(out.count))
            out.setBE32(16, UInt32(name.count))
            out += name
        }
        guard UInt64(out.count) <= clusterSize else {
            throw QCOW2Error.invalidOperation(path: path, reason: "header and extensions do not fit in the first cluster")
        }
        return out
    }

    /// The feature names qemu writes, so `qemu-img info` can name bits even for older readers.
    static let standardFeatureNames: [FeatureName] = [
        FeatureName(type: 0, bit: 0, name: "dirty bit"),
        FeatureName(type: 0, bit: 1, name: "corrupt bit"),
        FeatureName(type: 0, bit: 2, name: "external data file"),
        FeatureName(type: 0, bit: 3, name: "compression type"),
        FeatureName(type: 0, bit: 4, name: "extended L2 entries"),
        FeatureName(type: 1, bit: 0, name: "lazy refcounts"),
        FeatureName(type: 2, bit: 0, name: "bitmaps"),
        FeatureName(type: 2, bit: 1, name: "raw external data"),
    ]
}
