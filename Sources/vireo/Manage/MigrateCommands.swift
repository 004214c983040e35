import ArgumentParser
import Foundation
import Manager
import VMContract
#if canImport(Glibc)
import Glibc
#endif

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Move a running VM to another vireo daemon (virsh migrate), or cancel that with --cancel.",
        discussion: """
        The destination daemon defines the VM from this daemon's definition (same name and uuid) and receives it \
        in a new vireo run process. Once the guest runs there, the VM here is shut off (migrated) and the \
        destination shows it running (migrated); a failure or cancel before that leaves it running here and \
        removes what the destination made. Disks are shared storage: the same paths must reach the same \
        images on both hosts. Without --live the guest is paused for the whole copy (as virsh migrate); with \
        --live it runs while its memory is copied, and stops only for the last pages (--max-downtime). \
        The command follows the migration to its end; interrupting it does not stop the migration \
        (vireo migrate --cancel NAME does).
        """)

    @Argument(help: "VM name.") var name: String

    @Option(help: ArgumentHelp("The destination daemon: unix:///path/to/its.sock (same host) or http://host:port (its --listen).",
                               valueName: "uri"))
    var to: String?

    @Option(name: .customLong("to-token-file"),
            help: "Bearer token file of an http:// destination (default: --token-file when this daemon is reached over its Unix socket).")
    var toTokenFile: String?

    @Flag(help: "Keep the guest running while its memory is copied (pre-copy).") var live = false

    @Option(name: .customLong("max-downtime"), help: ArgumentHelp("The longest the guest may be stopped for the switch-over: 50ms (default), 0.3s.",
                                                                   valueName: "time"))
    var maxDowntime: String?

    @Option(help: ArgumentHelp("Bandwidth limit in MiB/s (default: none).", valueName: "MiB/s")) var bandwidth: Double?

    @Flag(name: .customLong("no-auto-converge"), help: "Never throttle the guest's vCPUs when it dirties memory faster than the link carries it.")
    var noAutoConverge = false

    @Flag(help: "Accepted for virsh compatibility: the destination always keeps the definition (Vireo has no transient VMs).")
    var persistent = false

    @Flag(name: .customLong("undefine-source"), help: "Remove the definition here once the VM runs on the destination (it stays, shut off (migrated), otherwise).")
    var undefineSource = false

    @Flag(name: .customLong("copy-storage-all"), help: "Mirror every disk to the destination while the guest runs (for disks that are not shared storage); the destination writes them at the definition's paths, creating missing images.") var copyStorageAll = false

    @Flag(help: "Switch to post-copy after the first full round when the rest does not fit --max-downtime: the guest runs on the destination at once and fetches the pages it lacks (a connection lost then loses the VM).") var postcopy = false

    @Flag(help: "Cancel the migration of NAME under way (virsh domjobabort); it keeps running here.") var cancel = false

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            if postcopy && !live { throw ManageFailure(["--postcopy needs --live (the guest runs on the destination while its pages come over)"]) }
            if cancel {
                try cancelMigration()
                return
            }
            try migrate()
        }
    }

    private func cancelMigration() throws {
        let client = try connection.client(timeoutSeconds: 120)
        let progress = try client.decode(MigrationProgress.self, "POST", "/v1/vms/\(escapedName(name))/migrate/cancel",
                                         action: "Failed to cancel the migration of", name: name)
        print(progress.phase == .cancelled ? "Migration of domain '\(name)' cancelled\n"
                                           : "Migration of domain '\(name)' ended: \(progress.error ?? progress.phase.rawValue)\n")
    }

    private func migrate() throws {
        guard let to else { throw ManageFailure(["--to is required: the destination daemon, unix:///path/to/its.sock or http://host:port"]) }
        guard let endpoint = Endpoint(daemonURI: to) else {
            throw ManageFailure(["invalid destination '\(to)' (expected unix:///path/to/daemon.sock or http://host:port)"])
        }
        var token: String?
        if case .tcp = endpoint {
            let sourceOverTCP = connection.url != nil || connection.connect?.hasPrefix("http://") == true
            guard let file = toTokenFile ?? (sourceOverTCP ? nil : connection.tokenFile) else {
                throw ManageFailure(["--to \(to) needs the destination's bearer token: --to-token-file F (or --token-file F when this daemon is reached over its Unix socket)"])
            }
            token = try readToken(file)
        }
        let body = MigrateBody(destination: to, destinationToken: token, live: live,
                               maxDowntimeMilliseconds: try maxDowntime.map(Self.milliseconds), bandwidthMiBps: bandwidth,
                               autoConverge: noAutoConverge ? false : nil, undefineSource: undefineSource,
                               copyStorage: copyStorageAll, postcopy: postcopy)
        // The daemon answers once the destination listens and the VMM has started (the
        // destination's vireo run must come up first); then the migration is followed here.
        let client = try connection.client(timeoutSeconds: 120)
        let path = "/v1/vms/\(escapedName(name))/migration"
        let poll = try connection.client(timeoutSeconds: 10)
        let line = isatty(2) != 0 ? ProgressLine {
            guard let progress = try? poll.decode(MigrationProgress.self, "GET", path, action: "", name: "") else { return nil }
            return describeMigration(progress, name: name)
        } : nil
        line?.start()
        defer { line?.finish() }
        var progress = try client.decode(MigrationProgress.self, "POST", "/v1/vms/\(escapedName(name))/migrate",
                                         body: try JSONEncoder().encode(body), action: "Failed to migrate", name: name)
        while progress.isActive {
            usleep(100_000)
            progress = try poll.decode(MigrationProgress.self, "GET", path, action: "Failed to migrate", name: name)
        }
        line?.finish()
        switch progress.phase {
        case .completed:
            if let note = progress.error { writeStandardError("warning: \(note)\n") }
            let downtime = progress.downtimeMilliseconds.map { String(format: " (downtime %.1f ms)", $0) } ?? ""
            print("Domain '\(name)' migrated to \(to)\(downtime)\n")
        case .cancelled:
            throw ManageFailure(["Failed to migrate domain '\(name)'", "the migration was cancelled; the domain runs on here"])
        default:
            throw ManageFailure(["Failed to migrate domain '\(name)'", progress.error ?? "the migration \(progress.phase.rawValue)"])
        }
    }

    /// "50ms", "0.3s", or a plain number of milliseconds.
    static func milliseconds(_ text: String) throws -> Double {
        let value: Double?
        if text.hasSuffix("ms") { value = Double(text.dropLast(2)) }
        else if text.hasSuffix("s") { value = Double(text.dropLast()).map { $0 * 1000 } }
        else { value = Double(text) }
        guard let value, value > 0, value.isFinite else {
            throw ManageFailure(["--max-downtime '\(text)' is not a time (50ms, 0.3s)"])
        }
        return value
    }
}

