import CZlib

/// Read-only readers for other hypervisors' images, so that `vireo img convert` and `img info`
/// take what users bring from Hyper-V/Virtual PC and VMware: VHD ("vpc": fixed and dynamic), VHDX
/// (VHDXImage.swift) and VMDK (monolithicSparse and streamOptimized, single-file). VMs never run on them: `vireo run`
/// names the format and says to convert (StorageError.foreignFormat). Every field comes from the
/// file and is checked before use: a hostile image is a one-line error, never a crash or a read
/// outside the file.
public enum ForeignImage {
    /// Opens `path` if it is a foreign image Vireo reads; nil if it is not a foreign image at all
    /// (raw or qcow2); throws `foreignFormat` for the foreign formats it does not read (a VMDK made
    /// of several files, differencing VHD/VHDX, VDI...), and `corruptImage` for a malformed one.
    public static func open(path: String, sharing: ImageSharing = .standard) throws -> (format: String, image: any ExtentMapping)? {
        let file = try PosixFile(path: path, mode: .readOnly, sharing: sharing)
        var head = [UInt8](repeating: 0, count: ImageSignature.headLength)
        let got = try head.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 0) }
        let size = try file.size()
        if head.prefix(got).starts(with: Array("KDMV".utf8)) { return ("vmdk", try VMDKSparseImage(file: file, path: path)) }
        if head.prefix(got).starts(with: Array("# Disk DescriptorFile".utf8)) {
            throw StorageError.foreignFormat(path: path, format: "VMDK descriptor (its data is in separate extent files)")
        }
        if head.prefix(got).starts(with: Array("conectix".utf8)) { return ("vpc", try VHDImage(file: file, path: path)) }
        if head.prefix(got).starts(with: VHDXImage.identifier) { return ("vhdx", try VHDXImage(file: file, path: path)) }
        // A fixed VHD is raw data with the footer at the end (QEMU, too, probes it as raw).
        if size >= 1024 {
            var tail = [UInt8](repeating: 0, count: 512)
            _ = try tail.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: size - 512) }
            if tail.starts(with: Array("conectix".utf8)) { return ("vpc", try VHDImage(file: file, path: path)) }
        }
        if let other = ImageSignature.format(head: head.prefix(got)), other != "qcow2" {
            throw StorageError.foreignFormat(path: path, format: other)
        }
        return nil
    }
}

/// A reader shared by the foreign formats: the file, and what each layout says per block.
class ForeignImageBase: @unchecked Sendable {
    let file: PosixFile
    let path: String
    let format: String
    let fileSize: UInt64
    var size: UInt64 = 0

    init(file: PosixFile, path: String, format: String) throws {
        self.file = file
        self.path = path
        self.format = format
        fileSize = try file.size()
    }

    var isReadOnly: Bool { true }
    var backingDevice: (any BlockDevice)? { nil }

    func corrupt(_ reason: String) -> StorageError { .corruptImage(path: path, format: format, reason: reason) }

    func bytes(at offset: UInt64, count: Int, what: String) throws -> [UInt8] {
        guard rangeFits(offset, UInt64(count), within: fileSize) else {
            throw corrupt("\(what) at offset \(offset) (\(count) bytes) lies past the end of the file (\(fileSize) bytes)")
        }
        var buffer = [UInt8](repeating: 0, count: count)
        try buffer.withUnsafeMutableBytes { try file.readExactly(into: $0, at: offset) }
        return buffer
    }

    /// Reads guest bytes through `locate`: where a guest offset lives in the file (nil: it reads
    /// as zeros) and for how many bytes that holds.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
              locate: (UInt64) throws -> (host: UInt64?, run: UInt64)) throws {
        guard rangeFits(offset, UInt64(buffer.count), within: size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
        }
        var done = 0
        while done < buffer.count {
            let (host, run) = try locate(offset + UInt64(done))
            let count = Int(min(run, UInt64(buffer.count - done)))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count])
            if let host { try file.readExactly(into: part, at: host) } else { part.initializeMemory(as: UInt8.self, repeating: 0) }
            done += count
        }
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws { throw StorageError.readOnly(path: path) }
    func flush() throws {}
    func discard(at offset: UInt64, length: UInt64) throws { throw StorageError.readOnly(path: path) }
    func writeZeroes(at offset: UInt64, length: UInt64) throws { throw StorageError.readOnly(path: path) }
    func releaseLocks() { file.lock?.release() }
    func acquireLocks() throws { try file.lock?.acquire() }
}

