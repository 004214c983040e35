import Foundation
import Yams

/// Reading and writing the native format. JSON is YAML, so one parser (Yams) reads both.
extension VMDefinition {
    /// Parses a native YAML or JSON definition, validating every field.
    public init(yaml data: Data) throws {
        guard data.count <= DefinitionLimits.maxDocumentBytes else {
            throw DefinitionError.malformedDocument(
                reason: "\(data.count) bytes exceeds the limit of \(DefinitionLimits.maxDocumentBytes)")
        }
        guard let text = String(validating: data, as: UTF8.self) else {
            throw DefinitionError.malformedDocument(reason: "not valid UTF-8")
        }
        try self.init(yaml: text)
    }

    /// Parses a native YAML or JSON definition, validating every field.
    public init(yaml text: String) throws {
        guard text.utf8.count <= DefinitionLimits.maxDocumentBytes else {
            throw DefinitionError.malformedDocument(
                reason: "\(text.utf8.count) bytes exceeds the limit of \(DefinitionLimits.maxDocumentBytes)")
        }
        // Yams composes recursively: bound the nesting before it sees the text, so a hostile
        // "[[[[..." cannot exhaust the stack. The bound over-estimates, never under-estimates.
        let bound = NativeFormat.nestingUpperBound(text)
        guard bound <= NativeFormat.maxNestingBound else {
            throw DefinitionError.malformedDocument(reason: "nested too deeply")
        }
        let node: Node?
        do {
            node = try Yams.compose(yaml: text, NativeFormat.coreSchema)
        } catch let error as YamlError {
            throw DefinitionError.malformedDocument(reason: NativeFormat.describe(error))
        }
        guard let node else { throw DefinitionError.malformedDocument(reason: "empty document") }
        // Decoding goes through JSON built from the composed YAML, not Yams' own decoder: that
        // one reads a quoted 'null' or '' as absent, and cannot tell "123" from 123.
        var budget = DefinitionLimits.maxYAMLValues
        let json = try NativeFormat.value(of: node, path: "definition", depth: 1, budget: &budget).json
        do {
            self = try JSONDecoder().decode(VMDefinition.self, from: Data(json.utf8))
        } catch let error as DefinitionError {
            throw error
        } catch let error as DecodingError {
            throw NativeFormat.translate(error)
        }
    }

    /// The definition in the native format, as YAML.
    public func yaml() throws -> String {
        try Yams.serialize(node: nativeValue.yamlNode, width: -1, allowUnicode: true)
    }

    /// The definition in the native format, as JSON (also valid YAML, and keys in the same order).
    public func json() -> String {
        nativeValue.json + "\n"
    }
}

enum NativeFormat {
    /// Generous against the schema's four levels; small enough for Yams' recursion on any stack.
    static let maxNestingBound = 256

    /// An upper bound on the nesting depth of a YAML document, found without parsing it.
    /// Flow nesting is the count of open brackets; block nesting cannot exceed twice a line's
    /// indentation plus the "- ", ": " and "? " indicators on it (compact forms nest in-line).
    static func nestingUpperBound(_ text: String) -> Int {
        var flowDepth = 0, maxFlowDepth = 0, maxLineBound = 0
        var indent = 0, indicators = 0, atLineStart = true
        var previous: UInt8 = 0
        func endIndicator(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0a || byte == 0x0d || byte == 0x09 }
        for byte in text.utf8 {
            if atLineStart && byte == 0x20 { indent += 1; previous = byte; continue }
            atLineStart = false
            switch byte {
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                flowDepth += 1
                maxFlowDepth = max(maxFlowDepth, flowDepth)
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                flowDepth = max(0, flowDepth - 1)
            default: break
            }
            if endIndicator(byte), previous == UInt8(ascii: "-") || previous == UInt8(ascii: ":")
                || previous == UInt8(ascii: "?") {
                indicators += 1
            }
            if byte == 0x0a {
                maxLineBound = max(maxLineBound, 2 * indent + indicators)
                indent = 0; indicators = 0; atLineStart = true
            }
            previous = byte
        }
        // The last line may end without a newline (and its final indicator with it).
        let trailing = (previous == UInt8(ascii: "-") || previous == UInt8(ascii: ":")) ? 1 : 0
        maxLineBound = max(maxLineBound, 2 * indent + indicators + trailing)
        return maxFlowDepth + maxLineBound + 1  // + 1: the innermost scalar
    }

