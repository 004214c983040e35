import VMContract
import Foundation

/// Field checks shared by the native decoder, the libvirt importer and `VMDefinition.validate()`.
/// Each takes the field path to name in its error, since the two formats spell paths differently.
enum Check {
    static func name(_ value: String, field: String) throws {
        try identifier(value, field: field, maxLength: DefinitionLimits.maxNameLength)
    }

    /// VM and network names end up in file names, socket paths and log lines: keep them plain.
    static func identifier(_ value: String, field: String, maxLength: Int) throws {
        if value.isEmpty { throw DefinitionError.invalidValue(field: field, reason: "must not be empty") }
        if value.unicodeScalars.count > maxLength {
            throw DefinitionError.invalidValue(
                field: field, reason: "\(quoted(value)) is longer than \(maxLength) characters")
        }
        if let bad = value.unicodeScalars.first(where: { !isNameCharacter($0) }) {
            throw DefinitionError.invalidValue(
                field: field,
                reason: "\(quoted(value)) contains \(quoted(String(bad))) (allowed: letters, digits, '.', '_', '-')")
        }
        if value.hasPrefix(".") || value.hasPrefix("-") {
            throw DefinitionError.invalidValue(field: field, reason: "\(quoted(value)) must not start with '.' or '-'")
        }
    }

