import GuestMemory

/// What the driver programs for one split virtqueue (VIRTIO 1.2 §2.7, §4.1.4.3 queue_* fields).
/// Every field is guest-controlled; `validate(in:)` checks it before any ring is touched.
public struct VirtqueueConfig: Codable, Equatable, Sendable {
    /// §2.7: "Queue Size value is always a power of 2. The maximum Queue Size value is 32768."
    public static let maximumSize: UInt16 = 32768

    public var size: UInt16
    public var descTable: GuestAddress
    public var availRing: GuestAddress
    public var usedRing: GuestAddress
    public var ready: Bool

    public init(size: UInt16, descTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress, ready: Bool) {
        self.size = size
        self.descTable = descTable
        self.availRing = availRing
        self.usedRing = usedRing
        self.ready = ready
    }

    /// §2.7 table "Virtqueue Part / Alignment / Size": 16 bytes per descriptor.
    public var descTableBytes: UInt64 { 16 * UInt64(size) }
    /// flags + idx + ring[size] + used_event (present whether or not EVENT_IDX is negotiated).
    public var availRingBytes: UInt64 { 6 + 2 * UInt64(size) }
    /// flags + idx + ring[size] of (id, len) + avail_event.
    public var usedRingBytes: UInt64 { 6 + 8 * UInt64(size) }

    /// Checks size, alignment and that every area lies wholly inside guest RAM.
    public func validate(in memory: GuestMemory) throws(VirtqueueError) {
        guard ready else { throw .notReady }
        try validateSize()
        // §2.7 alignment column: descriptor table 16, available ring 2, used ring 4.
        try check(area: "descriptor table", descTable, length: descTableBytes, alignment: 16, memory)
        try check(area: "available ring", availRing, length: availRingBytes, alignment: 2, memory)
        try check(area: "used ring", usedRing, length: usedRingBytes, alignment: 4, memory)
    }

    func validateSize() throws(VirtqueueError) {
        guard size != 0, size <= Self.maximumSize, size & (size - 1) == 0 else { throw .invalidSize(size) }
    }

    private func check(area: String, _ address: GuestAddress, length: UInt64, alignment: UInt64,
                       _ memory: GuestMemory) throws(VirtqueueError) {
        guard address.raw % alignment == 0 else {
            throw .misaligned(area: area, address: address, alignment: alignment)
        }
        // isValid is overflow-checked and rejects ranges that cross a hole between regions.
        guard memory.isValid(address, length: length) else {
            throw .areaOutsideRAM(area: area, address: address, length: length)
        }
    }
}