    /// The composed YAML as typed values: quoted scalars are strings, plain ones take the type
    /// YAML resolves them to. Refuses depth beyond the limit (before recursing, so the recursion
    /// is bounded) and duplicate keys, which a decoder would otherwise resolve by picking one.
    static func value(of node: Node, path: String, depth: Int, budget: inout Int) throws -> NativeValue {
        guard depth <= DefinitionLimits.maxNestingDepth else {
            throw DefinitionError.malformedDocument(reason: "nested too deeply")
        }
        // Aliases share one node many times over ("billion laughs"); count what we expand.
        budget -= 1
        guard budget >= 0 else {
            throw DefinitionError.malformedDocument(reason: "more than \(DefinitionLimits.maxYAMLValues) values")
        }
        switch node {
        case .scalar(let scalar):
            return scalarValue(scalar)
        case .mapping(let mapping):
            var seen: Set<String> = []
            var pairs: [(String, NativeValue)] = []
            for (key, value) in mapping {
                guard let name = key.scalar?.string else {
                    throw DefinitionError.invalidValue(field: path, reason: "keys must be plain strings")
                }
                let childPath = path == "definition" ? name : "\(path).\(name)"
                if !seen.insert(name).inserted {
                    throw DefinitionError.invalidValue(field: childPath, reason: "appears more than once")
                }
                pairs.append((name, try self.value(of: value, path: childPath, depth: depth + 1, budget: &budget)))
            }
            return .mapping(pairs)
        case .sequence(let sequence):
            var values: [NativeValue] = []
            for (index, element) in sequence.enumerated() {
                values.append(try value(of: element, path: "\(path)[\(index)]", depth: depth + 1, budget: &budget))
            }
            return .list(values)
        @unknown default:
            throw DefinitionError.invalidValue(field: path, reason: "unsupported YAML node")
        }
    }

    private static func scalarValue(_ scalar: Node.Scalar) -> NativeValue {
        let plain = scalar.style == .plain || scalar.style == .any
        let tag: Tag.Name
        let written = Tag.Name(rawValue: scalar.tag.description)
        if written != .implicit {
            tag = written
        } else if plain {
            tag = coreSchema.resolveTag(of: Node.scalar(Node.Scalar(scalar.string, Tag(.implicit), .plain)))
        } else {
            tag = .str
        }
        let node = Node.scalar(scalar)
        switch tag {
        case .null: return .null
        case .bool: return node.bool.map(NativeValue.bool) ?? .string(scalar.string)
        case .int:
            // Beyond Int64 JSONDecoder reports only "not valid JSON" with no field; as text the
            // size parser and the field checks name the field and say "too large".
            return node.int.map(NativeValue.int) ?? .string(scalar.string)
        case .float: return node.float.map(NativeValue.double) ?? .string(scalar.string)
        default: return .string(scalar.string)
        }
    }

    /// YAML 1.2's core schema, not Yams' YAML 1.1 default: there "52:54:00:00:00:02" is a
    /// base-60 integer and "no" is false, both traps for a file that holds MACs and names.
    /// (nonisolated(unsafe): Resolver is a final class whose rules never change after init.)
    nonisolated(unsafe) static let coreSchema: Resolver = {
        let rules: [(Tag.Name, String)] = [
            (.null, "^(?:~|null|Null|NULL|)$"),
            (.bool, "^(?:true|True|TRUE|false|False|FALSE)$"),
            (.int, "^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
            (.float, "^(?:[-+]?(?:\\.[0-9]+|[0-9]+(?:\\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\\.(?:inf|Inf|INF)|\\.(?:nan|NaN|NAN))$"),
        ]
        // The patterns are constants; a failure here is a programming error that the
        // resolver tests catch (everything would read as a string).
        return rules.compactMap { try? Resolver.Rule($0.0, $0.1) }.reduce(Resolver.basic) { $0.appending($1) }
    }()

    static func describe(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _),
             .composer(_, let problem, let mark, _):
            "YAML syntax error at line \(mark.line), column \(mark.column): \(problem)"
        case .reader(let problem, _, _, _):
            "cannot read YAML: \(problem)"
        default:
            "cannot read YAML: \(error)"
        }
    }

    /// Turns the decoder's errors into the same one-line, field-naming form as ours.
    static func translate(_ error: DecodingError) -> DefinitionError {
        switch error {
        case .keyNotFound(let key, let context):
            return .missing(field: nativePath(context.codingPath + [key]))
        case .valueNotFound(_, let context):
            return .missing(field: nativePath(context.codingPath))
        case .typeMismatch(let type, let context):
            return .invalidValue(field: nativePath(context.codingPath), reason: "expected \(expectation(type))")
        case .dataCorrupted(let context):
            // Yams wraps errors thrown by our own init(from:) this way; unwrap them.
            if let ours = context.underlyingError as? DefinitionError { return ours }
            return .invalidValue(field: nativePath(context.codingPath), reason: context.debugDescription)
        @unknown default:
            return .malformedDocument(reason: "\(error)")
        }
    }

    private static func expectation(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is UInt64.Type, is Int64.Type: "a whole number"
        case is [Any].Type, is any UnkeyedDecodingContainer.Type: "a list"
        default: "a mapping"
        }
    }
}