/// `vireo migrate`'s progress line: "Migrating domain 'vm1': [ 63 %] round 2, 1.2 GiB sent, ...".
func describeMigration(_ progress: MigrationProgress, name: String) -> String {
    let prefix = "Migrating domain '\(name)': "
    switch progress.phase {
    case .none, .setup: return prefix + "preparing the destination"
    case .precopy:
        let total = max(progress.ramBytesTotal, 1)
        let done = progress.rounds == 0 ? progress.ramBytesTransferred : total - min(total, progress.ramBytesRemaining)
        let percent = min(99, done * 100 / total)
        var text = prefix + "[\(String(percent).leftPadded(to: 3)) %] round \(progress.rounds + 1), \(gibibytes(progress.ramBytesTransferred)) sent"
        if progress.rounds > 0 {
            text += String(format: ", %@ dirty at %.0f MiB/s", prettyCapacity(progress.ramBytesRemaining), progress.bandwidthBytesPerSecond / 1_048_576)
        }
        if progress.throttlePercent > 0 { text += ", vCPUs throttled \(progress.throttlePercent)%" }
        return text
    case .stopAndCopy: return prefix + "[ 99 %] guest stopped, switching over"
    case .postcopy: return prefix + "[ 99 %] running on the destination, post-copy: \(prettyCapacity(progress.ramBytesRemaining)) to go"
    case .completed: return prefix + "[100 %] done"
    case .failed, .cancelled: return prefix + progress.phase.rawValue
    }
}

