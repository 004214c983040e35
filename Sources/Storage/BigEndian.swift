/// Big-endian field access for on-disk structures held as byte arrays; callers check bounds.
extension Array where Element == UInt8 {
    @inline(__always) func be64(_ at: Int) -> UInt64 {
        withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
    }
    @inline(__always) func be32(_ at: Int) -> UInt32 {
        withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
    }
    @inline(__always) func be16(_ at: Int) -> UInt16 {
        withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt16.self)) }
    }
    @inline(__always) mutating func setBE64(_ at: Int, _ value: UInt64) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: at, as: UInt64.self) }
    }
    @inline(__always) mutating func setBE32(_ at: Int, _ value: UInt32) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: at, as: UInt32.self) }
    }
    @inline(__always) mutating func setBE16(_ at: Int, _ value: UInt16) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: at, as: UInt16.self) }
    }
}

extension UInt64 {
    var bigEndianBytes: [UInt8] { var a = [UInt8](repeating: 0, count: 8); a.setBE64(0, self); return a }
}
extension UInt32 {
    var bigEndianBytes: [UInt8] { var a = [UInt8](repeating: 0, count: 4); a.setBE32(0, self); return a }
}
