import Foundation

/// The per-VM control API's resources, as both the VMM (which serves them) and the daemon and CLI
/// (which call them) name them.
public enum ControlRoute: String, CaseIterable, Sendable {
    case info = "/vm"
    case stats = "/vm/stats"
    case vcpus = "/vm/vcpus"
    case pause = "/vm/pause"
    case resume = "/vm/resume"
    case stop = "/vm/stop"
    case shutdown = "/vm/shutdown"
    case snapshot = "/vm/snapshot"
    case snapshotProgress = "/vm/snapshot/progress"
    case migrate = "/vm/migrate"
    case migration = "/vm/migration"
    case migrateCancel = "/vm/migrate/cancel"
    case migratePostcopy = "/vm/migrate/postcopy"
    case console = "/console"
    case consoleInput = "/console/input"

    public var path: String { rawValue }

    /// The one method each resource takes.
    public var method: String {
        switch self {
        case .info, .stats, .vcpus, .console, .snapshotProgress, .migration: "GET"
        case .pause, .resume, .stop, .shutdown, .snapshot, .migrate, .migrateCancel, .migratePostcopy: "PUT"
        case .consoleInput: "POST"
        }
    }
}

/// JSON the way every control-API body is written and read (sorted keys, plain slashes).
public enum ContractJSON {
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}

/// `GET /vm`.
public struct VMInfo: Codable, Equatable, Sendable {
    /// created, running, paused or stopped.
    public var state: String
    public var vcpus: Int
    public var memoryBytes: UInt64
    /// How the machine started: the kernel's boot path, or "snapshot <path>".
    public var boot: String
    public var cmdline: String
    public var hostProfile: String
    public var outcome: String?
    /// The guest's ACPI driver enabled power-button events.
    public var powerButtonEnabled: Bool
    /// A press the guest has not acknowledged yet (PWRBTN_STS still set).
    public var powerButtonPending: Bool
    /// Set when this run resumed a snapshot (virsh's "running (restored)").
    public var restoredFrom: String?
    /// Set when this run received the VM by migration (virsh's "running (migrated)"): the source.
    public var migratedFrom: String?

    enum CodingKeys: String, CodingKey {
        case state, vcpus, boot, cmdline, outcome
        case memoryBytes = "memory_bytes"
        case hostProfile = "host_profile"
        case powerButtonEnabled = "power_button_enabled"
        case powerButtonPending = "power_button_pending"
        case restoredFrom = "restored_from"
        case migratedFrom = "migrated_from"
    }

    public init(state: String, vcpus: Int, memoryBytes: UInt64, boot: String, cmdline: String, hostProfile: String,
                outcome: String?, powerButtonEnabled: Bool, powerButtonPending: Bool, restoredFrom: String?,
                migratedFrom: String? = nil) {
        self.state = state; self.vcpus = vcpus; self.memoryBytes = memoryBytes; self.boot = boot
        self.cmdline = cmdline; self.hostProfile = hostProfile; self.outcome = outcome
        self.powerButtonEnabled = powerButtonEnabled; self.powerButtonPending = powerButtonPending
        self.restoredFrom = restoredFrom
        self.migratedFrom = migratedFrom
    }
}

/// One line of `GET /vm/stats`' exit reasons.
public struct ExitCount: Codable, Equatable, Sendable {
    public var reason: String
    public var count: UInt64
    public init(reason: String, count: UInt64) { self.reason = reason; self.count = count }
}

/// `GET /vm/stats`: whole-process figures (one process is one VM) and the devices' counters.
public struct VMStats: Codable, Equatable, Sendable {
    public var exits: UInt64
    /// The most frequent exit reasons ("pio_out 0x3f8", "mmio_write 0xfee00000", ...) and counts.
    public var exitReasons: [ExitCount]
    public var cpuUserSeconds: Double
    public var cpuSystemSeconds: Double
    public var rssBytes: UInt64
    public var devices: DeviceStatistics

    enum CodingKeys: String, CodingKey {
        case exits, devices
        case exitReasons = "exit_reasons"
        case cpuUserSeconds = "cpu_user_seconds"
        case cpuSystemSeconds = "cpu_system_seconds"
        case rssBytes = "rss_bytes"
    }

    public init(exits: UInt64, exitReasons: [ExitCount], cpuUserSeconds: Double, cpuSystemSeconds: Double,
                rssBytes: UInt64, devices: DeviceStatistics) {
        self.exits = exits; self.exitReasons = exitReasons; self.cpuUserSeconds = cpuUserSeconds
        self.cpuSystemSeconds = cpuSystemSeconds; self.rssBytes = rssBytes; self.devices = devices
    }
}