struct DomJobInfo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "domjobinfo",
        abstract: "Show a VM's migration under way (virsh domjobinfo): rounds, RAM sent and remaining, dirty rate, bandwidth, expected downtime.",
        discussion: "With --completed, the last migration that ended (completed, failed or cancelled), with its downtime; the daemon remembers it until it restarts.")
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Show the last migration that ended instead of the one under way.") var completed = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let progress = try connection.client().decode(MigrationProgress.self, "GET", "/v1/vms/\(escapedName(name))/migration",
                                                          action: "Failed to get the job of", name: name)
            print(domjobinfoLines(progress, completed: completed).joined(separator: "\n") + "\n")
        }
    }
}

/// virsh domjobinfo's layout: a 17-column label, counts in 12 columns before their unit, sizes
/// as vshPrettyCapacity prints them.
func domjobinfoLines(_ progress: MigrationProgress, completed: Bool) -> [String] {
    func field(_ label: String, _ value: String) -> String { label.padding(toLength: max(17, label.count), withPad: " ", startingAt: 0) + " " + value }
    func count(_ value: Double, _ unit: String) -> String { String(UInt64(max(0, value.rounded()))).padding(toLength: 12, withPad: " ", startingAt: 0) + " " + unit }
    let ended = progress.phase == .completed || progress.phase == .failed || progress.phase == .cancelled
    guard completed ? ended : progress.isActive else { return [field("Job type:", "None")] }
    let jobType = switch progress.phase {
    case .completed: "Completed"
    case .failed: "Failed"
    case .cancelled: "Cancelled"
    default: "Unbounded"
    }
    let remaining = progress.phase == .completed ? 0 : progress.ramBytesRemaining
    var lines = [
        field("Job type:", jobType),
        field("Operation:", "Outgoing migration"),
        field("Time elapsed:", count(progress.elapsedMilliseconds, "ms")),
        field("Data processed:", prettyCapacity(progress.ramBytesTransferred)),
        field("Data remaining:", prettyCapacity(remaining)),
        field("Data total:", prettyCapacity(progress.ramBytesTotal)),
        field("Memory processed:", prettyCapacity(progress.ramBytesTransferred)),
        field("Memory remaining:", prettyCapacity(remaining)),
        field("Memory total:", prettyCapacity(progress.ramBytesTotal)),
        field("Memory bandwidth:", prettyCapacity(UInt64(max(0, progress.bandwidthBytesPerSecond))) + "/s"),
        field("Dirty rate:", count(progress.dirtyPagesPerSecond, "pages/s")),
        field("Page size:", count(4096, "bytes")),
        field("Iteration:", String(progress.rounds)),
    ]
    if progress.phase == .completed, let downtime = progress.downtimeMilliseconds {
        lines.append(field("Total downtime:", count(downtime, "ms")))
    } else if progress.isActive {
        lines.append(field("Expected downtime:", count(progress.expectedDowntimeMilliseconds, "ms")))
    }
    if progress.throttlePercent > 0 { lines.append(field("Auto converge throttle:", count(Double(progress.throttlePercent), "%"))) }
    if let error = progress.error { lines.append(field("Error message:", error)) }
    return lines
}

/// vshPrettyCapacity: three decimals in the largest binary unit below the value ("1.500 GiB", "0.000 B").
func prettyCapacity(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return String(format: "%.3f %@", value, units[unit])
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: " ", count: width - count) + self }
}
