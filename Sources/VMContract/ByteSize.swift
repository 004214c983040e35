/// Sizes as people write them: "512M", "2GiB", "1536 MiB", plain bytes, libvirt units. The one
/// size parser: definitions (native and libvirt's `unit`), `vireo run --memory`, `vireo img`.
///
/// One unit table, so "M" means the same everywhere: like libvirt and qemu, single letters and
/// the IEC names are binary (K = KiB = 1024), the SI names are decimal (KB = 1000). Units are
/// case-insensitive, again like libvirt. Whole numbers only, unless a caller allows fractions
/// (`vireo img`, as qemu-img takes "1.5G"): elsewhere "1.5G" is an error, not a rounding surprise.
public enum ByteSize {
    public enum Problem: Error, Equatable {
        case notASize
        case negative
        case unknownUnit(String)
        case tooLarge
    }

    private static let units: [(names: [String], multiplier: UInt64)] = [
        (["b", "byte", "bytes"], 1),
        (["k", "kib"], 1 << 10), (["kb"], 1_000),
        (["m", "mib"], 1 << 20), (["mb"], 1_000_000),
        (["g", "gib"], 1 << 30), (["gb"], 1_000_000_000),
        (["t", "tib"], 1 << 40), (["tb"], 1_000_000_000_000),
        (["p", "pib"], 1 << 50), (["pb"], 1_000_000_000_000_000),
        (["e", "eib"], 1 << 60), (["eb"], 1_000_000_000_000_000_000),
    ]

    /// Bytes per `unit`; the empty unit means bytes.
    public static func multiplier(forUnit unit: String) -> UInt64? {
        let lowered = unit.lowercased()
        if lowered.isEmpty { return 1 }
        return units.first { $0.names.contains(lowered) }?.multiplier
    }

    /// `value` × `unit` in bytes, overflow-checked.
    public static func scale(_ value: UInt64, unit: String) -> Result<UInt64, Problem> {
        guard let multiplier = multiplier(forUnit: unit) else { return .failure(.unknownUnit(unit)) }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? .failure(.tooLarge) : .success(bytes)
    }

    /// Parses "<digits>[.<digits>][ ]<unit>", e.g. "512M", "2 GiB", "1048576"; a fraction
    /// ("1.5G") only when `fractions` allows it, rounded down to whole bytes.
    public static func parse(_ text: String, fractions: Bool = false) -> Result<UInt64, Problem> {
        let trimmed = text.trimmedSpaces
        if trimmed.hasPrefix("-"), case .success = parse(String(trimmed.dropFirst()), fractions: fractions) { return .failure(.negative) }
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else { return .failure(.notASize) }
        var rest = trimmed.dropFirst(digits.count)
        var fraction = Substring("")
        if fractions, rest.first == "." {
            fraction = rest.dropFirst().prefix { $0.isASCII && $0.isNumber }
            guard !fraction.isEmpty, fraction.count <= 18 else { return .failure(.notASize) }
            rest = rest.dropFirst(1 + fraction.count)
        }
        let unit = rest.trimmedSpaces
        guard unit.allSatisfy({ $0.isASCII && $0.isLetter }) else { return .failure(.notASize) }
        // All digits yet unparsable can only mean the number does not fit in 64 bits.
        guard let value = UInt64(digits) else { return .failure(.tooLarge) }
        guard let multiplier = multiplier(forUnit: unit) else { return .failure(.notASize) }
        guard case .success(let whole) = scale(value, unit: unit) else { return .failure(.tooLarge) }
        guard !fraction.isEmpty, let numerator = UInt64(fraction) else { return .success(whole) }
        // numerator / 10^n of the unit, in integers: (numerator * multiplier) / 10^n, rounded down.
        let denominator = (0..<fraction.count).reduce(UInt64(1)) { value, _ in value * 10 }
        let (high, low) = numerator.multipliedFullWidth(by: multiplier)
        guard high < denominator else { return .failure(.tooLarge) }
        let (part, _) = denominator.dividingFullWidth((high, low))
        let (total, overflow) = whole.addingReportingOverflow(part)
        return overflow ? .failure(.tooLarge) : .success(total)
    }

    /// For messages: "2GiB", or "1000 bytes" when no unit divides it.
    public static func describe(_ bytes: UInt64) -> String {
        bytes % 1024 == 0 ? format(bytes) : "\(bytes) bytes"
    }

    /// The shortest exact spelling: "1GiB", "1536MiB", "4KiB", or plain bytes ("1000").
    public static func format(_ bytes: UInt64) -> String {
        if bytes == 0 { return "0" }
        for (suffix, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            let multiplier = UInt64(1) << UInt64(shift)
            if bytes % multiplier == 0 { return "\(bytes / multiplier)\(suffix)" }
        }
        return "\(bytes)"
    }
}

private extension StringProtocol {
    /// Trims spaces and tabs (and line ends) only, not Foundation's wider whitespace set.
    var trimmedSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        guard let start = firstIndex(where: { !isSpace($0) }),
              let end = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[start...end])
    }
}
