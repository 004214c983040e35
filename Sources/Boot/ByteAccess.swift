/// Bounds-checked little-endian access to host byte arrays (kernel files, tables being built).
/// Reads return nil instead of trapping so every caller turns a short file into its own typed error.
extension Array where Element == UInt8 {
    func le<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, at offset: Int) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= count - size else { return nil }
        var value: T = 0
        for index in 0..<size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }

    /// The index range [offset, offset+length) if it lies inside the array (values are file fields).
    func checkedRange(offset: UInt64, length: UInt64) -> Range<Int>? {
        guard let start = Int(exactly: offset), let size = Int(exactly: length) else { return nil }
        let (end, overflow) = start.addingReportingOverflow(size)
        guard !overflow, end <= count else { return nil }
        return start..<end
    }

    /// Stores a little-endian value; callers build fixed-size tables, so an out-of-range offset is a
    /// loader bug and is ignored rather than trapping.
    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset <= count - size else { return }
        for index in 0..<size { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    mutating func put(bytes: [UInt8], at offset: Int) {
        guard offset >= 0, offset <= count - bytes.count else { return }
        replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }
}

/// Two's-complement byte so the whole table sums to zero mod 256 (MP spec checksums).
func checksumByte<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
    let sum = bytes.reduce(UInt8(0)) { $0 &+ $1 }
    return 0 &- sum
}

func alignUp(_ value: UInt64, _ alignment: UInt64) -> UInt64? {
    let (sum, overflow) = value.addingReportingOverflow(alignment - 1)
    return overflow ? nil : sum & ~(alignment - 1)
}
