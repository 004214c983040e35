import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One contiguous range of guest RAM backed by an anonymous host mapping.
public struct GuestMemoryRegion: Sendable {
    public let start: GuestAddress
    public let size: UInt64
    /// Host virtual address of the mapping. Only KVM slot registration should need this.
    public let hostAddress: UInt

    public var end: UInt64 { start.raw + size }   // validated non-overflowing at construction

    func contains(_ address: UInt64) -> Bool { address >= start.raw && address < end }
}

/// Guest physical memory: a sorted set of non-overlapping regions, with bounds-checked reads and
/// writes that may cross region boundaries only where the regions are contiguous.
///
/// Every access validates the full range with overflow-checked arithmetic; guest-supplied addresses
/// and lengths are hostile input. The mappings are released in deinit.
public final class GuestMemory: @unchecked Sendable {
    public let regions: [GuestMemoryRegion]
    /// Pages written through `write`/`zero` (the devices' writes) while tracking is on: per
    /// region, one bit per 4 KiB page. KVM's dirty log sees only what the guest's vCPUs write;
    /// a migration also needs what the VMM wrote on the devices' behalf.
    private let writeTracking = Mutex<[[UInt64]]?>(nil)
    /// Mirrors `writeTracking != nil`, so that writes pay one atomic load while it is off.
    private let tracking = Atomic<Bool>(false)

    /// Total bytes of RAM across all regions.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Allocates anonymous, zero-filled memory for each (start, size) range.
    public convenience init(ranges: [(start: GuestAddress, size: UInt64)]) throws {
        try self.init(validating: ranges) { _, size in
            let pointer = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            // Transparent huge pages where the host allows them (as QEMU asks too): one fault and
            // one EPT entry per 2 MiB instead of 512. Only advice: failure changes nothing.
            if let pointer, pointer != MAP_FAILED { _ = madvise(pointer, size, 14 /* MADV_HUGEPAGE */) }
            return pointer
        }
    }

