import Foundation

/// `PUT /vm/migrate`: send the running VM to a `vireo run --incoming ADDRESS` process.
public struct MigrationRequest: Codable, Equatable, Sendable {
    /// `tcp:HOST:PORT` or `unix:PATH` (also `unix:///PATH`), where the destination listens.
    public var destination: String
    /// The longest the guest may be stopped for the last round (stop-and-copy), in milliseconds.
    /// Pre-copy goes on while the pages still dirty would take longer than this to send.
    public var maxDowntimeMilliseconds: Double
    /// Bandwidth limit in MiB/s (0: none).
    public var bandwidthMiBps: Double
    /// Throttle the vCPUs when the guest dirties memory faster than the link carries it (QEMU's
    /// auto-converge): the stop-and-copy round is reached at the cost of guest speed.
    public var autoConverge: Bool
    /// Pre-copy rounds at most; after the last one the migration stops the guest and copies the
    /// rest whatever the downtime (reported as such).
    public var maxRounds: Int
    /// Mirror every disk to the destination while the guest runs (libvirt's --copy-storage-all):
    /// for disks that are not shared storage. The destination writes them at the paths its
    /// launch names (creating missing images in the source's format and size).
    public var copyStorage: Bool
    /// Switch to post-copy after the first full round when the rest does not fit the downtime
    /// target (it can also be switched any time with `PUT /vm/migrate/postcopy`): the guest runs on
    /// the destination at once and the pages it still lacks come over on demand.
    public var postcopy: Bool
    /// After the last round, the destination checks every page of its copy against a checksum the
    /// source sends (CRC-32 per page, computed while the guest is stopped: adds roughly a second
    /// per GiB of downtime). A mismatch refuses the switch-over and the guest runs on here: for
    /// validating migration on a new host, not for production downtime.
    public var verify: Bool

    public static let defaultMaxDowntimeMilliseconds: Double = 50
    public static let defaultMaxRounds = 30

    public init(destination: String, maxDowntimeMilliseconds: Double = defaultMaxDowntimeMilliseconds,
                bandwidthMiBps: Double = 0, autoConverge: Bool = true, maxRounds: Int = defaultMaxRounds,
                copyStorage: Bool = false, postcopy: Bool = false, verify: Bool = false) {
        self.destination = destination; self.maxDowntimeMilliseconds = maxDowntimeMilliseconds
        self.bandwidthMiBps = bandwidthMiBps; self.autoConverge = autoConverge; self.maxRounds = maxRounds
        self.copyStorage = copyStorage
        self.postcopy = postcopy
        self.verify = verify
    }

    enum CodingKeys: String, CodingKey {
        case destination
        case maxDowntimeMilliseconds = "max_downtime_ms"
        case bandwidthMiBps = "bandwidth_mibps"
        case autoConverge = "auto_converge"
        case maxRounds = "max_rounds"
        case copyStorage = "copy_storage"
        case postcopy, verify
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        destination = try container.decode(String.self, forKey: .destination)
        maxDowntimeMilliseconds = try container.decodeIfPresent(Double.self, forKey: .maxDowntimeMilliseconds) ?? Self.defaultMaxDowntimeMilliseconds
        bandwidthMiBps = try container.decodeIfPresent(Double.self, forKey: .bandwidthMiBps) ?? 0
        autoConverge = try container.decodeIfPresent(Bool.self, forKey: .autoConverge) ?? true
        maxRounds = try container.decodeIfPresent(Int.self, forKey: .maxRounds) ?? Self.defaultMaxRounds
        copyStorage = try container.decodeIfPresent(Bool.self, forKey: .copyStorage) ?? false
        postcopy = try container.decodeIfPresent(Bool.self, forKey: .postcopy) ?? false
        verify = try container.decodeIfPresent(Bool.self, forKey: .verify) ?? false
    }

    /// Why the request cannot be carried out as given (nil: fine).
    public var problem: String? {
        if !(maxDowntimeMilliseconds > 0 && maxDowntimeMilliseconds <= 600_000) { return "max_downtime_ms must be in (0, 600000]" }
        if !(bandwidthMiBps >= 0 && bandwidthMiBps.isFinite) { return "bandwidth_mibps must be 0 (unlimited) or positive" }
        if !(1...1000).contains(maxRounds) { return "max_rounds must be 1...1000" }
        if destination.isEmpty { return "destination is empty" }
        if verify && postcopy { return "verify checks the pages after the last round; post-copy has none: use one or the other" }
        return nil
    }
}

