/// Why a captured device state was refused by `init(restoring:)`. Snapshot files are untrusted
/// input: every field is checked before a device is built from it.
public struct DeviceStateError: Error, Equatable, CustomStringConvertible {
    public let device: String
    public let field: String
    public let problem: String

    public init(device: String, field: String, problem: String) {
        self.device = device
        self.field = field
        self.problem = problem
    }

    public var description: String { "\(device) state: \(field) \(problem)" }
}

/// ISA splits a wide access to an 8-bit device into byte cycles, lowest address first; these
/// helpers do the same so `inw`/`inl` on a byte-wide device behave as on a PC.
func readBytewise(offset: UInt64, size: Int, _ readByte: (UInt64) -> UInt8) -> UInt64 {
    var value: UInt64 = 0
    for index in 0..<min(max(size, 0), 8) {
        let (byteOffset, overflow) = offset.addingReportingOverflow(UInt64(index))
        if overflow { break }
        value |= UInt64(readByte(byteOffset)) << (8 * UInt64(index))
    }
    return value
}

func writeBytewise(offset: UInt64, size: Int, value: UInt64, _ writeByte: (UInt64, UInt8) -> Void) {
    for index in 0..<min(max(size, 0), 8) {
        let (byteOffset, overflow) = offset.addingReportingOverflow(UInt64(index))
        if overflow { break }
        writeByte(byteOffset, UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))))
    }
}

extension UInt8 {
    /// "0x3f"-style rendering for error messages.
    var hex: String { "0x" + String(self, radix: 16) }
}