// MARK: - VHD

/// Microsoft's VHD ("vpc" in QEMU): a 512-byte big-endian footer ("conectix") at the end, copied
/// at the start of a dynamic disk; a dynamic disk's header ("cxsparse") locates the block
/// allocation table, whose entries are the sector of each block's bitmap, the data following it.
final class VHDImage: ForeignImageBase, ExtentMapping, @unchecked Sendable {
    enum DiskType: UInt32 { case fixed = 2, dynamic = 3, differencing = 4 }

    private(set) var diskType = DiskType.fixed
    /// Dynamic disks: the BAT (sector of each block, 0xFFFFFFFF unallocated) and its block size.
    private var table: [UInt32] = []
    private var blockSize: UInt64 = 0
    private var bitmapBytes: UInt64 = 0

    init(file: PosixFile, path: String) throws {
        try super.init(file: file, path: path, format: "vpc")
        guard fileSize >= 512 else { throw corrupt("file is too short for a VHD footer") }
        // The footer at the end is authoritative; a dynamic disk's copy at offset 0 stands in for
        // a damaged or missing one (QEMU reads it the same way).
        var footer = try bytes(at: fileSize - 512, count: 512, what: "footer")
        if !footer.starts(with: Array("conectix".utf8)) {
            footer = try bytes(at: 0, count: 512, what: "footer copy")
            guard footer.starts(with: Array("conectix".utf8)) else { throw corrupt("no VHD footer") }
        }
        guard let type = DiskType(rawValue: footer.be32(60)) else { throw corrupt("disk type \(footer.be32(60)) is not fixed, dynamic or differencing") }
        guard type != .differencing else {
            throw StorageError.foreignFormat(path: path, format: "differencing VHD (a child of another VHD: convert the whole chain with qemu-img)")
        }
        diskType = type
        size = Self.virtualSize(footer)
        switch type {
        case .fixed:
            guard size <= fileSize - 512 else { throw corrupt("fixed disk of \(size) bytes in a file of \(fileSize)") }
        case .dynamic:
            let headerOffset = footer.be64(16)
            let header = try bytes(at: headerOffset, count: 1024, what: "dynamic disk header")
            guard header.starts(with: Array("cxsparse".utf8)) else { throw corrupt("no dynamic disk header (cxsparse) at \(headerOffset)") }
            let tableOffset = header.be64(16)
            let entries = header.be32(28)
            blockSize = UInt64(header.be32(32))
            guard blockSize >= 512, blockSize <= 256 << 20, blockSize.nonzeroBitCount == 1 else {
                throw corrupt("block size \(blockSize) is not a power of two from 512 bytes to 256 MiB")
            }
            guard UInt64(entries) * blockSize >= size, entries <= 1 << 24 else {
                throw corrupt("\(entries) blocks of \(blockSize) bytes cannot hold \(size) bytes")
            }
            // One bit per sector, in whole sectors.
            bitmapBytes = ((blockSize / 512 + 7) / 8 + 511) / 512 * 512
            let raw = try bytes(at: tableOffset, count: Int(entries) * 4, what: "block allocation table")
            table = (0..<Int(entries)).map { raw.be32($0 * 4) }
        case .differencing:
            break
        }
    }

    /// QEMU's rule: images from Virtual PC (and QEMU before 2.6) have the CHS geometry as their
    /// size, all others (Hyper-V, qemu-img today) the footer's current size.
    static func virtualSize(_ footer: [UInt8]) -> UInt64 {
        let creator = String(decoding: footer[28..<32], as: UTF8.self)
        let cylinders = UInt64(footer.be16(56)), heads = UInt64(footer[58]), sectors = UInt64(footer[59])
        let geometry = cylinders * heads * sectors * 512
        let maximal = cylinders == 65535 && heads == 16 && sectors == 255
        return (creator == "vpc " || creator == "qemu") && !maximal ? geometry : footer.be64(48)
    }

