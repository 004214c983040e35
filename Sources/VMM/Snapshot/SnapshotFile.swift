import Boot
import CCrypto
import Foundation
import GuestMemory
#if canImport(Glibc)
import Glibc
#endif

/// What a snapshot file holds besides guest RAM: the machine's description (as a launch
/// specification, so a restore builds the same machine) and its state.
public struct SnapshotPayload: Codable, Equatable, Sendable {
    /// The machine as it was launched (devices resolved: MACs fixed); host-side paths for the
    /// control socket, logs and status file are not part of it.
    public var machine: LaunchSpec
    /// The command line the guest really got (the user's plus the host profile's flags).
    public var effectiveCmdline: String
    /// The VM was paused (not just for the snapshot) when it was taken: it is restored paused.
    public var paused: Bool
    public var state: MachineState
}

/// Why a snapshot file was refused: one line each, with the path.
public enum SnapshotError: Error, Equatable, CustomStringConvertible {
    case io(path: String, operation: String, errno: Int32)
    case notASnapshot(path: String)
    case unsupportedVersion(path: String, found: UInt32, supported: UInt32)
    case truncated(path: String, expected: UInt64, actual: UInt64)
    case corrupt(path: String, what: String)
    case invalidState(path: String, what: String)

    public var description: String {
        switch self {
        case let .io(path, operation, errno): return "snapshot \(path): \(operation) failed: \(String(cString: strerror(errno)))"
        case let .notASnapshot(path): return "\(path) is not a Vireo snapshot (no VIREOSNP header)"
        case let .unsupportedVersion(path, found, supported):
            return "snapshot \(path) has format version \(found); this Vireo reads version \(supported)"
        case let .truncated(path, expected, actual):
            return "snapshot \(path) is truncated: \(actual) bytes, the header describes \(expected)"
        case let .corrupt(path, what): return "snapshot \(path) is corrupt: \(what)"
        case let .invalidState(path, what): return "snapshot \(path) holds an invalid machine state: \(what)"
        }
    }
}

/// The snapshot file: one page of header, the state section (JSON), then guest RAM, page aligned
/// so it can be mapped straight into the guest. All integers little-endian.
///
/// ```
///    0   8  magic "VIREOSNP"
///    8   4  format version
///   12   4  header length (4096)
///   16   8  state offset, 24 8 state length, 32 32 SHA-256 of the state section
///   64   8  memory offset (page aligned), 72 8 memory length
///   80   4  region count (<= 8), 84 4 zero
///   88  16  per region: guest-physical start, size (stored back to back from the memory offset)
/// 4064  32  SHA-256 of bytes 0..<4064
/// ```
/// Guest RAM is not checksummed: hashing it would make restore cost grow with RAM again, and its
/// bytes are the guest's own (whatever they hold, they cannot reach beyond the guest).
public enum SnapshotFile {
    public static let magic = Array("VIREOSNP".utf8)
    public static let formatVersion: UInt32 = 1
    static let headerLength = 4096
    static let pageSize: UInt64 = 4096
    static let maximumRegions = 8
    /// The state section is a few hundred KiB at most (ACPI tables in fw_cfg are the largest part).
    public static let maximumStateBytes: UInt64 = 64 << 20

    public struct Region: Equatable, Sendable {
        public var start: UInt64
        public var size: UInt64
        public var fileOffset: UInt64
    }

    /// A snapshot file whose header was checked; its state section is not read yet. Guest RAM can
    /// be mapped (and a VM prepared for it) while `readState` reads and decodes the rest.
    public struct Header: @unchecked Sendable {
        public let path: String
        public let regions: [Region]
        public let fileSize: UInt64
        let layout: Layout
        let fd: Int32

