import Foundation

/// What `img info` reports, with qemu-img's JSON field names so scripts can switch tools.
public struct ImageInfo: Sendable {
    public var filename: String
    public var format: ImageFormat
    public var virtualSize: UInt64
    public var actualSize: UInt64
    public var clusterSize: UInt64?
    public var dirty: Bool
    public var backingFilename: String?
    public var fullBackingFilename: String?
    public var backingFormat: String?
    public var snapshots: [QCOW2Snapshot]
    public var header: QCOW2Header?
    /// Persistent dirty bitmaps, as QEMU sees them (none when stale).
    public var bitmaps: [QCOW2Bitmap] = []
    /// A foreign image's format as qemu-img names it ("vpc", "vmdk"); `format` is then moot.
    public var foreignFormat: String?

    /// The format's name as qemu-img prints it.
    public var formatName: String { foreignFormat ?? format.rawValue }

    /// Reads the facts about one image (not its backing files).
    public static func collect(path: String, format: ImageFormat? = nil, sharing: ImageSharing = .standard) throws -> ImageInfo {
        let probed: ImageFormat
        do {
            probed = try format ?? DiskImage.probeFormat(path: path)
        } catch StorageError.foreignFormat(let foreignPath, let name) {
            // A format Vireo converts from: its size and what it occupies; else the error stands.
            guard let (found, image) = try ForeignImage.open(path: path, sharing: sharing) else {
                throw StorageError.foreignFormat(path: foreignPath, format: name)
            }
            let used = (try? PosixFile(path: path, mode: .readOnly, sharing: .unlocked).allocatedBytes()) ?? 0
            var info = ImageInfo(filename: path, format: .raw, virtualSize: image.size, actualSize: used,
                                 clusterSize: nil, dirty: false, snapshots: [], header: nil)
            info.foreignFormat = found
            return info
        }
        switch probed {
        case .raw:
            let raw = try RawImage(path: path, readOnly: true, sharing: sharing)
            return ImageInfo(filename: path, format: .raw, virtualSize: raw.size, actualSize: raw.allocatedBytes,
                             clusterSize: nil, dirty: false, snapshots: [], header: nil)
        case .qcow2:
            let image = try QCOW2Image(path: path, readOnly: true, openBacking: false, sharing: sharing)
            let header = image.header
            var info = ImageInfo(filename: path, format: .qcow2, virtualSize: header.size, actualSize: image.allocatedBytes,
                             clusterSize: header.clusterSize,
                             dirty: header.incompatibleFeatures & QCOW2Header.Incompatible.dirty != 0,
                             backingFilename: header.backingFile,
                             fullBackingFilename: header.backingFile.map { DiskImage.resolveBackingPath($0, relativeTo: path) },
                             backingFormat: header.backingFormat,
                             snapshots: try QCOW2Image.snapshots(path: path, sharing: sharing), header: header)
            info.bitmaps = try QCOW2Image.bitmaps(path: path, sharing: sharing)
            return info
        }
    }

    /// The image and each backing file below it, top first (`info --backing-chain`).
    public static func collectChain(path: String, format: ImageFormat? = nil, sharing: ImageSharing = .standard) throws -> [ImageInfo] {
        var chain = [try collect(path: path, format: format, sharing: sharing)]
        var seen: Set<String> = [canonicalPath(path)]
        while let next = chain.last?.fullBackingFilename {
            guard chain.count < DiskImage.maxBackingDepth else {
                throw QCOW2Error.backingChainTooDeep(path: path, limit: DiskImage.maxBackingDepth)
            }
            guard seen.insert(canonicalPath(next)).inserted else { throw QCOW2Error.backingLoop(path: path, backing: next) }
            chain.append(try collect(path: next, format: chain.last?.backingFormat.flatMap(ImageFormat.init(rawValue:)), sharing: sharing))
        }
        return chain
    }

    /// A JSON-ready dictionary with exactly qemu-img's keys.
    public var jsonObject: [String: Any] {
        var object: [String: Any] = [
            "filename": filename, "format": formatName, "virtual-size": virtualSize,
            "actual-size": actualSize, "dirty-flag": dirty,
        ]
        if let clusterSize { object["cluster-size"] = clusterSize }
        if let backingFilename { object["backing-filename"] = backingFilename }
        if let fullBackingFilename { object["full-backing-filename"] = fullBackingFilename }
        if let backingFormat { object["backing-filename-format"] = backingFormat }
        if !snapshots.isEmpty {
            object["snapshots"] = snapshots.map { s -> [String: Any] in
                ["id": s.id, "name": s.name, "vm-state-size": s.vmStateSize, "date-sec": s.dateSeconds,
                 "date-nsec": s.dateNanoseconds, "vm-clock-sec": s.vmClockNanoseconds / 1_000_000_000,
                 "vm-clock-nsec": s.vmClockNanoseconds % 1_000_000_000, "icount": s.icount ?? 0]
            }
        }
        if let header {
            var data: [String: Any] = ["compat": header.version == 2 ? "0.10" : "1.1", "refcount-bits": header.refcountBits]
            if header.version == 3 {
                data["lazy-refcounts"] = header.compatibleFeatures & QCOW2Header.Compatible.lazyRefcounts != 0
                if !bitmaps.isEmpty {
                    data["bitmaps"] = bitmaps.map { ["flags": $0.flagNames, "name": $0.name, "granularity": $0.granularity] as [String: Any] }
                }
                data["corrupt"] = header.incompatibleFeatures & QCOW2Header.Incompatible.corrupt != 0
                data["extended-l2"] = header.hasExtendedL2
            }
            data["compression-type"] = header.compressionType == 1 ? "zstd" : "zlib"
            object["format-specific"] = ["type": "qcow2", "data": data]
        }
        return object
    }

    public static func json(_ value: Any) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