    private static func isNameCharacter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "_", "-": true
        default: false
        }
    }

    /// Linux interface names: IFNAMSIZ is 16 including the terminating NUL.
    static func interfaceName(_ value: String, field: String) throws {
        try identifier(value, field: field, maxLength: 15)
    }

    /// Host paths the daemon opens: absolute (the daemon's working directory is not the user's).
    static func hostPath(_ value: String, field: String) throws {
        if value.isEmpty { throw DefinitionError.invalidValue(field: field, reason: "must not be empty") }
        if value.utf8.count > DefinitionLimits.maxPathBytes {
            throw DefinitionError.invalidValue(
                field: field, reason: "path is longer than \(DefinitionLimits.maxPathBytes) bytes")
        }
        if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw DefinitionError.invalidValue(field: field, reason: "\(quoted(value)) contains a control character")
        }
        if !value.hasPrefix("/") {
            throw DefinitionError.invalidValue(field: field, reason: "\(quoted(value)) is not an absolute path")
        }
    }

    static func cmdline(_ value: String, field: String) throws {
        if value.utf8.count > DefinitionLimits.maxCmdlineBytes {
            throw DefinitionError.invalidValue(
                field: field, reason: "longer than \(DefinitionLimits.maxCmdlineBytes) bytes")
        }
        if value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            throw DefinitionError.invalidValue(field: field, reason: "\(quoted(value)) contains a control character")
        }
    }

    static func memory(_ bytes: UInt64, field: String, atMost maximum: UInt64 = DefinitionLimits.maxMemory) throws {
        if bytes < DefinitionLimits.minMemory {
            throw DefinitionError.invalidValue(
                field: field,
                reason: "\(ByteSize.describe(bytes)) is below the minimum of \(ByteSize.format(DefinitionLimits.minMemory))")
        }
        if bytes > maximum {
            throw DefinitionError.invalidValue(
                field: field, reason: "\(ByteSize.describe(bytes)) exceeds the maximum of \(ByteSize.format(maximum))")
        }
        if bytes % DefinitionLimits.memoryAlignment != 0 {
            throw DefinitionError.invalidValue(
                field: field,
                reason: "\(bytes) bytes is not a multiple of \(ByteSize.format(DefinitionLimits.memoryAlignment))")
        }
    }

    static func vcpus(_ count: Int, field: String) throws {
        guard (1...DefinitionLimits.maxVCPUs).contains(count) else {
            throw DefinitionError.invalidValue(
                field: field, reason: "\(count) is out of range (1 to \(DefinitionLimits.maxVCPUs))")
        }
    }

    /// Block device names: "vda", "sdb", "hdc"...; they become guest-visible and must be unique.
    static func diskTarget(_ value: String, field: String) throws {
        let valid = (1...16).contains(value.unicodeScalars.count)
            && value.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) }
            && value.unicodeScalars.first.map { ("a"..."z").contains($0) } == true
        if !valid {
            throw DefinitionError.invalidValue(
                field: field, reason: "\(quoted(value)) is not a disk name (lowercase letters and digits, like vda)")
        }
    }

    static func diskSerial(_ value: String, field: String) throws {
        let ok = (1...DefinitionLimits.maxSerialBytes).contains(value.utf8.count)
            && value.utf8.allSatisfy { (0x20...0x7e).contains($0) }
        if !ok {
            throw DefinitionError.invalidValue(
                field: field,
                reason: "\(quoted(value)) is not 1 to \(DefinitionLimits.maxSerialBytes) printable ASCII characters")
        }
    }

    static func cdromReadonly(_ disk: Disk, field: String) throws {
        if disk.device == .cdrom && !disk.readonly {
            throw DefinitionError.invalidValue(field: field, reason: "a cdrom is always read-only")
        }
    }

    static func mac(_ mac: MACAddress, field: String) throws {
        if mac.isMulticast {
            throw DefinitionError.invalidValue(field: field, reason: "\(mac) is a multicast address")
        }
        if mac.isZero {
            throw DefinitionError.invalidValue(field: field, reason: "\(mac) is the all-zero address")
        }
    }

    static func interfaceSource(_ interface: NetworkInterface, field: String) throws {
        switch interface.type {
        case .bridge, .tap: try interfaceName(interface.source, field: field)
        case .network: try name(interface.source, field: field)
        case .user:
            guard interface.source.isEmpty else {
                throw DefinitionError.invalidValue(field: field, reason: "a user interface has no source (passt needs no host device)")
            }
        }
        guard interface.type == .user || interface.forwards.isEmpty else {
            throw DefinitionError.invalidValue(field: field, reason: "port forwards are for user interfaces (a bridged guest is reachable directly)")
        }
        guard interface.forwards.count <= PortForward.maximumCount else {
            throw DefinitionError.invalidValue(field: field, reason: "\(interface.forwards.count) port forwards exceed the limit of \(PortForward.maximumCount)")
        }
        for forward in interface.forwards {
            do { _ = try PortForward.parse(forward) } catch {
                throw DefinitionError.invalidValue(field: field, reason: "port forward \(quoted(forward)): expected tcp|udp:[HOSTADDR]:HOSTPORT-:GUESTPORT")
            }
        }
    }

    static func count(_ count: Int, limit: Int, noun: String, field: String) throws {
        if count > limit {
            throw DefinitionError.invalidValue(field: field, reason: "\(count) \(noun) exceed the limit of \(limit)")
        }
    }

    /// Accepts RFC 4122 text with hyphens, and the 32 bare hex digits libvirt also accepts.
    static func uuid(_ text: String, field: String) throws -> UUID {
        var candidate = text
        if text.count == 32, text.allSatisfy({ $0.isASCII && $0.isHexDigit }) {
            let c = Array(text)
            candidate = [c[0..<8], c[8..<12], c[12..<16], c[16..<20], c[20..<32]].map { String($0) }
                .joined(separator: "-")
        }
        guard text.count <= 36, let uuid = UUID(uuidString: candidate) else {
            throw DefinitionError.invalidValue(field: field, reason: "\(quoted(text)) is not a UUID")
        }
        return uuid
    }

    /// Parses `raw` as one of `E`'s cases, naming the accepted values when it is not.
    static func oneOf<E: RawRepresentable & CaseIterable>(
        _ raw: String, _ type: E.Type, noun: String, field: String
    ) throws -> E where E.RawValue == String {
        if let value = E(rawValue: raw) { return value }
        throw DefinitionError.invalidValue(
            field: field,
            reason: "unknown \(noun) \(quoted(raw)) (expected \(alternatives(E.allCases.map(\.rawValue))))")
    }
}
