import VMContract
import Foundation

// The JSON bodies of the daemon's REST API (docs/api/openapi.yaml), shared by the daemon and the
// CLI so both sides agree by construction. Keys are snake_case like the per-VM control API.

/// One VM as `GET /v1/vms` and `GET /v1/vms/{name}` describe it.
public struct VMSummary: Codable, Equatable, Sendable {
    public var name: String
    public var uuid: String
    /// running, paused, shutdown, shutoff, crashed (`VMRunState`).
    public var state: String
    public var reason: String
    /// The `vireo run` process id while the VM has one: Vireo's domain id.
    public var id: Int32?
    public var autostart: Bool
    public var persistent: Bool
    public var vcpus: Int
    public var memoryBytes: UInt64
    public var currentMemoryBytes: UInt64
    public var cpuTimeNanoseconds: UInt64
    /// The VM has a managed save image: `start` resumes from it (virsh's "Managed save: yes").
    public var managedSave: Bool

    enum CodingKeys: String, CodingKey {
        case name, uuid, state, reason, id, autostart, persistent, vcpus
        case managedSave = "managed_save"
        case memoryBytes = "memory_bytes"
        case currentMemoryBytes = "current_memory_bytes"
        case cpuTimeNanoseconds = "cpu_time_ns"
    }
}

/// `GET /v1/vms/{name}/state`.
public struct VMStateBody: Codable, Equatable, Sendable {
    public var state: String
    public var reason: String
}

/// A block or network device's counters (`GET /v1/vms/{name}/stats`); empty until the VMM's
/// per-VM control API reports them.
public struct DeviceCounters: Codable, Equatable, Sendable {
    /// The guest's name for it (vda; a NIC's host interface), as virsh's block.N.name / net.N.name.
    public var name: String
    /// The backing image of a disk (virsh's block.N.path); nil for NICs.
    public var path: String?
    public var counters: [String: UInt64]

    public init(name: String, path: String? = nil, counters: [String: UInt64]) {
        self.name = name
        self.path = path
        self.counters = counters
    }
}

extension DeviceCounters {
    /// A disk's counters under virsh's domstats names (`block.N.rd.reqs`, ...); named by image path
    /// until the daemon puts the definition's target in its place.
    init(_ disk: DeviceStatistics.Disk) {
        self.init(name: disk.path, counters: [
            "rd.reqs": disk.readRequests, "rd.bytes": disk.readBytes, "wr.reqs": disk.writeRequests,
            "wr.bytes": disk.writeBytes, "fl.reqs": disk.flushRequests, "errs": disk.errors,
        ])
    }

    /// A NIC's counters under virsh's domstats names (`net.N.rx.bytes`, ...).
    init(_ nic: DeviceStatistics.Network) {
        self.init(name: nic.interface, counters: [
            "rx.bytes": nic.rxBytes, "rx.pkts": nic.rxPackets, "rx.drop": nic.rxDropped,
            "tx.bytes": nic.txBytes, "tx.pkts": nic.txPackets, "tx.errs": nic.txErrors,
        ])
    }
}

/// `GET /v1/vms/{name}/stats`: the figures `virsh domstats` prints.
public struct VMStats: Codable, Equatable, Sendable {
    public var name: String
    public var state: String
    /// virsh's numeric state: 1 running, 3 paused, 4 shutdown, 5 shut off, 6 crashed.
    public var stateCode: Int
    public var reason: String
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    public var cpuTimeNanoseconds: UInt64
    public var memoryMaxBytes: UInt64
    public var memoryCurrentBytes: UInt64
    public var rssBytes: UInt64
    public var vcpus: Int
    public var block: [DeviceCounters]
    public var net: [DeviceCounters]
    /// The VM's cgroup while it runs in one ("/vireo/vm1"), its memory use and hard limit there.
    public var cgroup: String?
    public var cgroupMemoryBytes: UInt64?
    public var cgroupMemoryLimitBytes: UInt64?
    /// How the VM's last process ended, when it is not running ("killed by the host's OOM
    /// killer: memtune hard_limit 64MiB reached", "guest wrote 3 to the debug-exit port").
    public var lastExit: String?

