/// Why an AML object could not be encoded. Vireo's own DSDT never triggers these; they guard the
/// builder against a caller (or a future table) asking for something the grammar cannot express.
public enum AMLError: Error, Equatable, CustomStringConvertible {
    /// A NameSeg must be 1-4 characters: a leading 'A'-'Z' or '_', then 'A'-'Z', '0'-'9' or '_'.
    case invalidNameSegment(String)
    /// A NameString must be segments separated by '.', optionally after '\' or one or more '^'.
    case invalidName(String)
    /// PkgLength encodes at most 2^28 - 1 bytes.
    case objectTooLarge(bytes: Int)
    /// An AML String is ASCII 0x01-0x7F, NUL-terminated by the encoder.
    case invalidString(String)
    /// EISAID("UUUXXXX"): three letters A-Z and four hex digits.
    case invalidEISAID(String)
    /// Package NumElements is one byte.
    case tooManyPackageElements(Int)
    /// Methods take 0-7 arguments and a sync level 0-15.
    case invalidMethodFlags(argumentCount: Int, syncLevel: Int)
    /// A resource descriptor field is out of range (min above max, IRQ above 15, ...).
    case invalidResource(String)

    public var description: String {
        switch self {
        case .invalidNameSegment(let name):
            return "invalid AML name segment '\(name)': 1-4 characters of A-Z, 0-9, _ not starting with a digit"
        case .invalidName(let name):
            return "invalid AML name '\(name)': expected [\\ or ^...]SEG[.SEG...] with 4-character segments"
        case .objectTooLarge(let bytes): return "AML object of \(bytes) bytes exceeds the PkgLength limit of 2^28-1"
        case .invalidString(let string): return "AML string '\(string)' must be ASCII without NUL"
        case .invalidEISAID(let id): return "invalid EISA id '\(id)': expected three letters and four hex digits"
        case .tooManyPackageElements(let count): return "AML package of \(count) elements exceeds 255"
        case let .invalidMethodFlags(arguments, sync):
            return "AML method flags out of range: \(arguments) arguments (max 7), sync level \(sync) (max 15)"
        case .invalidResource(let why): return "invalid ACPI resource descriptor: \(why)"
        }
    }
}

/// The primitive encodings of the ACPI Machine Language grammar (ACPI 6.5 section 20.2): names,
/// integers, strings and package lengths. Objects built from them live in AMLTerms.swift.
public enum AML {
    static let zeroOp: UInt8 = 0x00, oneOp: UInt8 = 0x01, onesOp: UInt8 = 0xFF
    static let bytePrefix: UInt8 = 0x0A, wordPrefix: UInt8 = 0x0B, dwordPrefix: UInt8 = 0x0C
    static let stringPrefix: UInt8 = 0x0D, qwordPrefix: UInt8 = 0x0E
    static let rootChar: UInt8 = 0x5C, parentPrefixChar: UInt8 = 0x5E
    static let dualNamePrefix: UInt8 = 0x2E, multiNamePrefix: UInt8 = 0x2F
    /// The largest value a 4-byte PkgLength holds (28 bits).
    public static let maximumPkgLength = (1 << 28) - 1

    /// A NameSeg (20.2.2): up to four characters, padded to four with '_'.
    public static func nameSegment(_ segment: String) throws(AMLError) -> [UInt8] {
        let bytes = Array(segment.utf8)
        guard (1...4).contains(bytes.count) else { throw .invalidNameSegment(segment) }
        for (index, byte) in bytes.enumerated() {
            let lead = (0x41...0x5A).contains(byte) || byte == 0x5F
            let digit = (0x30...0x39).contains(byte)
            guard lead || (digit && index > 0) else { throw .invalidNameSegment(segment) }
        }
        return bytes + [UInt8](repeating: 0x5F, count: 4 - bytes.count)
    }