/// `GET /vm/migration` (and the answer to `PUT /vm/migrate` / `PUT /vm/migrate/cancel`): where
/// the current or last migration of this VM is. What `vireo domjobinfo` prints.
public struct MigrationProgress: Codable, Equatable, Sendable {
    public enum Phase: String, Codable, Sendable {
        /// No migration was asked for in this process.
        case none
        /// Connecting to the destination and agreeing on the machine.
        case setup
        /// Copying RAM while the guest runs (rounds of dirty pages).
        case precopy
        /// The guest is stopped: the last pages and the device state go across.
        case stopAndCopy = "stop-and-copy"
        /// The guest runs on the destination; the pages it still lacks go across (on demand first).
        case postcopy
        /// The destination runs the guest; this process is ending.
        case completed
        /// Failed before the switch-over: the guest kept running here.
        case failed
        /// Cancelled before the switch-over: the guest kept running here.
        case cancelled
    }

    public var phase: Phase
    public var destination: String?
    /// Completed pre-copy rounds (the first sends all of RAM, later ones what was dirtied meanwhile).
    public var rounds: Int
    public var ramBytesTotal: UInt64
    /// RAM sent so far (pages sent again in later rounds count again), zero pages excluded.
    public var ramBytesTransferred: UInt64
    /// With copy_storage: disk bytes sent so far (zero runs excluded), and still dirty.
    public var diskBytesTransferred: UInt64
    public var diskBytesRemaining: UInt64
    /// Dirty RAM still to send as of the last look.
    public var ramBytesRemaining: UInt64
    /// Pages the guest dirtied per second in the last round.
    public var dirtyPagesPerSecond: Double
    /// What the link carried in the last round, bytes per second.
    public var bandwidthBytesPerSecond: Double
    /// How long the stop-and-copy round would take now.
    public var expectedDowntimeMilliseconds: Double
    /// vCPU throttle (auto-converge), percent of time the vCPUs are held (0: none).
    public var throttlePercent: Int
    /// The migration switched to post-copy (the guest ran on the destination before all of its
    /// RAM was there).
    public var postcopy: Bool
    /// Post-copy: pages the destination asked for because the guest touched them.
    public var postcopyPageRequests: Int
    /// Measured once completed: from stopping the vCPUs here to the destination running them.
    public var downtimeMilliseconds: Double?
    /// From the request to now (or to the end).
    public var elapsedMilliseconds: Double
    public var error: String?

    public init(phase: Phase, destination: String? = nil, rounds: Int = 0, ramBytesTotal: UInt64 = 0,
                ramBytesTransferred: UInt64 = 0, ramBytesRemaining: UInt64 = 0, diskBytesTransferred: UInt64 = 0,
                diskBytesRemaining: UInt64 = 0, dirtyPagesPerSecond: Double = 0,
                bandwidthBytesPerSecond: Double = 0, expectedDowntimeMilliseconds: Double = 0, throttlePercent: Int = 0,
                downtimeMilliseconds: Double? = nil, elapsedMilliseconds: Double = 0, error: String? = nil) {
        self.phase = phase; self.destination = destination; self.rounds = rounds; self.ramBytesTotal = ramBytesTotal
        self.ramBytesTransferred = ramBytesTransferred; self.ramBytesRemaining = ramBytesRemaining
        self.diskBytesTransferred = diskBytesTransferred; self.diskBytesRemaining = diskBytesRemaining
        self.dirtyPagesPerSecond = dirtyPagesPerSecond; self.bandwidthBytesPerSecond = bandwidthBytesPerSecond
        self.expectedDowntimeMilliseconds = expectedDowntimeMilliseconds; self.throttlePercent = throttlePercent
        self.postcopyPageRequests = 0
        self.postcopy = false
        self.downtimeMilliseconds = downtimeMilliseconds; self.elapsedMilliseconds = elapsedMilliseconds; self.error = error
    }

    /// Whether a migration is under way (a new one is refused meanwhile).
    public var isActive: Bool { phase == .setup || phase == .precopy || phase == .stopAndCopy || phase == .postcopy }

    enum CodingKeys: String, CodingKey {
        case phase, destination, rounds, error
        case ramBytesTotal = "ram_bytes_total"
        case ramBytesTransferred = "ram_bytes_transferred"
        case ramBytesRemaining = "ram_bytes_remaining"
        case diskBytesTransferred = "disk_bytes_transferred"
        case diskBytesRemaining = "disk_bytes_remaining"
        case dirtyPagesPerSecond = "dirty_pages_per_second"
        case bandwidthBytesPerSecond = "bandwidth_bytes_per_second"
        case expectedDowntimeMilliseconds = "expected_downtime_ms"
        case throttlePercent = "throttle_percent"
        case postcopyPageRequests = "postcopy_page_requests"
        case postcopy
        case downtimeMilliseconds = "downtime_ms"
        case elapsedMilliseconds = "elapsed_ms"
    }
}