    enum CodingKeys: String, CodingKey {
        case name, state, reason, vcpus, block, net, cgroup
        case cgroupMemoryBytes = "cgroup_memory_bytes"
        case cgroupMemoryLimitBytes = "cgroup_memory_limit_bytes"
        case lastExit = "last_exit"
        case stateCode = "state_code"
        case cpuUserSeconds = "cpu_user_seconds"
        case cpuSystemSeconds = "cpu_system_seconds"
        case cpuTimeNanoseconds = "cpu_time_ns"
        case memoryMaxBytes = "memory_max_bytes"
        case memoryCurrentBytes = "memory_current_bytes"
        case rssBytes = "rss_bytes"
    }

    public static func code(for state: VMRunState) -> Int {
        switch state {
        case .running: 1
        case .paused: 3
        case .shutdown: 4
        case .shutoff: 5
        case .crashed: 6
        }
    }
}

/// `POST /v1/vms` and `PUT /v1/vms/{name}/definition`: the stored VM and what libvirt XML
/// elements were not imported (reported, never silently dropped).
public struct DefineResult: Codable, Equatable, Sendable {
    public var vm: VMSummary
    public var unsupported: [String]
    /// What the import changed to take the definition (memory rounded to whole pages, ...).
    public var adjusted: [String]?
}

/// Every error body: one line, and the definition field when the error is about one.
public struct APIErrorBody: Codable, Equatable, Sendable {
    public var error: String
    public var field: String?
}

/// A lifecycle action's answer: `{"message": "Domain 'vm1' started"}`, virsh's wording.
public struct ActionResult: Codable, Equatable, Sendable {
    public var message: String
    public var state: String
    public var reason: String
}

/// `POST /v1/vms/{name}/save` and `POST /v1/restore`: the snapshot file, an absolute path on the
/// daemon's host.
public struct SnapshotFileBody: Codable, Equatable, Sendable {
    public var path: String
    public init(path: String) { self.path = path }

    /// How long the daemon waits for a VMM to write a save (all of guest RAM) before giving up;
    /// a client waiting on the save must wait at least this long.
    public static let saveTimeoutSeconds = 3600
    /// How long a restored VMM has to answer on its control socket (it opens and checks the
    /// snapshot first); a client waiting on the restore must wait at least this long.
    public static let restoreTimeoutSeconds = 120
}

/// `PUT /v1/vms/{name}/autostart`.
/// The optional body of `POST /v1/vms/{name}/start`.
public struct StartBody: Codable, Equatable, Sendable {
    /// Boot the definition even if the VM has a managed save image, and discard the image.
    public var forceBoot: Bool
    public init(forceBoot: Bool) { self.forceBoot = forceBoot }
    enum CodingKeys: String, CodingKey { case forceBoot = "force_boot" }
}

public struct AutostartBody: Codable, Equatable, Sendable {
    public var enabled: Bool
    public init(enabled: Bool) { self.enabled = enabled }
}

/// An HTTP status and message for a refused request.
public struct APIError: Error, Equatable, Sendable, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var field: String?

    public init(_ status: Int, _ message: String, field: String? = nil) {
        self.status = status
        self.message = message
        self.field = field
    }

    public var description: String { message }

    /// Maps the store's and the definition parser's errors to HTTP statuses.
    static func from(_ error: any Error) -> APIError {
        switch error {
        case let error as APIError: return error
        case let error as DefinitionError: return APIError(400, error.description, field: error.field)
        case let error as StoragePoolError: return APIError(error.status, error.description, field: error.field)
        case let error as StateStoreError:
            switch error {
            case .unknownVM: return APIError(404, error.description)
            case .duplicateName, .uuidInUse, .vmActive: return APIError(409, error.description)
            case .invalidPID: return APIError(400, error.description)
            default: return APIError(500, error.description)
            }
        default: return APIError(500, "\(error)")
        }
    }
}

func jsonBytes(_ value: some Encodable) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return Array((try? encoder.encode(value)) ?? Data("{}".utf8)) + [0x0A]
}
