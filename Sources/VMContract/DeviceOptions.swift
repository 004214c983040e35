/// The virtio devices of a machine, parsed from `--disk`, `--net`, `--console`, `--rng` or sent by the
/// daemon inside a `LaunchSpec`.
public struct DeviceOptions: Codable, Sendable, Equatable {
    public var disks: [DiskOptions] = []
    public var networks: [NetworkOptions] = []
    /// hvc0 on a virtio-console, next to COM1.
    public var virtioConsole = false
    public var entropy = false

    public init(disks: [DiskOptions] = [], networks: [NetworkOptions] = [], virtioConsole: Bool = false, entropy: Bool = false) {
        self.disks = disks; self.networks = networks; self.virtioConsole = virtioConsole; self.entropy = entropy
    }

    /// PCI slots 1...31 are free for devices (slot 0 is the host bridge).
    public static let maximumDevices = 31

    public var deviceCount: Int { disks.count + networks.count + (virtioConsole ? 1 : 0) + (entropy ? 1 : 0) }
}

public struct DiskOptions: Codable, Sendable, Equatable {
    public enum Format: String, Codable, Sendable, CaseIterable { case raw, qcow2 }
    public var path: String
    public var readOnly = false
    /// nil: detect from the file's contents (qcow2 magic, else raw).
    public var format: Format?
    /// virtio-blk serial (GET_ID), at most 20 bytes.
    public var serial: String?

    public init(path: String, readOnly: Bool = false, format: Format? = nil, serial: String? = nil) {
        self.path = path; self.readOnly = readOnly; self.format = format; self.serial = serial
    }

    /// `path=FILE[,readonly=on|off][,format=raw|qcow2][,serial=ID]`; a bare path is accepted too.
    public static func parse(_ text: String) throws(DeviceOptionError) -> DiskOptions {
        let fields = try OptionList.parse(text, option: "--disk", bareKey: "path",
                                          allowed: ["path", "readonly", "format", "serial"])
        guard let path = fields["path"], !path.isEmpty else { throw .missing(option: "--disk", key: "path") }
        var disk = DiskOptions(path: path)
        if let value = fields["readonly"] { disk.readOnly = try OptionList.boolean(value, option: "--disk", key: "readonly") }
        if let value = fields["format"] {
            guard let format = Format(rawValue: value) else {
                throw .invalidValue(option: "--disk", key: "format", value: value, expected: "raw or qcow2")
            }
            disk.format = format
        }
        if let serial = fields["serial"] {
            guard serial.utf8.count <= 20, serial.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
                throw .invalidValue(option: "--disk", key: "serial", value: serial, expected: "at most 20 ASCII characters")
            }
            disk.serial = serial
        }
        return disk
    }
}

public struct NetworkOptions: Codable, Sendable, Equatable {
    public enum Attachment: Sendable, Equatable {
        /// An existing TAP (or one Vireo creates with that name).
        case tap(String)
        /// A TAP Vireo creates and adds to this Linux bridge.
        case bridge(String)
        /// User-mode networking through passt (libvirt's `<interface type='user'>` backend since
        /// 9.0): no TAP, no bridge, no privileges; the guest shares the host's addresses and
        /// reaches what the host reaches; `forwards` open host ports into the guest.
        case user(forwards: [PortForward])
    }
    public var attachment: Attachment
    public var mac: [UInt8]?
    /// Offer checksum/TSO offloads when the TAP supports them (off: to measure the difference).
    public var offloads = true

    public init(attachment: Attachment, mac: [UInt8]? = nil, offloads: Bool = true) {
        self.attachment = attachment; self.mac = mac; self.offloads = offloads
    }

