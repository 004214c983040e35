/// The read path: walk L1/L2 per guest cluster, fall through to the backing image when unallocated.
extension QCOW2Engine {
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard rangeFits(offset, UInt64(buffer.count), within: header.size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
        }
        var done = 0
        while done < buffer.count {
            let guest = offset + UInt64(done)
            let inCluster = guest & g.clusterMask
            let length = Int(min(UInt64(buffer.count - done), g.clusterSize - inCluster))
            let mapping = try lookup(guest >> g.clusterBits)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + length)])
            try readMapped(mapping, into: target, guest: guest)
            done += length
        }
    }

    /// Reads part of one guest cluster (`buffer` never crosses a cluster boundary).
    func readMapped(_ mapping: ClusterMapping, into buffer: UnsafeMutableRawBufferPointer, guest: UInt64) throws {
        let inCluster = guest & g.clusterMask
        switch mapping {
        case .unallocated:
            try readBacking(into: buffer, at: guest)
        case .zero:
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
        case let .data(host, _):
            try file.readZeroFilled(into: buffer, at: host + inCluster)
        case let .compressed(host, length):
            try decompressCluster(host: host, length: length)
            decompressed.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(inCluster)..<(Int(inCluster) + buffer.count)]))
            }
        case let .subclusters(host, _, allocated, zero):
            try readSubclusters(host: host, allocated: allocated, zero: zero, into: buffer, guest: guest)
        }
    }

    /// Extended L2: runs of subclusters with the same state are read together.
    private func readSubclusters(host: UInt64, allocated: UInt32, zero: UInt32,
                                 into buffer: UnsafeMutableRawBufferPointer, guest: UInt64) throws {
        let inCluster = guest & g.clusterMask
        var done = 0
        while done < buffer.count {
            let position = inCluster + UInt64(done)
            let index = position / g.subclusterSize
            let state = (allocated >> index & 1, zero >> index & 1)
            var end = (index + 1) * g.subclusterSize
            var next = index + 1
            while next < 32 && (allocated >> next & 1, zero >> next & 1) == state {
                end += g.subclusterSize
                next += 1
            }
            let length = Int(min(end - position, UInt64(buffer.count - done)))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + length)])
            if state.0 == 1 {
                try file.readZeroFilled(into: part, at: host + position)
            } else if state.1 == 1 {
                part.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                try readBacking(into: part, at: guest + UInt64(done))
            }
            done += length
        }
    }

    /// Backing data where the backing image covers the range, zeroes beyond it.
    func readBacking(into buffer: UnsafeMutableRawBufferPointer, at guest: UInt64) throws {
        guard let backing, guest < backing.size else {
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        let covered = Int(min(UInt64(buffer.count), backing.size - guest))
        try backing.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<covered]), at: guest)
        if covered < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[covered...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Inflates the compressed cluster at `host` into `decompressed` (the last one stays cached).
    func decompressCluster(host: UInt64, length: UInt64) throws {
        if decompressedHost == host { return }
        decompressedHost = nil
        let readLength = Int(min(length, UInt64(compressedInput.count)))
        let got = try compressedInput.withUnsafeMutableBytes {
            try file.readAvailable(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<readLength]), at: host)
        }
        do {
            try compressedInput.withUnsafeBytes { input in
                try decompressed.withUnsafeMutableBytes { output in
                    try clusterCompression.decompress(UnsafeRawBufferPointer(rebasing: input[0..<got]), into: output)
                }
            }
        } catch let error as InflateError {
            throw QCOW2Error.decompressionFailed(path: path, hostOffset: host, reason: error.description)
        }
        decompressedHost = host
    }

    /// Status of the run starting at `offset` in this layer only (map, convert, commit use it).
    func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus {
        guard offset < header.size else {
            throw StorageError.outOfRange(path: path, offset: offset, length: maxLength)
        }
        let limit = min(maxLength, header.size - offset)
        var covered: UInt64 = 0
        var kind: ExtentStatus.Kind?
        while covered < limit {
            let guest = offset + covered
            let l1Index = (guest >> g.clusterBits) / g.l2Entries
            let (pieceKind, pieceLength): (ExtentStatus.Kind, UInt64)
            if l1Index >= UInt64(l1.count) || l1[Int(l1Index)] & QCOW2Geometry.offsetMask == 0 {
                // No L2 table: the whole range it would map is unallocated (keeps huge sparse disks fast).
                (pieceKind, pieceLength) = (.unallocated, (l1Index + 1) * g.l2Entries * g.clusterSize - guest)
            } else {
                (pieceKind, pieceLength) = status(of: try lookup(guest >> g.clusterBits), at: guest)
            }
            let length = min(pieceLength, limit - covered)
            if let kind {
                guard Self.continues(kind, with: pieceKind, after: covered) else { break }
            } else {
                kind = pieceKind
            }
            covered += length
        }
        return ExtentStatus(length: covered, kind: kind ?? .unallocated)
    }

    private static func continues(_ kind: ExtentStatus.Kind, with next: ExtentStatus.Kind, after length: UInt64) -> Bool {
        switch (kind, next) {
        case (.unallocated, .unallocated), (.zero, .zero): return true
        case let (.data(a?, false), .data(b?, false)): return a + length == b
        default: return false
        }
    }

    /// Kind and remaining length (to the end of the cluster or subcluster run) at `guest`.
    private func status(of mapping: ClusterMapping, at guest: UInt64) -> (ExtentStatus.Kind, UInt64) {
        let inCluster = guest & g.clusterMask
        let rest = g.clusterSize - inCluster
        switch mapping {
        case .unallocated: return (.unallocated, rest)
        case .zero: return (.zero, rest)
        case let .data(host, _): return (.data(hostOffset: host + inCluster, compressed: false), rest)
        case .compressed: return (.data(hostOffset: nil, compressed: true), rest)
        case let .subclusters(host, _, allocated, zero):
            let index = inCluster / g.subclusterSize
            let length = (index + 1) * g.subclusterSize - inCluster
            if allocated >> index & 1 == 1 { return (.data(hostOffset: host + inCluster, compressed: false), length) }
            if zero >> index & 1 == 1 { return (.zero, length) }
            return (.unallocated, length)
        }
    }
}

extension QCOW2Engine {
    /// The codec of this image's compressed clusters (validated when the header was parsed).
    var clusterCompression: ClusterCompression { ClusterCompression(rawValue: header.compressionType) ?? .deflate }
}