    /// Where guest `offset` lives in the file (nil: unallocated, reads as zero) and how far that holds.
    private func locate(_ offset: UInt64) throws -> (host: UInt64?, run: UInt64) {
        guard diskType == .dynamic else { return (offset, size - offset) }
        let block = offset / blockSize, within = offset % blockSize
        let run = min(blockSize - within, size - offset)
        let entry = table[Int(block)]
        guard entry != 0xFFFF_FFFF else { return (nil, run) }
        let host = UInt64(entry) * 512 + bitmapBytes + within
        guard rangeFits(host, run, within: fileSize) else { throw corrupt("block \(block) at sector \(entry) lies past the end of the file") }
        return (host, run)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try read(into: buffer, at: offset, locate: locate)
    }

    func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus {
        let (host, run) = try locate(offset)
        let length = min(run, maxLength)
        return ExtentStatus(length: length, kind: host.map { .data(hostOffset: $0, compressed: false) } ?? .zero)
    }
}

// MARK: - VMDK

/// VMware's hosted sparse extent ("KDMV", little-endian), the single-file VMDKs: monolithicSparse
/// (grain directory → grain tables → grains) and streamOptimized (the same, with each grain
/// deflated behind a marker, and the directory's location in a footer at the end).
final class VMDKSparseImage: ForeignImageBase, ExtentMapping, @unchecked Sendable {
    private var grainBytes: UInt64 = 0
    private var tableEntries: UInt64 = 0
    private var directory: [UInt32] = []
    private var compressed = false
    private var zeroedGrains = false
    /// Grain tables read lately (one is 2 KiB with the usual 512 entries, at most 16 KiB).
    private var tables: [Int: [UInt32]] = [:]
    private static let cachedTables = 256

    private static let gdAtEnd = UInt64.max

    init(file: PosixFile, path: String) throws {
        try super.init(file: file, path: path, format: "vmdk")
        var header = try bytes(at: 0, count: 512, what: "header")
        guard header.le32(4) == 1 || header.le32(4) == 2 || header.le32(4) == 3 else {
            throw corrupt("sparse extent version \(header.le32(4)) (1, 2 or 3 expected)")
        }
        if header.le64(56) == Self.gdAtEnd {
            // streamOptimized: the real header is the footer, one sector before the end-of-stream marker.
            guard fileSize >= 1536 else { throw corrupt("stream-optimized file is too short for its footer") }
            let footer = try bytes(at: fileSize - 1024, count: 512, what: "footer")
            guard footer.starts(with: Array("KDMV".utf8)), footer.le64(56) != Self.gdAtEnd else {
                throw corrupt("stream-optimized image without a footer (not closed properly?)")
            }
            header = footer
        }
        let flags = header.le32(8)
        compressed = flags & (1 << 16) != 0
        zeroedGrains = flags & (1 << 2) != 0
        let capacity = header.le64(12), grainSectors = header.le64(20)
        tableEntries = UInt64(header.le32(44))
        let directoryOffset = header.le64(56)
        guard grainSectors >= 8, grainSectors <= 128, grainSectors.nonzeroBitCount == 1 else {
            throw corrupt("grain size of \(grainSectors) sectors (a power of two from 8 to 128 expected)")
        }
        guard tableEntries >= 1, tableEntries <= 4096 else { throw corrupt("\(tableEntries) entries per grain table") }
        guard capacity <= (1 << 41) else { throw corrupt("capacity of \(capacity) sectors exceeds 1 PiB") }
        if compressed && header.le16(77) != 1 { throw corrupt("compression algorithm \(header.le16(77)) (only deflate is defined)") }
        grainBytes = grainSectors * 512
        size = capacity * 512
        let grains = (capacity + grainSectors - 1) / grainSectors
        let directoryEntries = (grains + tableEntries - 1) / tableEntries
        guard directoryEntries <= 1 << 22 else { throw corrupt("grain directory of \(directoryEntries) entries") }
        let raw = try bytes(at: directoryOffset * 512, count: Int(directoryEntries) * 4, what: "grain directory")
        directory = (0..<Int(directoryEntries)).map { raw.le32($0 * 4) }
    }

    private func table(_ index: Int) throws -> [UInt32]? {
        if let cached = tables[index] { return cached }
        let sector = directory[index]
        guard sector != 0 else { return nil }
        let raw = try bytes(at: UInt64(sector) * 512, count: Int(tableEntries) * 4, what: "grain table \(index)")
        let entries = (0..<Int(tableEntries)).map { raw.le32($0 * 4) }
        // Bounded: a directory of millions of entries (all naming one table) must not make us
        // hold millions of copies. Reads are sequential, so dropping all is as good as LRU.
        if tables.count >= Self.cachedTables { tables.removeAll(keepingCapacity: true) }
        tables[index] = entries
        return entries
    }

