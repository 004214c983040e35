/// An Ethernet address as written in definitions: six colon-separated hex octets.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public let octets: [UInt8]

    /// Parses "52:54:00:12:34:56" (either case). Returns nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var octets: [UInt8] = []
        for part in parts {
            guard part.count == 2, part.allSatisfy(\.isHexDigit), part.allSatisfy(\.isASCII),
                  let octet = UInt8(part, radix: 16) else { return nil }
            octets.append(octet)
        }
        self.octets = octets
    }

    /// A random address in 52:54:00, the prefix QEMU and libvirt use for generated guest NICs.
    public static func random() -> MACAddress {
        var generator = SystemRandomNumberGenerator()
        let tail = (0..<3).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return MACAddress(uncheckedOctets: [0x52, 0x54, 0x00] + tail)
    }

    private init(uncheckedOctets: [UInt8]) { octets = uncheckedOctets }

    /// Group addresses cannot be a NIC's own address; the guest would drop its own traffic.
    public var isMulticast: Bool { (octets.first ?? 0) & 1 == 1 }

    public var isZero: Bool { octets.allSatisfy { $0 == 0 } }

    public var description: String { octets.map { String(format2: $0) }.joined(separator: ":") }
}

extension String {
    /// Two lowercase hex digits.
    init(format2 octet: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(octet >> 4)], digits[Int(octet & 0xf)]])
    }
}