/// One vCPU in `GET /vm/vcpus`: what a stuck guest's vCPUs were doing (QEMU's `info registers`
/// and `info lapic`, in short). The thread fields are read without stopping anything; the
/// architectural ones from a moment's pause (absent, with `error`, when the vCPU would not park).
public struct VCPUReport: Codable, Equatable, Sendable {
    public var id: Int
    /// "running" (in or around KVM_RUN), "parked" (paused) or "finished".
    public var thread: String
    public var exits: UInt64
    public var error: String?
    /// "real", "protected" or "long"; `cpl` the privilege level (CS.DPL... as SS.DPL says).
    public var mode: String?
    public var cpl: Int?
    public var rip: String?
    public var rflags: String?
    public var interruptsEnabled: Bool?
    /// KVM's MP state: "runnable", "halted", "uninitialized", "init_received", "sipi_received", ...
    public var mpState: String?
    /// From KVM's vCPU events: an interrupt or exception on its way in, NMI state, STI/MOV SS shadow.
    public var pendingEvents: [String]?
    /// The LAPIC: timer mode and programming, the highest vectors requested (IRR) and in service (ISR).
    public var lapicTimer: String?
    public var lapicIRR: [Int]?
    public var lapicISR: [Int]?
    public var tsc: String?
    public var tscDeadline: String?

    enum CodingKeys: String, CodingKey {
        case id, thread, exits, error, mode, cpl, rip, rflags, tsc
        case interruptsEnabled = "interrupts_enabled", mpState = "mp_state", pendingEvents = "pending_events"
        case lapicTimer = "lapic_timer", lapicIRR = "lapic_irr", lapicISR = "lapic_isr", tscDeadline = "tsc_deadline"
    }

    public init(id: Int, thread: String, exits: UInt64) {
        self.id = id; self.thread = thread; self.exits = exits
    }
}

/// `PUT /vm/shutdown`'s answer.
public struct PowerButtonResult: Codable, Equatable, Sendable {
    public var pressed: Bool
    /// Whether the guest had enabled power-button events (an ACPI OS that will act on it).
    public var guestListening: Bool
    enum CodingKeys: String, CodingKey {
        case pressed
        case guestListening = "guest_listening"
    }
    public init(pressed: Bool, guestListening: Bool) { self.pressed = pressed; self.guestListening = guestListening }
}

/// `POST /console/input`'s answer.
public struct ConsoleInputResult: Codable, Equatable, Sendable {
    public var accepted: Int
    public init(accepted: Int) { self.accepted = accepted }
}

/// Every error answer: `{"error": "..."}` with a 4xx/5xx status.
public struct ControlError: Codable, Equatable, Sendable {
    public var error: String
    public init(error: String) { self.error = error }
}

/// `PUT /vm/snapshot`.
public struct SnapshotRequest: Codable, Equatable, Sendable {
    /// What the VM does once the snapshot is on disk.
    public enum Then: String, Codable, Sendable, CaseIterable {
        /// Whatever it did before the request: a running VM runs on, a paused one stays paused.
        case keep
        /// The VMM stops and exits (virsh save): the snapshot is now the VM.
        case stop
    }

    /// Where the snapshot file goes (created or replaced; written beside it, then renamed).
    public var path: String
    public var then: Then

    public init(path: String, then: Then = .keep) {
        self.path = path
        self.then = then
    }

    enum CodingKeys: String, CodingKey { case path, then }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        path = try container.decode(String.self, forKey: .path)
        then = try container.decodeIfPresent(Then.self, forKey: .then) ?? .keep
    }
}

/// `PUT /vm/snapshot`'s answer, once the file is complete.
public struct SnapshotResult: Codable, Equatable, Sendable {
    public var path: String
    /// Size of the file (guest RAM pages that were all zeros are holes and take no space).
    public var bytes: UInt64
    /// How long the vCPUs were stopped for it.
    public var pausedMilliseconds: Double
    /// The VM's state after the request: running, paused, or stopped (then: stop).
    public var state: String

    enum CodingKeys: String, CodingKey {
        case path, bytes, state
        case pausedMilliseconds = "paused_ms"
    }

    public init(path: String, bytes: UInt64, pausedMilliseconds: Double, state: String) {
        self.path = path; self.bytes = bytes; self.pausedMilliseconds = pausedMilliseconds; self.state = state
    }
}

/// `GET /vm/snapshot/progress`: how far the snapshot being written (or the last one) has come, for
/// progress displays while `PUT /vm/snapshot` is still waiting for its answer.
public struct SnapshotProgress: Codable, Equatable, Sendable {
    public enum Phase: String, Codable, Sendable {
        /// No snapshot was requested in this process yet.
        case none
        /// Pausing, capturing device and vCPU state.
        case capturing
        /// Writing guest RAM.
        case writing
        case completed, failed
    }

    public var phase: Phase
    public var path: String?
    /// Guest RAM bytes looked at so far (written, or skipped as zero pages) and in all.
    public var ramBytesDone: UInt64
    public var ramBytesTotal: UInt64

    enum CodingKeys: String, CodingKey {
        case phase, path
        case ramBytesDone = "ram_bytes_done"
        case ramBytesTotal = "ram_bytes_total"
    }

    public init(phase: Phase, path: String? = nil, ramBytesDone: UInt64 = 0, ramBytesTotal: UInt64 = 0) {
        self.phase = phase; self.path = path; self.ramBytesDone = ramBytesDone; self.ramBytesTotal = ramBytesTotal
    }
}