        /// Guest RAM from the file: mapped copy-on-write (`.mapped`, flat cost) or read into fresh
        /// anonymous memory (`.copy`).
        public func memory(_ mode: SnapshotMemoryMode) throws -> GuestMemory {
            switch mode {
            case .mapped:
                return try GuestMemory(mapping: fd, ranges: regions.map { (GuestAddress($0.start), $0.size, $0.fileOffset) })
            case .copy:
                // Straight from the file into guest RAM (the layout was validated: the regions are
                // the memory's own, in order), in 64 MiB reads of the file's data extents only:
                // its holes are zero pages, which fresh memory already is.
                let memory = try GuestMemory(ranges: regions.map { (GuestAddress($0.start), $0.size) })
                for (index, region) in regions.enumerated() {
                    try memory.withMutableRegionBytes(index) { bytes in
                        for extent in SnapshotFile.dataExtents(fd, from: region.fileOffset, length: UInt64(bytes.count)) {
                            var done = extent.lowerBound
                            while done < extent.upperBound {
                                let count = min(64 << 20, extent.upperBound - done)
                                try SnapshotFile.readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: bytes[done..<(done + count)]),
                                                           at: region.fileOffset + UInt64(done), path: path)
                                done += count
                            }
                        }
                    }
                }
                return memory
            }
        }

        /// Reads, checks and decodes the state section; the file stays open (closing it is the
        /// caller's, through the result or, on error, this header).
        public func readState() throws -> Opened {
            let state = try SnapshotFile.readBytes(fd, count: Int(layout.stateLength), at: layout.stateOffset, path: path)
            let payload = try SnapshotFile.parseState(state, layout: layout, path: path)
            return Opened(header: self, payload: payload)
        }

        public func close() { Glibc.close(fd) }
    }

    /// A validated header and state, with the file still open for the memory.
    public struct Opened {
        public let header: Header
        public let payload: SnapshotPayload
        public var path: String { header.path }
        public var regions: [Region] { header.regions }
        public var fileSize: UInt64 { header.fileSize }

        public func memory(_ mode: SnapshotMemoryMode) throws -> GuestMemory { try header.memory(mode) }
        public func close() { header.close() }
    }

    /// Where the header says the state section is, and the RAM regions it describes.
    struct Layout: Sendable {
        var regions: [Region]
        var stateOffset: UInt64
        var stateLength: UInt64
        var stateChecksum: [UInt8]
    }

    // MARK: Writing

    /// Writes `payload` and `memory` to `path` (through a temporary file beside it, renamed at the
    /// end, so a failed or interrupted save never leaves half a snapshot under the name). Zero
    /// pages are skipped and stay holes. Returns the file's size.
    /// `progress` is called after each piece of RAM with the bytes done and the total.
    @discardableResult
    public static func write(_ payload: SnapshotPayload, memory: GuestMemory, to path: String,
                             progress: (UInt64, UInt64) -> Void = { _, _ in }) throws -> UInt64 {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let state = Array(try encoder.encode(payload))
        guard UInt64(state.count) <= maximumStateBytes else {
            throw SnapshotError.invalidState(path: path, what: "state section of \(state.count) bytes exceeds the limit")
        }
        let regions = memory.regions
        guard regions.count <= maximumRegions else {
            throw SnapshotError.invalidState(path: path, what: "\(regions.count) RAM regions (at most \(maximumRegions))")
        }
        let stateOffset = UInt64(headerLength)
        let memoryOffset = roundUp(stateOffset + UInt64(state.count), to: pageSize)
        var header = [UInt8](repeating: 0, count: headerLength)
        header.replaceSubrange(0..<8, with: magic)
        put(formatVersion, at: 8, in: &header)
        put(UInt32(headerLength), at: 12, in: &header)
        put(stateOffset, at: 16, in: &header)
        put(UInt64(state.count), at: 24, in: &header)
        header.replaceSubrange(32..<64, with: sha256(state))
        put(memoryOffset, at: 64, in: &header)
        put(memory.totalSize, at: 72, in: &header)
        put(UInt32(regions.count), at: 80, in: &header)
        for (index, region) in regions.enumerated() {
            put(region.start.raw, at: 88 + 16 * index, in: &header)
            put(region.size, at: 96 + 16 * index, in: &header)
        }
        header.replaceSubrange(4064..<4096, with: sha256(Array(header[0..<4064])))

        let temporary = path + ".partial"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SnapshotError.io(path: temporary, operation: "create", errno: errno) }
        var keep = false
        defer {
            Glibc.close(fd)
            if !keep { unlink(temporary) }
        }
        let total = memoryOffset + memory.totalSize
        guard ftruncate(fd, off_t(total)) == 0 else { throw SnapshotError.io(path: temporary, operation: "size", errno: errno) }
        try header.withUnsafeBytes { try writeFully(fd, $0, at: 0, path: temporary) }
        try state.withUnsafeBytes { try writeFully(fd, $0, at: stateOffset, path: temporary) }
        var offset = memoryOffset
        let ramTotal = memory.totalSize
        for bytes in memory.withRegionBytes({ _, bytes in bytes }) {
            // Pieces of 64 MiB, so a progress display moves on a large guest.
            var start = 0
            while start < bytes.count {
                let end = min(bytes.count, start + (64 << 20))
                try writeNonZeroPages(fd, UnsafeRawBufferPointer(rebasing: bytes[start..<end]), at: offset + UInt64(start), path: temporary)
                progress(offset + UInt64(end) - memoryOffset, ramTotal)
                start = end
            }
            offset += UInt64(bytes.count)
        }
        guard fsync(fd) == 0 else { throw SnapshotError.io(path: temporary, operation: "fsync", errno: errno) }
        guard rename(temporary, path) == 0 else { throw SnapshotError.io(path: path, operation: "rename", errno: errno) }
        keep = true
        return total
    }

    /// Writes runs of non-zero pages; zero pages stay holes of the pre-sized file.
    private static func writeNonZeroPages(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at base: UInt64, path: String) throws {
        let page = Int(pageSize)
        var runStart: Int?
        var index = 0
        func flush(upTo end: Int) throws {
            if let start = runStart {
                try writeFully(fd, UnsafeRawBufferPointer(rebasing: bytes[start..<end]), at: base + UInt64(start), path: path)
                runStart = nil
            }
        }
        while index < bytes.count {
            let end = min(index + page, bytes.count)
            if isZero(UnsafeRawBufferPointer(rebasing: bytes[index..<end])) {
                try flush(upTo: index)
            } else if runStart == nil {
                runStart = index
            }
            // Runs are written in pieces of at most 16 MiB.
            if let start = runStart, end - start >= 16 << 20 { try flush(upTo: end) }
            index = end
        }
        try flush(upTo: bytes.count)
    }

    /// One page of zeros to compare against (memcmp is vectorized even in debug builds).
    private static let zeroPage = [UInt8](repeating: 0, count: Int(pageSize))

    private static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        zeroPage.withUnsafeBytes { zeros in
            bytes.count <= zeros.count && memcmp(bytes.baseAddress!, zeros.baseAddress!, bytes.count) == 0
        }
    }

    // MARK: Reading

    /// Opens and validates a snapshot: header checksum, version, layout, sizes against the file,
    /// state checksum, then the state itself as hostile input. The memory is not read here.
    /// Opens `path` and checks its header and state section: `openHeader`, then `readState`.
    public static func open(_ path: String) throws -> Opened {
        let header = try openHeader(path)
        do {
            return try header.readState()
        } catch {
            header.close()
            throw error
        }
    }

    /// Opens `path` and checks its header (layout, checksum, version, RAM regions against the file
    /// size); the state section is read by `Header.readState`.
    public static func openHeader(_ path: String) throws -> Header {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0)
        guard fd >= 0 else { throw SnapshotError.io(path: path, operation: "open", errno: errno) }
        do {
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw SnapshotError.io(path: path, operation: "stat", errno: errno) }
            guard (info.st_mode & S_IFMT) == S_IFREG else { throw SnapshotError.corrupt(path: path, what: "not a regular file") }
            let fileSize = UInt64(info.st_size)
            guard fileSize >= UInt64(headerLength) else {
                if fileSize >= 8, try readBytes(fd, count: 8, at: 0, path: path) == magic {
                    throw SnapshotError.truncated(path: path, expected: UInt64(headerLength), actual: fileSize)
                }
                throw SnapshotError.notASnapshot(path: path)
            }
            let layout = try parseHeader(try readBytes(fd, count: headerLength, at: 0, path: path), fileSize: fileSize, path: path)
            return Header(path: path, regions: layout.regions, fileSize: fileSize, layout: layout, fd: fd)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// The header and state checks, separate from file access so that they can be fuzzed on bytes.
    static func parse(header: [UInt8], fileSize: UInt64, path: String,
                      read: (UInt64, Int) throws -> [UInt8]) throws -> (SnapshotPayload, [Region]) {
        let layout = try parseHeader(header, fileSize: fileSize, path: path)
        let state = try read(layout.stateOffset, Int(layout.stateLength))
        return (try parseState(state, layout: layout, path: path), layout.regions)
    }

    static func parseHeader(_ header: [UInt8], fileSize: UInt64, path: String) throws -> Layout {
        guard header.count == headerLength, Array(header[0..<8]) == magic else { throw SnapshotError.notASnapshot(path: path) }
        guard sha256(Array(header[0..<4064])) == Array(header[4064..<4096]) else {
            throw SnapshotError.corrupt(path: path, what: "header checksum mismatch")
        }
        let version: UInt32 = get(header, 8)
        guard version == formatVersion else {
            throw SnapshotError.unsupportedVersion(path: path, found: version, supported: formatVersion)
        }
        let stateOffset: UInt64 = get(header, 16), stateLength: UInt64 = get(header, 24)
        let memoryOffset: UInt64 = get(header, 64), memoryLength: UInt64 = get(header, 72)
        let regionCount = Int(get(header, 80) as UInt32)
        guard get(header, 12) == UInt32(headerLength), stateOffset == UInt64(headerLength),
              stateLength > 0, stateLength <= maximumStateBytes,
              memoryOffset % pageSize == 0, memoryOffset >= stateOffset + stateLength,
              (1...maximumRegions).contains(regionCount) else {
            throw SnapshotError.corrupt(path: path, what: "impossible header layout")
        }
        var regions: [Region] = []
        var fileOffset = memoryOffset
        var previousEnd: UInt64 = 0
        for index in 0..<regionCount {
            let start: UInt64 = get(header, 88 + 16 * index), size: UInt64 = get(header, 96 + 16 * index)
            let (end, overflow) = start.addingReportingOverflow(size)
            guard size > 0, size % pageSize == 0, start % pageSize == 0, !overflow, start >= previousEnd else {
                throw SnapshotError.corrupt(path: path, what: "RAM region \(index) is not a valid page range")
            }
            regions.append(Region(start: start, size: size, fileOffset: fileOffset))
            let (next, fileOverflow) = fileOffset.addingReportingOverflow(size)
            guard !fileOverflow else { throw SnapshotError.corrupt(path: path, what: "RAM regions overflow the file") }
            fileOffset = next
            previousEnd = end
        }
        guard fileOffset - memoryOffset == memoryLength else {
            throw SnapshotError.corrupt(path: path, what: "RAM regions do not add up to the memory length")
        }
        guard fileSize >= fileOffset else { throw SnapshotError.truncated(path: path, expected: fileOffset, actual: fileSize) }
        return Layout(regions: regions, stateOffset: stateOffset, stateLength: stateLength, stateChecksum: Array(header[32..<64]))
    }

    static func parseState(_ state: [UInt8], layout: Layout, path: String) throws -> SnapshotPayload {
        guard sha256(state) == layout.stateChecksum else {
            throw SnapshotError.corrupt(path: path, what: "state section checksum mismatch")
        }
        let payload: SnapshotPayload
        do {
            payload = try JSONDecoder().decode(SnapshotPayload.self, from: Data(state))
        } catch {
            throw SnapshotError.invalidState(path: path, what: "cannot decode (\(error))")
        }
        try validate(payload, regions: layout.regions, path: path)
        return payload
    }

    /// What the machine builder cannot check itself: the description must be one VMConfig
    /// accepts, and RAM must be exactly the layout such a machine has.
    static func validate(_ payload: SnapshotPayload, regions: [Region], path: String) throws {
        let machine = payload.machine
        guard (1...VMConfig.maximumCPUs).contains(machine.cpus), payload.state.vcpus.count == machine.cpus,
              payload.state.vcpus.enumerated().allSatisfy({ $0.offset == $0.element.id }) else {
            throw SnapshotError.invalidState(path: path, what: "vCPU count \(machine.cpus) with \(payload.state.vcpus.count) vCPU states")
        }
        guard machine.memoryBytes >= VMConfig.minimumMemory, machine.memoryBytes <= VMConfig.maximumMemory,
              machine.memoryBytes % pageSize == 0 else {
            throw SnapshotError.invalidState(path: path, what: "memory size \(machine.memoryBytes)")
        }
        let expected = X86Layout.ramRanges(memorySize: machine.memoryBytes).map { [$0.start.raw, $0.size] }
        guard regions.map({ [$0.start, $0.size] }) == expected else {
            throw SnapshotError.invalidState(path: path, what: "RAM regions do not match a \(machine.memoryBytes >> 20) MiB machine")
        }
        guard machine.devices.deviceCount <= DeviceOptions.maximumDevices,
              payload.state.pci.count == machine.devices.deviceCount else {
            throw SnapshotError.invalidState(path: path, what: "\(payload.state.pci.count) PCI function states for \(machine.devices.deviceCount) devices")
        }
    }

    // MARK: Helpers

    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        KernelPayloadCacheDirectory.sha256(bytes) ?? []
    }

    private static func roundUp(_ value: UInt64, to alignment: UInt64) -> UInt64 { (value + alignment - 1) / alignment * alignment }

    private static func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + MemoryLayout<T>.size, with: $0) }
    }

    private static func get<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int) -> T {
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { $0.copyBytes(from: bytes[offset..<offset + MemoryLayout<T>.size]) }
        return T(littleEndian: value)
    }

    private static func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let count = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw SnapshotError.io(path: path, operation: "write", errno: count < 0 ? errno : EIO) }
            done += count
        }
    }

    static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < buffer.count {
            let count = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw SnapshotError.io(path: path, operation: "read", errno: errno) }
            guard count > 0 else {
                throw SnapshotError.truncated(path: path, expected: offset + UInt64(buffer.count), actual: offset + UInt64(done))
            }
            done += count
        }
    }

    /// The parts of [start, start + length) of the file that hold data, relative to `start`
    /// (SEEK_DATA/SEEK_HOLE); the whole range where the file system cannot tell.
    static func dataExtents(_ fd: Int32, from start: UInt64, length: UInt64) -> [Range<Int>] {
        let end = off_t(start + length)
        var extents: [Range<Int>] = []
        var cursor = off_t(start)
        while cursor < end {
            let data = lseek(fd, cursor, 3 /* SEEK_DATA */)
            if data < 0 {
                // ENXIO: no data after cursor (the rest is a hole). Anything else: read it all.
                if errno != ENXIO { extents.append(Int(cursor - off_t(start))..<Int(length)) }
                break
            }
            guard data < end else { break }
            var hole = lseek(fd, data, 4 /* SEEK_HOLE */)
            if hole < 0 || hole > end { hole = end }
            extents.append(Int(data - off_t(start))..<Int(hole - off_t(start)))
            cursor = hole
        }
        return extents
    }

    static func readBytes(_ fd: Int32, count: Int, at offset: UInt64, path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try readFully(fd, into: $0, at: offset, path: path) }
        return bytes
    }
}
