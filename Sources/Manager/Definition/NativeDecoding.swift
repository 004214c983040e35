import VMContract
/// Decoding helpers that give the native format its strictness: unknown keys are errors, and
/// every error names the field path (`disks[1].format`) built from the decoder's coding path.

struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { stringValue = "\(intValue)"; self.intValue = intValue }
}

/// "disks[1].format" from [disks, 1, format]; "definition" for the document itself.
func nativePath(_ codingPath: [any CodingKey]) -> String {
    var path = ""
    for key in codingPath {
        if let index = key.intValue {
            path += "[\(index)]"
        } else {
            path += path.isEmpty ? key.stringValue : "." + key.stringValue
        }
    }
    return path.isEmpty ? "definition" : path
}

extension Decoder {
    /// A keyed container that refuses keys outside `Keys`, naming the first one (sorted, so the
    /// message does not depend on dictionary order).
    func strictContainer<Keys: CodingKey & CaseIterable>(_: Keys.Type) throws -> KeyedDecodingContainer<Keys> {
        let any = try container(keyedBy: AnyCodingKey.self)
        let allowed = Keys.allCases.map(\.stringValue)
        if let unknown = any.allKeys.map(\.stringValue).filter({ !allowed.contains($0) }).sorted().first {
            throw DefinitionError.unknownKey(
                field: nativePath(codingPath + [AnyCodingKey(unknown)]), expected: allowed)
        }
        return try container(keyedBy: Keys.self)
    }

    var isMapping: Bool { (try? container(keyedBy: AnyCodingKey.self)) != nil }
}

extension KeyedDecodingContainer {
    func path(_ key: Key) -> String { nativePath(codingPath + [key]) }

    func isAbsent(_ key: Key) throws -> Bool {
        try !contains(key) || decodeNil(forKey: key)
    }

    func required<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T {
        if try isAbsent(key) { throw DefinitionError.missing(field: path(key)) }
        return try decode(type, forKey: key)
    }

    func optional<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
        try isAbsent(key) ? nil : decode(type, forKey: key)
    }

    func choice<E: RawRepresentable & CaseIterable>(
        _ type: E.Type, _ key: Key, noun: String, default defaultValue: E
    ) throws -> E where E.RawValue == String {
        guard let raw = try optional(String.self, key) else { return defaultValue }
        return try Check.oneOf(raw, type, noun: noun, field: path(key))
    }

    /// A list of at most `limit` elements; the count is checked before any element is decoded.
    func boundedList<T: Decodable>(_ type: T.Type, _ key: Key, limit: Int, noun: String) throws -> [T] {
        if try isAbsent(key) { return [] }
        let list = try nestedUnkeyedContainer(forKey: key)
        try Check.count(list.count ?? 0, limit: limit, noun: noun, field: path(key))
        return try decode([T].self, forKey: key)
    }

    func size(_ key: Key) throws -> UInt64? {
        try optional(NativeSize.self, key)?.bytes
    }
}

/// A size in the native format: a number of bytes, "512MiB"-style text, or {value, unit}.
struct NativeSize: Decodable {
    let bytes: UInt64

    private enum Keys: String, CodingKey, CaseIterable { case value, unit }

    init(from decoder: any Decoder) throws {
        let field = nativePath(decoder.codingPath)
        if decoder.isMapping {
            let object = try decoder.strictContainer(Keys.self)
            // Integers beyond Int64 arrive as text (see NativeFormat.scalarValue).
            let value: UInt64
            if let text = try? object.decode(String.self, forKey: .value), !text.isEmpty,
               text.allSatisfy({ $0.isASCII && $0.isNumber }) {
                guard let parsed = UInt64(text) else {
                    throw DefinitionError.invalidValue(field: object.path(.value), reason: "\(quoted(text)) is too large")
                }
                value = parsed
            } else {
                value = try object.required(UInt64.self, .value)
            }
            let unit = try object.optional(String.self, .unit) ?? ""
            bytes = try Self.check(ByteSize.scale(value, unit: unit), text: "\(value) \(unit)", field: object.path(.unit))
            return
        }
        let single = try decoder.singleValueContainer()
        if let number = try? single.decode(UInt64.self) {
            bytes = number
        } else if let text = try? single.decode(String.self) {
            bytes = try Self.check(ByteSize.parse(text), text: text, field: field)
        } else if let number = try? single.decode(Int64.self), number < 0 {
            throw DefinitionError.invalidValue(field: field, reason: "'\(number)' is negative")
        } else {
            throw DefinitionError.invalidValue(
                field: field, reason: "expected a size such as 512MiB, a number of bytes, or {value, unit}")
        }
    }

    private static func check(_ result: Result<UInt64, ByteSize.Problem>, text: String, field: String) throws -> UInt64 {
        switch result {
        case .success(let bytes): return bytes
        case .failure(.notASize): throw DefinitionError.invalidValue(field: field, reason: "\(quoted(text)) is not a size")
        case .failure(.negative): throw DefinitionError.invalidValue(field: field, reason: "\(quoted(text)) is negative")
        case .failure(.tooLarge): throw DefinitionError.invalidValue(field: field, reason: "\(quoted(text)) is too large")
        case .failure(.unknownUnit(let unit)):
            throw DefinitionError.invalidValue(field: field, reason: "unknown unit \(quoted(unit))")
        }
    }
}

extension KeyedEncodingContainer {
    /// Sizes are written in the largest exact binary unit ("2GiB"), or as bytes.
    mutating func encodeSize(_ bytes: UInt64, forKey key: Key) throws {
        if bytes % 1024 == 0 {
            try encode(ByteSize.format(bytes), forKey: key)
        } else {
            try encode(bytes, forKey: key)
        }
    }
}
