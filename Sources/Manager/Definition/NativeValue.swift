import VMContract
import Yams

/// A definition as an ordered tree of native-format values. YAML, JSON and `Encodable` output
/// are all written from it, so the three agree and keep the documented key order (Foundation's
/// JSONEncoder does not keep order, and Yams' encoder leaves strings like "null" unquoted).
indirect enum NativeValue: Encodable {
    case string(String)
    case int(Int)
    case uint(UInt64)
    case bool(Bool)
    case double(Double)
    case null
    case mapping([(String, NativeValue)])
    case list([NativeValue])

    /// Sizes as in docs/vm-definition.md: the largest exact binary unit ("2GiB"), or bytes.
    static func size(_ bytes: UInt64) -> NativeValue {
        bytes % 1024 == 0 ? .string(ByteSize.format(bytes)) : .uint(bytes)
    }

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .string(let value):
            var c = encoder.singleValueContainer(); try c.encode(value)
        case .int(let value):
            var c = encoder.singleValueContainer(); try c.encode(value)
        case .uint(let value):
            var c = encoder.singleValueContainer(); try c.encode(value)
        case .bool(let value):
            var c = encoder.singleValueContainer(); try c.encode(value)
        case .double(let value):
            var c = encoder.singleValueContainer(); try c.encode(value)
        case .null:
            var c = encoder.singleValueContainer(); try c.encodeNil()
        case .mapping(let pairs):
            var c = encoder.container(keyedBy: AnyCodingKey.self)
            for (key, value) in pairs { try c.encode(value, forKey: AnyCodingKey(key)) }
        case .list(let values):
            var c = encoder.unkeyedContainer()
            for value in values { try c.encode(value) }
        }
    }

    // MARK: YAML

    var yamlNode: Node {
        switch self {
        case .string(let value):
            // Quote strings a plain scalar would turn into something else: "null", "yes", "123".
            // Both schemas: 1.2 (ours) and 1.1 (Yams' default, and many other readers).
            let plain = Resolver.default.resolveTag(of: Node(value)) == .str
                && NativeFormat.coreSchema.resolveTag(of: Node(value)) == .str
            return .scalar(Node.Scalar(value, Tag(.str), plain ? .any : .singleQuoted))
        case .int(let value): return .scalar(Node.Scalar("\(value)", Tag(.int)))
        case .uint(let value): return .scalar(Node.Scalar("\(value)", Tag(.int)))
        case .bool(let value): return .scalar(Node.Scalar(value ? "true" : "false", Tag(.bool)))
        case .double(let value): return .scalar(Node.Scalar("\(value)", Tag(.float)))
        case .null: return .scalar(Node.Scalar("null", Tag(.null)))
        case .mapping(let pairs):
            return .mapping(Node.Mapping(pairs.map { (Node.scalar(Node.Scalar($0.0)), $0.1.yamlNode) }))
        case .list(let values):
            return .sequence(Node.Sequence(values.map(\.yamlNode)))
        }
    }

    // MARK: JSON

    var json: String {
        var out = ""
        writeJSON(to: &out, indent: "")
        return out
    }

    private func writeJSON(to out: inout String, indent: String) {
        let inner = indent + "  "
        switch self {
        case .string(let value): out += Self.jsonString(value)
        case .int(let value): out += "\(value)"
        case .uint(let value): out += "\(value)"
        case .bool(let value): out += value ? "true" : "false"
        case .double(let value): out += value.isFinite ? "\(value)" : Self.jsonString("\(value)")
        case .null: out += "null"
        case .mapping(let pairs):
            guard !pairs.isEmpty else { out += "{}"; return }
            out += "{\n"
            for (index, (key, value)) in pairs.enumerated() {
                out += inner + Self.jsonString(key) + ": "
                value.writeJSON(to: &out, indent: inner)
                out += index == pairs.count - 1 ? "\n" : ",\n"
            }
            out += indent + "}"
        case .list(let values):
            guard !values.isEmpty else { out += "[]"; return }
            out += "[\n"
            for (index, value) in values.enumerated() {
                out += inner
                value.writeJSON(to: &out, indent: inner)
                out += index == values.count - 1 ? "\n" : ",\n"
            }
            out += indent + "]"
        }
    }

    /// RFC 8259 string: quotes, backslashes and control characters escaped; the rest verbatim.
    static func jsonString(_ value: String) -> String {
        var out = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

extension VMDefinition {
    var nativeValue: NativeValue {
        var pairs: [(String, NativeValue)] = [
            ("name", .string(name)),
            ("uuid", .string(uuid.uuidString.lowercased())),
            ("memory", .size(memory)),
            ("currentMemory", .size(currentMemory)),
            ("vcpus", .int(vcpus)),
            ("os", os.nativeValue),
        ]
        pairs.append(("disks", .list(disks.map(\.nativeValue))))
        pairs.append(("interfaces", .list(interfaces.map(\.nativeValue))))
        pairs.append(("console", console.nativeValue))
        // Written only when set: definitions without one read as before.
        if rng { pairs.append(("rng", .bool(true))) }
        pairs.append(("onPoweroff", .string(onPoweroff.rawValue)))
        pairs.append(("onReboot", .string(onReboot.rawValue)))
        pairs.append(("onCrash", .string(onCrash.rawValue)))
        pairs.append(("autostart", .bool(autostart)))
        // Written only when set, like rng.
        if !cputune.isEmpty { pairs.append(("cputune", cputune.nativeValue)) }
        if !memtune.isEmpty { pairs.append(("memtune", memtune.nativeValue)) }
        if !blkiotune.isEmpty { pairs.append(("blkiotune", blkiotune.nativeValue)) }
        return .mapping(pairs)
    }
}

extension OSBoot {
    var nativeValue: NativeValue {
        // Written in the shape the definition boots by: kernel, initrd, cmdline for a kernel,
        // firmware, nvram, boot for firmware. What validation refuses is written too, not dropped.
        var pairs: [(String, NativeValue)] = []
        if let kernel { pairs.append(("kernel", .string(kernel))) }
        if let firmware { pairs.append(("firmware", .string(firmware.choice))) }
        if let initrd { pairs.append(("initrd", .string(initrd))) }
        if kernel != nil || !cmdline.isEmpty { pairs.append(("cmdline", .string(cmdline))) }
        if let nvram { pairs.append(("nvram", .string(nvram))) }
        if firmware != nil || bootOrder != [.hd] {
            pairs.append(("boot", .list(bootOrder.map { .string($0.rawValue) })))
        }
        return .mapping(pairs)
    }
}

extension Disk {
    var nativeValue: NativeValue {
        var pairs: [(String, NativeValue)] = [
            ("source", .string(source)), ("type", .string(type.rawValue)), ("device", .string(device.rawValue)),
            ("format", .string(format.rawValue)), ("target", .string(target)), ("readonly", .bool(readonly)),
        ]
        if let serial { pairs.append(("serial", .string(serial))) }
        return .mapping(pairs)
    }
}

extension NetworkInterface {
    var nativeValue: NativeValue {
        var fields: [(String, NativeValue)] = [("type", .string(type.rawValue))]
        if type != .user || !source.isEmpty { fields.append(("source", .string(source))) }
        fields += [("mac", .string(mac.description)), ("model", .string(model.rawValue))]
        if !forwards.isEmpty { fields.append(("forwards", .list(forwards.map { .string($0) }))) }
        return .mapping(fields)
    }
}

extension SerialConsole {
    var nativeValue: NativeValue { .mapping([("type", .string(type.rawValue))]) }
}
