import VMContract
import Foundation

// The JSON bodies of live migration between daemons (docs/api/openapi.yaml): what the CLI asks of
// the source daemon, and what the source daemon asks of the destination daemon. The progress of a
// migration is the VMM's own `MigrationProgress` (VMContract), as the daemon last read it.

/// `POST /v1/vms/{name}/migrate`: move a running VM to another `vireo daemon` (virsh migrate).
public struct MigrateBody: Codable, Equatable, Sendable {
    /// The destination daemon: `unix:///path/to/its.sock` (same host) or `http://host:port` (its
    /// `--listen`).
    public var destination: String
    /// The bearer token of an `http://` destination.
    public var destinationToken: String?
    /// Keep the guest running while its RAM is copied (pre-copy). Without it the guest is paused
    /// for the whole migration and resumed on the destination, as `virsh migrate` without `--live`.
    public var live: Bool
    /// The longest the guest may be stopped for the switch-over; nil: the VMM's default (50 ms).
    public var maxDowntimeMilliseconds: Double?
    /// MiB/s; nil or 0: no limit.
    public var bandwidthMiBps: Double?
    /// Throttle the vCPUs when the guest dirties memory faster than the link carries it; nil: on.
    public var autoConverge: Bool?
    /// Remove the definition here once the VM runs on the destination (virsh --undefine-source);
    /// otherwise it stays, shut off (migrated).
    public var undefineSource: Bool
    /// Mirror every disk to the destination while the guest runs (virsh --copy-storage-all): the
    /// destination writes them at the definition's paths, creating missing images.
    public var copyStorage: Bool
    /// Switch to post-copy after the first full round (virsh --postcopy --postcopy-after-precopy).
    public var postcopy: Bool

    public init(destination: String, destinationToken: String? = nil, live: Bool, maxDowntimeMilliseconds: Double? = nil,
                bandwidthMiBps: Double? = nil, autoConverge: Bool? = nil, undefineSource: Bool = false,
                copyStorage: Bool = false, postcopy: Bool = false) {
        self.destination = destination; self.destinationToken = destinationToken; self.live = live
        self.maxDowntimeMilliseconds = maxDowntimeMilliseconds; self.bandwidthMiBps = bandwidthMiBps
        self.autoConverge = autoConverge; self.undefineSource = undefineSource
        self.copyStorage = copyStorage; self.postcopy = postcopy
    }

    enum CodingKeys: String, CodingKey {
        case destination, live
        case destinationToken = "destination_token"
        case maxDowntimeMilliseconds = "max_downtime_ms"
        case bandwidthMiBps = "bandwidth_mibps"
        case autoConverge = "auto_converge"
        case undefineSource = "undefine_source"
        case copyStorage = "copy_storage"
        case postcopy
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        destination = try container.decode(String.self, forKey: .destination)
        destinationToken = try container.decodeIfPresent(String.self, forKey: .destinationToken)
        live = try container.decodeIfPresent(Bool.self, forKey: .live) ?? false
        maxDowntimeMilliseconds = try container.decodeIfPresent(Double.self, forKey: .maxDowntimeMilliseconds)
        bandwidthMiBps = try container.decodeIfPresent(Double.self, forKey: .bandwidthMiBps)
        autoConverge = try container.decodeIfPresent(Bool.self, forKey: .autoConverge)
        undefineSource = try container.decodeIfPresent(Bool.self, forKey: .undefineSource) ?? false
        copyStorage = try container.decodeIfPresent(Bool.self, forKey: .copyStorage) ?? false
        postcopy = try container.decodeIfPresent(Bool.self, forKey: .postcopy) ?? false
    }

    /// What the VMM is asked to do once the destination listens on `address`.
    func vmmRequest(to address: String) -> MigrationRequest {
        MigrationRequest(destination: address,
                         maxDowntimeMilliseconds: maxDowntimeMilliseconds ?? MigrationRequest.defaultMaxDowntimeMilliseconds,
                         bandwidthMiBps: bandwidthMiBps ?? 0, autoConverge: autoConverge ?? true,
                         copyStorage: copyStorage, postcopy: postcopy)
    }
}

/// `POST /v1/migrations/incoming`, from the source daemon: define this VM here and start a
/// `vireo run --incoming` for it.
public struct IncomingMigrationBody: Codable, Equatable, Sendable {
    /// The VM's definition on the source: it moves with the VM (same name and uuid).
    public var definition: VMDefinition
    /// The user had paused the guest on the source: it stays paused here. Otherwise it runs once
    /// it has arrived (the pause of a non-live migration is the source daemon's, not the user's).
    public var keepPaused: Bool

    public init(definition: VMDefinition, keepPaused: Bool) {
        self.definition = definition
        self.keepPaused = keepPaused
    }

    enum CodingKeys: String, CodingKey {
        case definition
        case keepPaused = "keep_paused"
    }
}

/// The destination's answer: where its `vireo run --incoming` listens.
public struct IncomingMigrationAnswer: Codable, Equatable, Sendable {
    public var name: String
    /// `unix:PATH` (a socket in the destination's state dir, when the daemons share a host) or
    /// `tcp:HOST:PORT`; a wildcard HOST (0.0.0.0, ::) means the host the source reached the
    /// destination daemon at.
    public var address: String

    public init(name: String, address: String) {
        self.name = name
        self.address = address
    }

    /// The address the source's VMM connects to: a wildcard host is replaced by the host the
    /// destination daemon was reached at over `endpoint`.
    func connectAddress(reachedVia endpoint: Endpoint) -> String {
        guard address.hasPrefix("tcp:"), case .tcp(let daemonHost, _) = endpoint else { return address }
        let rest = address.dropFirst("tcp:".count)
        guard let colon = rest.lastIndex(of: ":") else { return address }
        let host = rest[..<colon]
        guard ["", "0.0.0.0", "::", "[::]"].contains(host) else { return address }
        let bracketed = daemonHost.contains(":") ? "[\(daemonHost)]" : daemonHost
        return "tcp:\(bracketed)\(rest[colon...])"
    }
}
