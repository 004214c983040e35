import GuestMemory
import KVM

/// Guest RAM pages written since the last look, per memory region: what a pre-copy migration
/// round sends. Logging is off until `startDirtyPageLogging()` (KVM then write-protects every page
/// to notice the first write to it, which costs the guest a fault per page per round).
public struct DirtyPages: Equatable, Sendable {
    /// Per RAM region (in `Machine.memory.regions` order): one bit per 4 KiB page.
    public var bitmaps: [[UInt64]]

    /// How many pages are dirty, all regions together.
    public var count: Int { bitmaps.reduce(0) { $0 + $1.reduce(0) { $0 + $1.nonzeroBitCount } } }

    /// The guest-physical addresses of the dirty pages.
    public func addresses(in memory: GuestMemory) -> [UInt64] {
        var result: [UInt64] = []
        for (region, bitmap) in zip(memory.regions, bitmaps) {
            for (word, bits) in bitmap.enumerated() where bits != 0 {
                for bit in 0..<64 where bits & (1 << UInt64(bit)) != 0 {
                    result.append(region.start.raw + UInt64(word * 64 + bit) * 4096)
                }
            }
        }
        return result
    }
}

extension Machine {
    /// Registers every RAM region again with dirty-page logging on; from now on
    /// `takeDirtyPages()` reports what the guest (and the devices, see below) wrote.
    /// Device writes to guest memory (virtio used rings, received frames, disk reads) go through
    /// the VMM, not the guest's page tables, so KVM does not see them: a migration must also count
    /// the pages devices wrote, or send device-touched memory in its final round.
    public func startDirtyPageLogging() throws {
        for (slot, region) in memory.regions.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.start.raw, size: region.size,
                                       hostAddress: region.hostAddress, logDirtyPages: true)
        }
    }

    /// Registers the RAM regions again without logging (after a migration that did not hand over).
    public func stopDirtyPageLogging() throws {
        for (slot, region) in memory.regions.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.start.raw, size: region.size,
                                       hostAddress: region.hostAddress, logDirtyPages: false)
        }
    }

    /// The pages written by the guest since logging started or since the last call.
    public func takeDirtyPages() throws -> DirtyPages {
        DirtyPages(bitmaps: try memory.regions.enumerated().map { slot, region in
            try vm.takeDirtyLog(slot: UInt32(slot), pageCount: Int(region.size / 4096))
        })
    }
}