    /// The grain holding `offset`: its file sector (nil: unallocated or zeroed) and the bytes left in it.
    private func grain(at offset: UInt64) throws -> (sector: UInt32?, within: UInt64, run: UInt64) {
        let grain = offset / grainBytes, within = offset % grainBytes
        let run = min(grainBytes - within, size - offset)
        guard let entries = try table(Int(grain / tableEntries)) else { return (nil, within, run) }
        let sector = entries[Int(grain % tableEntries)]
        // 0: unallocated; 1: a grain of zeros (with the zeroed-grain flag).
        guard sector > (zeroedGrains ? 1 : 0) else { return (nil, within, run) }
        return (sector, within, run)
    }

    private var grainBuffer: [UInt8] = []
    private var bufferedSector: UInt32?

    /// A compressed grain: a marker (LBA, 8 bytes; compressed size, 4) then zlib data.
    private func inflatedGrain(_ sector: UInt32) throws -> [UInt8] {
        if bufferedSector == sector { return grainBuffer }
        let marker = try bytes(at: UInt64(sector) * 512, count: 12, what: "grain marker")
        let length = UInt64(marker.le32(8))
        guard length > 0, length <= grainBytes * 2 + 1024 else { throw corrupt("compressed grain of \(length) bytes at sector \(sector)") }
        let input = try bytes(at: UInt64(sector) * 512 + 12, count: Int(length), what: "compressed grain")
        var output = [UInt8](repeating: 0, count: Int(grainBytes))
        var outputLength = uLong(grainBytes)
        let status = output.withUnsafeMutableBytes { out in
            input.withUnsafeBytes { inp in
                uncompress(out.baseAddress!.assumingMemoryBound(to: Bytef.self), &outputLength,
                           inp.baseAddress!.assumingMemoryBound(to: Bytef.self), uLong(length))
            }
        }
        guard status == Z_OK || status == Z_BUF_ERROR else { throw corrupt("grain at sector \(sector) does not inflate (zlib \(status))") }
        grainBuffer = output
        bufferedSector = sector
        return output
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard rangeFits(offset, UInt64(buffer.count), within: size) else {
            throw StorageError.outOfRange(path: path, offset: offset, length: UInt64(buffer.count))
        }
        var done = 0
        while done < buffer.count {
            let (sector, within, run) = try grain(at: offset + UInt64(done))
            let count = Int(min(run, UInt64(buffer.count - done)))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + count])
            if let sector {
                if compressed {
                    let data = try inflatedGrain(sector)
                    data.withUnsafeBytes { part.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(within)..<Int(within) + count])) }
                } else {
                    let host = UInt64(sector) * 512 + within
                    guard rangeFits(host, UInt64(count), within: fileSize) else { throw corrupt("grain at sector \(sector) lies past the end of the file") }
                    try file.readExactly(into: part, at: host)
                }
            } else {
                part.initializeMemory(as: UInt8.self, repeating: 0)
            }
            done += count
        }
    }

    func extentStatus(at offset: UInt64, maxLength: UInt64) throws -> ExtentStatus {
        let (sector, _, run) = try grain(at: offset)
        let length = min(run, maxLength)
        guard let sector else { return ExtentStatus(length: length, kind: .zero) }
        return ExtentStatus(length: length, kind: .data(hostOffset: compressed ? nil : UInt64(sector) * 512, compressed: compressed))
    }
}

extension Array where Element == UInt8 {
    @inline(__always) func le64(_ at: Int) -> UInt64 { UInt64(le32(at)) | UInt64(le32(at + 4)) << 32 }
    @inline(__always) func le32(_ at: Int) -> UInt32 {
        UInt32(self[at]) | UInt32(self[at + 1]) << 8 | UInt32(self[at + 2]) << 16 | UInt32(self[at + 3]) << 24
    }
    @inline(__always) func le16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
}

/// The foreign formats `vireo img` reads (qemu-img's names for them).
public enum ForeignImageFormat: String, Sendable, CaseIterable { case vpc, vhdx, vmdk }