    /// `tap=NAME[,mac=52:54:00:12:34:56][,offload=on|off]`, `bridge=BR[,mac=...]`, or
    /// `user[,hostfwd=tcp::2222-:22]...[,mac=...]` (QEMU's spelling; hostfwd may repeat).
    public static func parse(_ text: String) throws(DeviceOptionError) -> NetworkOptions {
        let items = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if items.first == "user" {
            var forwards: [PortForward] = []
            var rest: [String] = []
            for item in items.dropFirst() {
                if item.hasPrefix("hostfwd=") { forwards.append(try PortForward.parse(String(item.dropFirst("hostfwd=".count))))
                } else { rest.append(item) }
            }
            var options = NetworkOptions(attachment: .user(forwards: forwards))
            if !rest.isEmpty {
                let fields = try OptionList.parse(rest.joined(separator: ","), option: "--net", bareKey: nil, allowed: ["mac", "hostfwd"])
                if let mac = fields["mac"] { options.mac = try parseMAC(mac) }
            }
            return options
        }
        let fields = try OptionList.parse(text, option: "--net", bareKey: nil, allowed: ["tap", "bridge", "mac", "offload"])
        var options: NetworkOptions
        switch (fields["tap"], fields["bridge"]) {
        case let (tap?, nil):
            guard Self.isValidInterfaceName(tap) else {
                throw .invalidValue(option: "--net", key: "tap", value: tap, expected: "an interface name of 1-15 characters")
            }
            options = NetworkOptions(attachment: .tap(tap))
        case let (nil, bridge?):
            guard Self.isValidInterfaceName(bridge) else {
                throw .invalidValue(option: "--net", key: "bridge", value: bridge, expected: "an interface name of 1-15 characters")
            }
            options = NetworkOptions(attachment: .bridge(bridge))
        case (nil, nil): throw .missing(option: "--net", key: "tap, bridge or user")
        default: throw .conflict(option: "--net", keys: "tap and bridge")
        }
        if let mac = fields["mac"] { options.mac = try parseMAC(mac) }
        if let value = fields["offload"] { options.offloads = try OptionList.boolean(value, option: "--net", key: "offload") }
        return options
    }

    public static func isValidInterfaceName(_ name: String) -> Bool {
        (1...15).contains(name.utf8.count) && name.allSatisfy { $0.isASCII && !$0.isWhitespace && $0 != "/" && $0 != ":" }
    }

    public static func parseMAC(_ text: String) throws(DeviceOptionError) -> [UInt8] {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let bytes = parts.compactMap { $0.count == 2 ? UInt8($0, radix: 16) : nil }
        guard parts.count == 6, bytes.count == 6 else {
            throw .invalidValue(option: "--net", key: "mac", value: text, expected: "six hex bytes like 52:54:00:12:34:56")
        }
        guard bytes[0] & 1 == 0 else {
            throw .invalidValue(option: "--net", key: "mac", value: text, expected: "a unicast address (first byte even)")
        }
        return bytes
    }
}

public enum DeviceOptionError: Error, Equatable, CustomStringConvertible {
    case malformed(option: String, text: String)
    case unknownKey(option: String, key: String, allowed: [String])
    case duplicateKey(option: String, key: String)
    case missing(option: String, key: String)
    case conflict(option: String, keys: String)
    case invalidValue(option: String, key: String, value: String, expected: String)

    public var description: String {
        switch self {
        case let .malformed(option, text): return "\(option) '\(text)': expected key=value pairs separated by commas"
        case let .unknownKey(option, key, allowed): return "\(option): unknown key '\(key)' (known: \(allowed.joined(separator: ", ")))"
        case let .duplicateKey(option, key): return "\(option): '\(key)' given twice"
        case let .missing(option, key): return "\(option): \(key) is required"
        case let .conflict(option, keys): return "\(option): \(keys) exclude each other"
        case let .invalidValue(option, key, value, expected): return "\(option): \(key)='\(value)' is invalid: expected \(expected)"
        }
    }
}

