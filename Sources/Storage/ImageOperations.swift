/// Image-level operations behind `vireo img` (convert, compare, map, commit, rebase), over any BlockDevice.
public enum ImageOperations {
    /// Where a guest range's content comes from, looking down the backing chain (qemu-img map's fields).
    public struct ChainExtent: Equatable, Sendable {
        public var start: UInt64
        public var length: UInt64
        /// How many backing levels below the top the range is described (chain length if nowhere).
        public var depth: Int
        public var present: Bool
        public var zero: Bool
        public var data: Bool
        public var compressed: Bool
        public var offset: UInt64?
    }

    public static func chainExtent(_ device: any BlockDevice, at offset: UInt64, maxLength: UInt64) throws -> ChainExtent {
        var current: any BlockDevice = device
        var depth = 0
        var length = min(maxLength, device.size - offset)
        while true {
            guard let layer = current as? any ExtentMapping else {
                return ChainExtent(start: offset, length: length, depth: depth, present: true, zero: false, data: true,
                                   compressed: false, offset: nil)
            }
            let status = try layer.extentStatus(at: offset, maxLength: length)
            length = status.length
            switch status.kind {
            case .zero:
                return ChainExtent(start: offset, length: length, depth: depth, present: true, zero: true, data: false,
                                   compressed: false, offset: nil)
            case let .data(host, compressed):
                return ChainExtent(start: offset, length: length, depth: depth, present: true, zero: false, data: true,
                                   compressed: compressed, offset: host)
            case .unallocated:
                guard let backing = layer.backingDevice, offset < backing.size else {
                    return ChainExtent(start: offset, length: length, depth: depth + (layer.backingDevice == nil ? 0 : 1),
                                       present: false, zero: true, data: false, compressed: false, offset: nil)
                }
                length = min(length, backing.size - offset)
                current = backing
                depth += 1
            }
        }
    }

    /// The whole map of a device, adjacent extents with equal properties merged (qemu-img map).
    public static func map(_ device: any BlockDevice) throws -> [ChainExtent] {
        var result: [ChainExtent] = []
        var offset: UInt64 = 0
        while offset < device.size {
            let extent = try chainExtent(device, at: offset, maxLength: device.size - offset)
            guard extent.length > 0 else { throw StorageError.invalidArgument("empty extent at \(offset)") }
            if var last = result.last, last.depth == extent.depth, last.present == extent.present, last.zero == extent.zero,
               last.data == extent.data, last.compressed == extent.compressed,
               last.offset.map({ $0 + last.length }) == extent.offset {
                last.length += extent.length
                result[result.count - 1] = last
            } else {
                result.append(extent)
            }
            offset += extent.length
        }
        return result
    }

    static let chunkSize: UInt64 = 2 << 20