    /// Maps each range from `fd` at its file offset, private and copy-on-write: a page is read
    /// from the file when the guest first touches it, and the guest's writes never reach the file.
    /// What a snapshot restore uses so that its cost does not grow with guest RAM. The file must
    /// stay where it is (and unchanged) while the memory lives.
    public convenience init(mapping fd: Int32, ranges: [(start: GuestAddress, size: UInt64, fileOffset: UInt64)]) throws {
        let offsets = Dictionary(uniqueKeysWithValues: ranges.map { ($0.start.raw, $0.fileOffset) })
        for range in ranges where range.fileOffset % 4096 != 0 || off_t(exactly: range.fileOffset) == nil {
            throw GuestMemoryError.invalidLayout("file offset \(range.fileOffset) of region at \(range.start) is not page aligned")
        }
        try self.init(validating: ranges.map { ($0.start, $0.size) }) { start, size in
            mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, off_t(offsets[start.raw] ?? 0))
        }
    }

    /// Checks the layout (sorted, aligned, non-overlapping, non-wrapping), then maps each range
    /// with `map`; on a failure every mapping made so far is released.
    private init(validating ranges: [(start: GuestAddress, size: UInt64)],
                 map: (GuestAddress, Int) -> UnsafeMutableRawPointer?) throws {
        let sorted = ranges.sorted { $0.start < $1.start }
        var previousEnd: UInt64 = 0
        for (index, range) in sorted.enumerated() {
            guard range.size > 0 else { throw GuestMemoryError.invalidLayout("region at \(range.start) is empty") }
            guard range.start.raw % 4096 == 0, range.size % 4096 == 0 else {
                throw GuestMemoryError.invalidLayout("region at \(range.start) is not 4 KiB aligned")
            }
            guard range.start.adding(range.size) != nil else {
                throw GuestMemoryError.invalidLayout("region at \(range.start) wraps the address space")
            }
            if index > 0, range.start.raw < previousEnd {
                throw GuestMemoryError.invalidLayout("region at \(range.start) overlaps the previous one")
            }
            previousEnd = range.start.raw + range.size
        }
        var mapped: [GuestMemoryRegion] = []
        for range in sorted {
            guard let size = Int(exactly: range.size) else {
                throw GuestMemoryError.invalidLayout("region size \(range.size) too large for this host")
            }
            let pointer = map(range.start, size)
            guard let base = pointer, base != MAP_FAILED else {
                let err = errno
                for region in mapped { munmap(UnsafeMutableRawPointer(bitPattern: region.hostAddress), Int(region.size)) }
                throw GuestMemoryError.allocationFailed(size: range.size, errno: err)
            }
            mapped.append(GuestMemoryRegion(start: range.start, size: range.size, hostAddress: UInt(bitPattern: base)))
        }
        regions = mapped
    }

    /// Calls `body` with the writable bytes of region `index`: for loading saved RAM into a
    /// machine before any vCPU or device runs (snapshot restore), where going through `write`
    /// would cost a second copy of every byte. Nothing else should need it.
    public func withMutableRegionBytes<R>(_ index: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let region = regions[index]
        return try body(UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: region.hostAddress), count: Int(region.size)))
    }

    /// Calls `body` with each region's bytes in address order (snapshot writing). The caller
    /// must keep every writer of guest memory stopped meanwhile.
    public func withRegionBytes<R>(_ body: (GuestMemoryRegion, UnsafeRawBufferPointer) throws -> R) rethrows -> [R] {
        try regions.map { region in
            try body(region, UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: region.hostAddress), count: Int(region.size)))
        }
    }

    deinit {
        for region in regions {
            munmap(UnsafeMutableRawPointer(bitPattern: region.hostAddress), Int(region.size))
        }
    }

    /// Index of the region holding `address`, if any.
    private func regionIndex(for address: UInt64) -> Int? {
        var low = 0, high = regions.count - 1
        while low <= high {
            let mid = (low + high) / 2
            let region = regions[mid]
            if address < region.start.raw { high = mid - 1 }
            else if address >= region.end { low = mid + 1 }
            else { return mid }
        }
        return nil
    }

    /// True when [address, address+length) is entirely guest RAM.
    public func isValid(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? forEachChunk(address, length: length) { _, _, _ in }) != nil
    }

    /// Walks the range chunk by chunk (one chunk per region), validating the whole range first.
    private func forEachChunk(_ address: GuestAddress, length: UInt64,
                              _ body: (UnsafeMutableRawPointer, Int, Int) throws -> Void) throws {
        guard length > 0 else { return }
        guard address.adding(length) != nil else { throw GuestMemoryError.outOfRange(address: address, length: length) }
        // Validate before touching anything, so a failed write changes nothing.
        var cursor = address.raw
        var remaining = length
        var plan: [(Int, UInt64, UInt64)] = []
        plan.reserveCapacity(2)
        while remaining > 0 {
            guard let index = regionIndex(for: cursor) else {
                throw GuestMemoryError.outOfRange(address: address, length: length)
            }
            let region = regions[index]
            let chunk = min(remaining, region.end - cursor)
            plan.append((index, cursor - region.start.raw, chunk))
            cursor += chunk
            remaining -= chunk
        }
        var done = 0
        for (index, offset, chunk) in plan {
            let base = UnsafeMutableRawPointer(bitPattern: regions[index].hostAddress)! + Int(offset)
            try body(base, done, Int(chunk))
            done += Int(chunk)
        }
    }

    /// Copies guest memory into `buffer` (its full count).
    public func read(into buffer: UnsafeMutableRawBufferPointer, from address: GuestAddress) throws {
        try forEachChunk(address, length: UInt64(buffer.count)) { host, done, count in
            (buffer.baseAddress! + done).copyMemory(from: host, byteCount: count)
        }
    }

    /// Copies `bytes` into guest memory.
    public func write(_ bytes: UnsafeRawBufferPointer, to address: GuestAddress) throws {
        try forEachChunk(address, length: UInt64(bytes.count)) { host, done, count in
            host.copyMemory(from: bytes.baseAddress! + done, byteCount: count)
        }
        if tracking.load(ordering: .acquiring) { markWritten(address.raw, length: UInt64(bytes.count)) }
    }

    public func readBytes(at address: GuestAddress, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, from: address) }
        return out
    }

    public func writeBytes<C: Collection>(_ bytes: C, to address: GuestAddress) throws where C.Element == UInt8 {
        let array = Array(bytes)
        try array.withUnsafeBytes { try write($0, to: address) }
    }

    /// Reads a little-endian integer.
    public func read<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws -> T {
        var value: T = 0
        try withUnsafeMutableBytes(of: &value) { try read(into: $0, from: address) }
        return T(littleEndian: value)
    }

    /// Writes a little-endian integer.
    public func write<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws {
        var little = value.littleEndian
        try withUnsafeBytes(of: &little) { try write($0, to: address) }
    }

    /// Fills a range with zeros.
    public func zero(at address: GuestAddress, length: UInt64) throws {
        try forEachChunk(address, length: length) { host, _, count in
            host.initializeMemory(as: UInt8.self, repeating: 0, count: count)
        }
        if tracking.load(ordering: .acquiring) { markWritten(address.raw, length: length) }
    }

    // MARK: Write tracking (for migration)

    /// From now on, remembers which pages `write` and `zero` touch (until `stopWriteTracking`).
    public func startWriteTracking() {
        writeTracking.withLock { bitmaps in
            bitmaps = regions.map { [UInt64](repeating: 0, count: Int(($0.size / 4096 + 63) / 64)) }
            tracking.store(true, ordering: .releasing)
        }
    }

    public func stopWriteTracking() {
        writeTracking.withLock { bitmaps in
            tracking.store(false, ordering: .releasing)
            bitmaps = nil
        }
    }

    /// The pages written since tracking started or since the last call (per region, one bit per
    /// page; empty bitmaps while tracking is off), and forgets them.
    public func takeWrittenPages() -> [[UInt64]] {
        writeTracking.withLock { bitmaps in
            guard let current = bitmaps else { return regions.map { [UInt64](repeating: 0, count: Int(($0.size / 4096 + 63) / 64)) } }
            bitmaps = current.map { [UInt64](repeating: 0, count: $0.count) }
            return current
        }
    }

    /// Marks the pages of a range that was just written (validated by the write itself).
    private func markWritten(_ address: UInt64, length: UInt64) {
        guard length > 0 else { return }
        writeTracking.withLock { bitmaps in
            guard bitmaps != nil else { return }
            var cursor = address
            let end = address + length
            while cursor < end, let index = regionIndex(for: cursor) {
                let region = regions[index]
                let stop = min(end, region.end)
                let first = (cursor - region.start.raw) / 4096, last = (stop - 1 - region.start.raw) / 4096
                for page in first...last { bitmaps![index][Int(page / 64)] |= 1 << (page % 64) }
                cursor = stop
            }
        }
    }
}