    /// A NameString (20.2.2): optional root '\' or parent '^' prefixes, then NullName, one segment,
    /// DualNamePrefix with two, or MultiNamePrefix with a count for three or more.
    public static func nameString(_ name: String) throws(AMLError) -> [UInt8] {
        var rest = Substring(name)
        var prefix: [UInt8] = []
        if rest.first == "\\" {
            prefix = [rootChar]
            rest = rest.dropFirst()
        } else {
            while rest.first == "^" {
                prefix.append(parentPrefixChar)
                rest = rest.dropFirst()
            }
        }
        if rest.isEmpty {
            // "\" alone names the root; a bare "^" or "" names nothing usable.
            guard prefix == [rootChar] else { throw .invalidName(name) }
            return prefix + [zeroOp]
        }
        let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 255 else { throw .invalidName(name) }
        var segments: [UInt8] = []
        for part in parts {
            do {
                segments += try nameSegment(String(part))
            } catch {
                throw .invalidName(name)
            }
        }
        switch parts.count {
        case 1: return prefix + segments
        case 2: return prefix + [dualNamePrefix] + segments
        default: return prefix + [multiNamePrefix, UInt8(parts.count)] + segments
        }
    }

    /// An integer in its smallest encoding (20.2.3): ZeroOp, OneOp, OnesOp for all 64 bits set,
    /// then Byte, Word, DWord or QWord constants.
    public static func integer(_ value: UInt64) -> [UInt8] {
        switch value {
        case 0: return [zeroOp]
        case 1: return [oneOp]
        case UInt64.max: return [onesOp]
        case ...0xFF: return [bytePrefix] + littleEndian(value, count: 1)
        case ...0xFFFF: return [wordPrefix] + littleEndian(value, count: 2)
        case ...0xFFFF_FFFF: return [dwordPrefix] + littleEndian(value, count: 4)
        default: return [qwordPrefix] + littleEndian(value, count: 8)
        }
    }

    /// A String constant (20.2.3): ASCII characters and a terminating NUL.
    public static func string(_ text: String) throws(AMLError) -> [UInt8] {
        let bytes = Array(text.utf8)
        guard bytes.allSatisfy({ (0x01...0x7F).contains($0) }) else { throw .invalidString(text) }
        return [stringPrefix] + bytes + [0]
    }

    /// The PkgLength (20.2.4) for an object whose contents after the PkgLength are `bodyLength`
    /// bytes. The encoded value counts the PkgLength bytes too, so the encoding picks the smallest
    /// size whose total still fits: 1 byte up to 63, then 12, 20 and 28 bits in 2, 3, 4 bytes.
    public static func pkgLength(bodyLength: Int) throws(AMLError) -> [UInt8] {
        guard bodyLength >= 0 else { throw .objectTooLarge(bytes: bodyLength) }
        if bodyLength + 1 <= 0x3F { return [UInt8(bodyLength + 1)] }
        for following in 1...3 {
            let total = bodyLength + 1 + following
            guard total < 1 << (4 + 8 * following) else { continue }
            var encoded = [UInt8(following << 6) | UInt8(total & 0x0F)]
            for index in 0..<following { encoded.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index))) }
            return encoded
        }
        throw .objectTooLarge(bytes: bodyLength)
    }

    /// The 32-bit compressed EISA id (ACPI 6.5 section 19.6.35, EISAID macro) as an AML integer:
    /// three 5-bit letters and a 16-bit product number, stored big-endian.
    public static func eisaID(_ id: String) throws(AMLError) -> [UInt8] {
        integer(UInt64(try eisaIDValue(id)))
    }

    public static func eisaIDValue(_ id: String) throws(AMLError) -> UInt32 {
        let bytes = Array(id.utf8)
        guard bytes.count == 7 else { throw .invalidEISAID(id) }
        var vendor: UInt32 = 0
        for letter in bytes[0..<3] {
            guard (0x41...0x5A).contains(letter) else { throw .invalidEISAID(id) }
            vendor = vendor << 5 | UInt32(letter - 0x40)
        }
        guard let product = UInt32(String(decoding: bytes[3..<7], as: UTF8.self), radix: 16),
              bytes[3..<7].allSatisfy({ $0 != 0x2B && $0 != 0x2D }) else {
            throw .invalidEISAID(id)
        }
        let bigEndian = vendor << 16 | product
        return bigEndian.byteSwapped
    }

    static func littleEndian(_ value: UInt64, count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }
}
