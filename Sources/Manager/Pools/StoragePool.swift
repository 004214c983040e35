import Foundation

/// A storage pool as libvirt models one: a place the daemon keeps VM disks, named, defined once
/// and started (active) or stopped. Two kinds, spelled as `virsh pool-define-as` spells them:
/// `dir` (a directory of image files) and `logical` (an LVM volume group, each volume a logical
/// volume). Volumes are never recorded: they are what the directory or volume group holds.
public struct StoragePoolDefinition: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case dir, logical
    }

    public var name: String
    public var type: Kind
    /// `dir`: the directory (absolute). `logical`: the volume group's device directory,
    /// `/dev/VG`, filled in from the group's name.
    public var target: String
    /// `logical`: the volume group's name.
    public var sourceName: String?
    /// `logical`: the physical volumes `pool-build` makes the group from (may be empty when the
    /// group already exists).
    public var sourceDevices: [String]

    enum CodingKeys: String, CodingKey {
        case name, type, target
        case sourceName = "source_name"
        case sourceDevices = "source_devices"
    }

    public init(name: String, type: Kind, target: String? = nil, sourceName: String? = nil, sourceDevices: [String] = []) {
        self.name = name
        self.type = type
        self.sourceName = sourceName
        self.sourceDevices = sourceDevices
        self.target = type == .logical ? "/dev/" + (sourceName ?? name) : (target ?? "")
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let type = try container.decode(Kind.self, forKey: .type)
        self.init(name: try container.decode(String.self, forKey: .name), type: type,
                  target: try container.decodeIfPresent(String.self, forKey: .target),
                  sourceName: try container.decodeIfPresent(String.self, forKey: .sourceName),
                  sourceDevices: try container.decodeIfPresent([String].self, forKey: .sourceDevices) ?? [])
    }

    /// The volume group a `logical` pool manages.
    public var volumeGroup: String { sourceName ?? name }

    /// Checks everything a definition names before anything is stored or run: one line per
    /// problem, naming the field. Nothing here reaches a shell; LVM tools get argv entries that
    /// cannot be options.
    public func validate() throws(StoragePoolError) {
        guard Self.isValidName(name) else {
            throw .invalid(field: "name", "pool name \(quoted(name)) must be 1-64 characters of letters, digits, '.', '_', '-', not starting with '-' or '.'")
        }
        switch type {
        case .dir:
            guard target.hasPrefix("/"), target.count <= 4096, !target.contains("\0"),
                  !target.split(separator: "/").contains(where: { $0 == ".." || $0 == "." }) else {
                throw .invalid(field: "target", "a dir pool's target must be an absolute path without '.' or '..' (got \(quoted(target)))")
            }
            guard target != "/" else { throw .invalid(field: "target", "a dir pool's target cannot be /") }
            guard sourceName == nil, sourceDevices.isEmpty else {
                throw .invalid(field: "source_name", "a dir pool has no source (only a --target directory)")
            }
        case .logical:
            // LVM's own rule for VG names, minus what would read as an option.
            guard Self.isValidName(volumeGroup) else {
                throw .invalid(field: "source_name", "volume group name \(quoted(volumeGroup)) must be 1-64 characters of letters, digits, '.', '_', '-', not starting with '-' or '.'")
            }
            for device in sourceDevices {
                guard device.hasPrefix("/dev/"), !device.contains(".."), device.count <= 255, !device.contains("\0") else {
                    throw .invalid(field: "source_devices", "a physical volume must be a device under /dev (got \(quoted(device)))")
                }
            }
        }
    }

    static func isValidName(_ text: String) -> Bool {
        guard (1...64).contains(text.count), let first = text.unicodeScalars.first, first != "-", first != "." else { return false }
        return text.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0)) }
    }
}

/// A pool as the API and `pool-list` show it.
public struct StoragePoolSummary: Codable, Equatable, Sendable {
    public var name: String
    public var type: String
    public var target: String
    public var sourceName: String?
    /// "active" or "inactive", as `virsh pool-list` says.
    public var state: String
    public var autostart: Bool
    /// Bytes, for an active pool whose space could be read.
    public var capacity: UInt64?
    public var allocation: UInt64?
    public var available: UInt64?

    enum CodingKeys: String, CodingKey {
        case name, type, target, state, autostart, capacity, allocation, available
        case sourceName = "source_name"
    }
}

/// One volume in a pool: `vol-list` and the API's answer to `vol-create-as`.
public struct StorageVolume: Codable, Equatable, Sendable {
    public var name: String
    /// The host path a definition names to use it.
    public var path: String
    /// "raw" or "qcow2" (what the header says; LVM volumes are raw).
    public var format: String
    public var capacity: UInt64
    /// Bytes the volume takes on the host (sparse files take less than their capacity).
    public var allocation: UInt64
}

/// `POST /v1/pools/{name}/volumes`.
public struct StorageVolumeRequest: Codable, Equatable, Sendable {
    public var name: String
    public var capacity: UInt64
    /// "raw" (default) or "qcow2"; logical pools take raw only.
    public var format: String?

    public init(name: String, capacity: UInt64, format: String? = nil) {
        self.name = name
        self.capacity = capacity
        self.format = format
    }
}

public enum StoragePoolError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(field: String, String)
    case unknownPool(name: String)
    case unknownVolume(pool: String, name: String)
    case duplicatePool(name: String)
    case duplicateVolume(pool: String, name: String)
    /// The operation needs the pool stopped (undefine) or started (volumes).
    case wrongState(name: String, String)
    /// A volume that a defined VM uses.
    case inUse(String)
    /// The host refused: a directory that cannot be made, an LVM tool that failed.
    case host(String)
    /// `--confine-storage`: a path a definition names lies outside every started pool.
    case confined(field: String, String)

    public var description: String {
        switch self {
        case .invalid(_, let message): message
        case .unknownPool(let name): "no storage pool named \(quoted(name))"
        case .unknownVolume(let pool, let name): "no storage volume named \(quoted(name)) in pool \(quoted(pool))"
        case .duplicatePool(let name): "a storage pool named \(quoted(name)) already exists"
        case .duplicateVolume(let pool, let name): "pool \(quoted(pool)) already holds a volume (or file) named \(quoted(name))"
        case .wrongState(_, let message): message
        case .inUse(let message): message
        case .host(let message): message
        case .confined(_, let message): message
        }
    }

    var status: Int {
        switch self {
        case .invalid: 400
        case .unknownPool, .unknownVolume: 404
        case .duplicatePool, .duplicateVolume, .wrongState, .inUse: 409
        case .host: 500
        case .confined: 403
        }
    }

    var field: String? {
        switch self {
        case .invalid(let field, _), .confined(let field, _): field
        default: nil
        }
    }
}