/// `key=value,key=value` as QEMU and Cloud Hypervisor spell device options.
enum OptionList {
    static func parse(_ text: String, option: String, bareKey: String?, allowed: [String]) throws(DeviceOptionError) -> [String: String] {
        var fields: [String: String] = [:]
        for (index, item) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key: String, value: String
            if pair.count == 2 {
                key = String(pair[0]); value = String(pair[1])
            } else if index == 0, let bareKey, !item.isEmpty {
                key = bareKey; value = String(item)
            } else {
                throw .malformed(option: option, text: text)
            }
            guard allowed.contains(key) else { throw .unknownKey(option: option, key: key, allowed: allowed) }
            guard fields[key] == nil else { throw .duplicateKey(option: option, key: key) }
            fields[key] = value
        }
        return fields
    }

    static func boolean(_ value: String, option: String, key: String) throws(DeviceOptionError) -> Bool {
        switch value {
        case "on", "true", "yes", "1": return true
        case "off", "false", "no", "0": return false
        default: throw .invalidValue(option: option, key: key, value: value, expected: "on or off")
        }
    }
}

/// `{"tap": "NAME"}`, `{"bridge": "NAME"}` or `{"user": ["tcp::2222-:22"]}`: what a reader of a
/// launch file expects to see.
extension NetworkOptions.Attachment: Codable {
    private enum CodingKeys: String, CodingKey { case tap, bridge, user }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let tap = try container.decodeIfPresent(String.self, forKey: .tap)
        let bridge = try container.decodeIfPresent(String.self, forKey: .bridge)
        let user = try container.decodeIfPresent([String].self, forKey: .user)
        switch (tap, bridge, user) {
        case let (tap?, nil, nil) where NetworkOptions.isValidInterfaceName(tap): self = .tap(tap)
        case let (nil, bridge?, nil) where NetworkOptions.isValidInterfaceName(bridge): self = .bridge(bridge)
        case let (nil, nil, forwards?) where forwards.count <= PortForward.maximumCount:
            do { self = .user(forwards: try forwards.map { try PortForward.parse($0) }) } catch {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\(error)"))
            }
        default:
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "a network attachment is one of tap or bridge, with an interface name of 1-15 characters, or user with port forwards"))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case let .tap(name): try container.encode(name, forKey: .tap)
        case let .bridge(name): try container.encode(name, forKey: .bridge)
        case let .user(forwards): try container.encode(forwards.map(\.description), forKey: .user)
        }
    }
}

/// A host port forwarded into a user-networking guest, in QEMU's hostfwd spelling:
/// `tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`, IPv4 host address (the guest address is
/// ignored: the guest has one, the host's).
public struct PortForward: Sendable, Equatable, CustomStringConvertible {
    public enum Proto: String, Sendable { case tcp, udp }
    public var proto: Proto
    /// The host address to listen on (nil: all).
    public var hostAddress: String?
    public var hostPort: UInt16
    public var guestPort: UInt16

    public static let maximumCount = 64

    public init(proto: Proto, hostAddress: String? = nil, hostPort: UInt16, guestPort: UInt16) {
        self.proto = proto; self.hostAddress = hostAddress; self.hostPort = hostPort; self.guestPort = guestPort
    }

    public var description: String { "\(proto.rawValue):\(hostAddress ?? ""):\(hostPort)-:\(guestPort)" }

    public static func parse(_ text: String) throws(DeviceOptionError) -> PortForward {
        func bad() -> DeviceOptionError {
            .invalidValue(option: "--net", key: "hostfwd", value: text, expected: "tcp|udp:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT, e.g. tcp::2222-:22")
        }
        let halves = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard halves.count == 2 else { throw bad() }
        let host = halves[0].split(separator: ":", omittingEmptySubsequences: false)
        let guest = halves[1].split(separator: ":", omittingEmptySubsequences: false)
        guard host.count == 3, guest.count == 2, let proto = Proto(rawValue: String(host[0])),
              let hostPort = UInt16(host[2]), hostPort > 0, let guestPort = UInt16(guest[1]), guestPort > 0 else { throw bad() }
        let address = String(host[1])
        // An IPv4 literal, not a name: passt takes addresses only, and nothing else may ride along
        // into its command line.
        guard address.isEmpty || (address.count <= 15 && address.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") })) else { throw bad() }
        return PortForward(proto: proto, hostAddress: address.isEmpty ? nil : address, hostPort: hostPort, guestPort: guestPort)
    }
}
