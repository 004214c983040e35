/// A bounded cache of one-cluster metadata tables (L2 tables, refcount blocks), least recently used out.
/// Metadata is written through, so an entry can be dropped at any time without I/O.
struct TableCache {
    let capacity: Int
    let tableSize: Int
    private(set) var offsets: [UInt64] = []
    var tables: [[UInt8]] = []
    private var lastUse: [UInt64] = []
    private var slotByOffset: [UInt64: Int] = [:]
    private var clock: UInt64 = 0

    init(capacity: Int, tableSize: Int) {
        self.capacity = max(2, capacity)
        self.tableSize = tableSize
        slotByOffset.reserveCapacity(self.capacity)
    }

    mutating func slot(for offset: UInt64) -> Int? {
        guard let slot = slotByOffset[offset] else { return nil }
        clock &+= 1
        lastUse[slot] = clock
        return slot
    }

    /// Returns a slot to fill for `offset`, evicting the least recently used table when full.
    mutating func claimSlot(for offset: UInt64) -> Int {
        clock &+= 1
        if offsets.count < capacity {
            offsets.append(offset)
            tables.append([UInt8](repeating: 0, count: tableSize))
            lastUse.append(clock)
            slotByOffset[offset] = offsets.count - 1
            return offsets.count - 1
        }
        var victim = 0
        for i in 1..<lastUse.count where lastUse[i] < lastUse[victim] { victim = i }
        slotByOffset[offsets[victim]] = nil
        offsets[victim] = offset
        lastUse[victim] = clock
        slotByOffset[offset] = victim
        return victim
    }

    mutating func invalidate(_ offset: UInt64) {
        guard let slot = slotByOffset.removeValue(forKey: offset) else { return }
        offsets[slot] = UInt64.max
        lastUse[slot] = 0
    }

    mutating func removeAll() {
        for (offset, _) in slotByOffset { invalidate(offset) }
    }
}
