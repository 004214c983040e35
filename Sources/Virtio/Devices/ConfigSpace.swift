/// A device-specific configuration space (VIRTIO 1.2 §4.1.4.6) held as its little-endian bytes.
/// Built once from validated host settings, so reads need no lock and never block a vCPU.
struct ConfigSpace: Sendable, Equatable {
    private(set) var bytes: [UInt8]

    init(size: Int) {
        bytes = [UInt8](repeating: 0, count: max(0, size))
    }

    /// Stores `value` little-endian at a layout offset fixed by the spec (never a guest value).
    mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        var remaining = value   // low byte first is little-endian on any host
        for index in 0 ..< MemoryLayout<T>.size where offset + index < bytes.count {
            bytes[offset + index] = UInt8(truncatingIfNeeded: remaining)
            remaining = remaining >> 8
        }
    }

    /// The driver's access of `size` bytes at `offset`; anything not wholly inside reads as 0.
    func read(offset: Int, size: Int) -> UInt64 {
        guard [1, 2, 4, 8].contains(size), offset >= 0, offset <= bytes.count - size else { return 0 }
        var value: UInt64 = 0
        for index in (0 ..< size).reversed() {
            value = value << 8 | UInt64(bytes[offset + index])
        }
        return value
    }
}
