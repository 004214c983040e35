/// An address in the guest's physical address space. Distinct from host pointers and region offsets
/// so the two can never be mixed up silently.
public struct GuestAddress: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public var raw: UInt64

    public init(_ raw: UInt64) { self.raw = raw }

    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.raw < rhs.raw }

    /// Adds an offset, returning nil on overflow rather than wrapping (guest-controlled values).
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    public var description: String { "0x" + String(raw, radix: 16) }
}