    static func isZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let words = buffer.count / 8
        while index < words {
            if buffer.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
            index += 1
        }
        for i in (words * 8)..<buffer.count where buffer[i] != 0 { return false }
        return true
    }

    /// Copies `source` into a freshly created `destination`; zero ranges are skipped (the target reads zero).
    public static func convert(from source: any BlockDevice, to destination: any BlockDevice, compress: Bool = false,
                               progress: ((UInt64, UInt64) -> Void)? = nil) throws {
        guard destination.size >= source.size else {
            throw StorageError.invalidArgument("destination (\(destination.size) bytes) is smaller than source (\(source.size) bytes)")
        }
        let qcow2 = destination as? QCOW2Image
        let granule = qcow2?.clusterSize ?? 65536
        let chunk = max(chunkSize / granule, 1) * granule
        var buffer = [UInt8](repeating: 0, count: Int(chunk))
        var offset: UInt64 = 0
        // The source's extents are asked for up to 256 MiB at a time and remembered, so a hole is
        // skipped whole and a data extent is asked about once, not once per 2 MiB chunk (for a
        // sparse raw source, a SEEK_DATA/SEEK_HOLE pair per chunk was most of the convert's time).
        var known: (zero: Bool, end: UInt64)?
        while offset < source.size {
            if known == nil || offset >= known!.end {
                let extent = try chainExtent(source, at: offset, maxLength: min(256 << 20, source.size - offset))
                known = (extent.zero, offset + extent.length)
            }
            let extent = known!
            if extent.zero {
                offset = extent.end
                progress?(offset, source.size)
                continue
            }
            let length = Int(min(extent.end - offset, chunk - offset % chunk))
            try buffer.withUnsafeMutableBytes { raw in
                let part = UnsafeMutableRawBufferPointer(rebasing: raw[0..<length])
                try source.read(into: part, at: offset)
                // Skip all-zero granules so the target stays sparse; write each run of the others
                // in one call (a qcow2 target then writes the run's data and L2 entries once).
                var at = 0, run = 0
                func flushRun(upTo end: Int) throws {
                    if run < end {
                        let piece = UnsafeRawBufferPointer(rebasing: raw[run..<end])
                        let position = offset + UInt64(run)
                        if compress, let qcow2, position % granule == 0 {
                            try qcow2.writeCompressed(piece, at: position)
                        } else {
                            try destination.write(piece, at: position)
                        }
                    }
                }
                while at < length {
                    let end = min(length, Int((offset + UInt64(at)) / granule * granule + granule - offset))
                    if isZero(UnsafeRawBufferPointer(rebasing: raw[at..<end])) {
                        try flushRun(upTo: at)
                        run = end
                    }
                    at = end
                }
                try flushRun(upTo: length)
            }
            offset += UInt64(length)
            progress?(offset, source.size)
        }
        try destination.flush()
    }

    /// nil if both read the same (a longer image must read zero past the shorter), else the first differing offset.
    public static func firstMismatch(_ a: any BlockDevice, _ b: any BlockDevice) throws -> UInt64? {
        let common = min(a.size, b.size)
        var left = [UInt8](repeating: 0, count: Int(chunkSize))
        var right = [UInt8](repeating: 0, count: Int(chunkSize))
        var offset: UInt64 = 0
        while offset < max(a.size, b.size) {
            let limit = offset < common ? common : max(a.size, b.size)
            let length = Int(min(chunkSize, limit - offset))
            let ea = offset < a.size ? try chainExtent(a, at: offset, maxLength: UInt64(length)) : nil
            let eb = offset < b.size ? try chainExtent(b, at: offset, maxLength: UInt64(length)) : nil
            if (ea?.zero ?? true) && (eb?.zero ?? true) {
                offset += min(ea?.length ?? UInt64(length), eb?.length ?? UInt64(length))
                continue
            }
            try left.withUnsafeMutableBytes { l in
                let part = UnsafeMutableRawBufferPointer(rebasing: l[0..<length])
                if offset < a.size { try a.read(into: part, at: offset) } else { part.initializeMemory(as: UInt8.self, repeating: 0) }
            }
            try right.withUnsafeMutableBytes { r in
                let part = UnsafeMutableRawBufferPointer(rebasing: r[0..<length])
                if offset < b.size { try b.read(into: part, at: offset) } else { part.initializeMemory(as: UInt8.self, repeating: 0) }
            }
            for i in 0..<length where left[i] != right[i] { return offset + UInt64(i) }
            offset += UInt64(length)
        }
        return nil
    }

    /// Writes every range the top layer describes into `backing` (opened writable), then flushes it.
    public static func commit(top: any ExtentMapping, into backing: any BlockDevice) throws {
        var buffer = [UInt8](repeating: 0, count: Int(chunkSize))
        var offset: UInt64 = 0
        let end = min(top.size, backing.size)
        while offset < end {
            let status = try top.extentStatus(at: offset, maxLength: min(chunkSize, end - offset))
            switch status.kind {
            case .unallocated: break
            case .zero: try backing.writeZeroes(at: offset, length: status.length)
            case .data:
                try buffer.withUnsafeMutableBytes { raw in
                    let part = UnsafeMutableRawBufferPointer(rebasing: raw[0..<Int(status.length)])
                    try top.read(into: part, at: offset)
                    try backing.write(UnsafeRawBufferPointer(part), at: offset)
                }
            }
            offset += status.length
        }
        try backing.flush()
    }

    /// Safe rebase: where `top` falls through and old and new backing differ, copy the old content into `top`.
    public static func copyBackingDifferences(top: any ExtentMapping, oldBacking: (any BlockDevice)?,
                                              newBacking: (any BlockDevice)?) throws {
        var old = [UInt8](repeating: 0, count: Int(chunkSize))
        var new = [UInt8](repeating: 0, count: Int(chunkSize))
        func fill(_ buffer: inout [UInt8], _ device: (any BlockDevice)?, _ offset: UInt64, _ length: Int) throws {
            try buffer.withUnsafeMutableBytes { raw in
                let part = UnsafeMutableRawBufferPointer(rebasing: raw[0..<length])
                part.initializeMemory(as: UInt8.self, repeating: 0)
                guard let device, offset < device.size else { return }
                let covered = Int(min(UInt64(length), device.size - offset))
                try device.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<covered]), at: offset)
            }
        }
        var offset: UInt64 = 0
        while offset < top.size {
            let status = try top.extentStatus(at: offset, maxLength: min(chunkSize, top.size - offset))
            if status.kind == .unallocated {
                let length = Int(status.length)
                try fill(&old, oldBacking, offset, length)
                try fill(&new, newBacking, offset, length)
                if old[0..<length] != new[0..<length] {
                    try old.withUnsafeBytes { try top.write(UnsafeRawBufferPointer(rebasing: $0[0..<length]), at: offset) }
                }
            }
            offset += status.length
        }
        try top.flush()
    }
}
