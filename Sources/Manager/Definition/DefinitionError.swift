import Foundation

/// Why a VM definition (native YAML/JSON or libvirt XML) was rejected.
///
/// Every case names the field so a user can find it: native paths look like `disks[1].format`,
/// libvirt paths like `devices/disk[2]/driver` (XPath style, 1-based, as virsh users read them).
public enum DefinitionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A required field is absent.
    case missing(field: String)
    /// A key the schema does not know; reported instead of dropped, since it is usually a typo.
    case unknownKey(field: String, expected: [String])
    /// A field is present but its value is unusable.
    case invalidValue(field: String, reason: String)
    /// The document as a whole is unusable: not UTF-8, too large, too deep, malformed, has a DTD.
    case malformedDocument(reason: String)

    /// The field path the error is about, if it is about one.
    public var field: String? {
        switch self {
        case .missing(let field), .unknownKey(let field, _), .invalidValue(let field, _): field
        case .malformedDocument: nil
        }
    }

    public var description: String {
        switch self {
        case .missing(let field):
            "\(field): missing"
        case .unknownKey(let field, let expected):
            "\(field): unknown key (expected \(expected.joined(separator: ", ")))"
        case .invalidValue(let field, let reason):
            "\(field): \(reason)"
        case .malformedDocument(let reason):
            "definition: \(reason)"
        }
    }
}

/// Renders a user-supplied value inside an error message: quoted, control characters escaped and
/// cut short, so a hostile value cannot forge log lines or flood the terminal.
func quoted(_ value: String) -> String {
    "'\(sanitized(value))'"
}

/// `value` with control characters escaped and cut to 64 characters.
func sanitized(_ value: String) -> String {
    let limit = 64
    var out = ""
    var count = 0
    for scalar in value.unicodeScalars {
        if count == limit {
            out += "…"
            break
        }
        count += 1
        if scalar.value < 0x20 || scalar.value == 0x7f {
            out += String(format: "\\x%02x", scalar.value)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// "a, b or c": the list of accepted values in an error message.
func alternatives(_ values: [String]) -> String {
    guard let last = values.last else { return "" }
    if values.count == 1 { return last }
    return values.dropLast().joined(separator: ", ") + " or " + last
}
