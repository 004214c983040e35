import VMContract
import Foundation
import Testing
@testable import Manager

/// A daemon whose VMs are fake `vireo run`s, so lifecycle paths run without KVM. The daemon spawns
/// a shell script with the real command line (`run --launch-spec FILE`); the script stays up until
/// the control socket tells it to exit (or fails at once, like a VMM that cannot resume a
/// snapshot, when the launch restores a file whose path says "corrupt"). A launch with `incoming`
/// prints where it listens, as `vireo run --incoming` does, and waits for the source's fake VMM
/// to say the VM has arrived (or failed). Each VM's control socket is a `ScriptedControlSocket`
/// that answers as the VMM does, with VMContract types.
final class FakeVMMDaemon {
    let server: InProcessDaemon
    private var sockets: [ScriptedControlSocket] = []

    /// `cgroupPartition`: the host's real cgroups, under that partition (else none).
    init(restartBackoff: RestartBackoff = RestartBackoff(), cgroupPartition: String? = nil) throws {
        let scripts = "/tmp/vf-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: scripts, withIntermediateDirectories: true)
        let executable = scripts + "/fake-vireo"
        try Self.script.write(toFile: executable, atomically: true, encoding: .utf8)
        chmod(executable, 0o755)
        server = try InProcessDaemon(executable: executable, cleanUp: [scripts], restartBackoff: restartBackoff,
                                     cgroupPartition: cgroupPartition)
    }

    var client: HTTPClient { server.unix }
    var store: StateStore { server.daemon.store }
    var stateDirectory: String { server.directory + "/state" }
    func vmDirectory(_ name: String) -> String { stateDirectory + "/vms/" + name }

    static let script = """
        #!/bin/sh
        # A fake `vireo run --launch-spec FILE` for the daemon tests.
        [ "$1 $2" = "run --launch-spec" ] || { echo "fake vireo: unexpected arguments: $*" >&2; exit 2; }
        dir=$(dirname "$3")
        rm -f "$dir/fake-exit"
        if grep -q '"restore"' "$3" && grep -q corrupt "$3"; then
          echo "vireo: cannot restore the snapshot: not a Vireo snapshot (bad magic)" >&2
          exit 1
        fi
        if grep -q '"incoming"' "$3"; then
          address=$(sed -n 's/.*"incoming":"\\([^"]*\\)".*/\\1/p' "$3")
          case "$address" in tcp:*:0) address="${address%:0}:45678";; esac
          echo "$address" > "$dir/fake-incoming"
          printf 'vireo: waiting for a migration on %s\r\n' "$address" >&2
          i=0
          while [ ! -e "$dir/fake-arrived" ] && [ ! -e "$dir/fake-failed" ] && [ ! -e "$dir/fake-exit" ] && [ -d "$dir" ] && [ $i -lt 1200 ]; do
            sleep 0.05; i=$((i + 1))
          done
          if [ ! -e "$dir/fake-arrived" ]; then
            rm -f "$dir/fake-failed"
            echo "vireo: error: the migration connection closed while receiving RAM" >&2
            exit 1
          fi
          rm -f "$dir/fake-arrived"
        fi
        touch "$dir/fake-alive"
        i=0
        while [ ! -e "$dir/fake-exit" ] && [ -d "$dir" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
        rm -f "$dir/fake-alive"
        exit 0
        """

    /// Defines `name` (the fake kernel is never read) and serves its control socket.
    @discardableResult
    func define(_ name: String, extraYAML: String = "", failSnapshot: Bool = false,
                migration: FakeControl.MigrationScript = .succeed) throws -> FakeControl {
        let yaml = "name: \(name)\nmemory: 32M\nos:\n  kernel: /fake/vmlinux\n" + extraYAML
        let response = try client.request("POST", "/v1/vms", body: Array(yaml.utf8))
        guard response.status == 201 else { throw APIError(response.status, response.text) }
        return try serve(name, failSnapshot: failSnapshot, migration: migration)
    }

    /// Serves the control socket of a VM this daemon does not have yet: one that will arrive by
    /// migration (`arrivesPaused`: its VMM reports the guest paused, as after a non-live migration).
    @discardableResult
    func serve(_ name: String, failSnapshot: Bool = false, migration: FakeControl.MigrationScript = .succeed,
               arrivesPaused: Bool = false) throws -> FakeControl {
        let directory = vmDirectory(name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let control = FakeControl(directory: directory, failSnapshot: failSnapshot, migration: migration, paused: arrivesPaused)
        sockets.append(try ScriptedControlSocket(path: directory + "/control.sock") { control.answer($0) })
        return control
    }

    func state(_ name: String) throws -> VMStateBody {
        try decodeJSON(VMStateBody.self, try client.request("GET", "/v1/vms/\(name)/state"))
    }

    func post(_ path: String, _ body: SnapshotFileBody? = nil) throws -> HTTPResponse {
        try client.request("POST", path, body: try body.map { Array(try JSONEncoder().encode($0)) } ?? [])
    }

    /// The launch specification the daemon wrote for the VM's last start.
    func launchSpec(_ name: String) throws -> LaunchSpec {
        let bytes = try #require(readSmallFileBytes(vmDirectory(name) + "/launch.json", limit: LaunchSpec.maximumEncodedBytes))
        return try ContractJSON.decode(LaunchSpec.self, from: bytes)
    }

    deinit {
        // Every fake VMM still up exits (and would once its directory went away with the daemon's).
        for socket in sockets { socket.close() }
        if let names = try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/vms") {
            for name in names { _ = FileManager.default.createFile(atPath: vmDirectory(name) + "/fake-exit", contents: nil) }
        }
    }
}

/// What one fake VM's control socket answers, and the requests it received.
final class FakeControl: @unchecked Sendable {
    /// How the fake VMM's outgoing migration goes.
    enum MigrationScript: Sendable, Equatable {
        /// Rounds, stop-and-copy, then the destination's fake VMM runs the guest and this one exits.
        case succeed
        /// A few rounds, then the connection breaks (the destination's fake VMM fails too).
        case fail
        /// Rounds until cancelled.
        case runUntilCancelled
        /// PUT /vm/migrate is refused at once (400).
        case refuse
        /// Everything is sent, but the destination's answer is lost: the guest is held paused
        /// here, and the destination runs it (or not).
        case loseTheAnswer(destinationRuns: Bool)
    }

    let directory: String
    let failSnapshot: Bool
    let migrationScript: MigrationScript
    private let lock = NSLock()
    private var snapshots: [SnapshotRequest] = []
    private var migrations: [MigrationRequest] = []
    private var lines: [String] = []
    private var paused: Bool
    private var migration = MigrationProgress(phase: .none)

    init(directory: String, failSnapshot: Bool, migration: MigrationScript = .succeed, paused: Bool = false) {
        self.directory = directory
        self.failSnapshot = failSnapshot
        self.migrationScript = migration
        self.paused = paused
        FakeIncoming.register(directory)
    }

    var snapshotRequests: [SnapshotRequest] { lock.lock(); defer { lock.unlock() }; return snapshots }
    var migrationRequests: [MigrationRequest] { lock.lock(); defer { lock.unlock() }; return migrations }
    /// "PUT /vm/pause", ... in the order they came.
    var requests: [String] { lock.lock(); defer { lock.unlock() }; return lines }

    /// What the fake VMM reports as the downtime of a completed migration.
    static let downtime = 12.5

    /// What `GET /vm/snapshot/progress` reports.
    static let progress = SnapshotProgress(phase: .writing, path: "/saves/vm1.save", ramBytesDone: 1 << 30, ramBytesTotal: 4 << 30)

    /// The disk counters `GET /vm/stats` reports.
    static let disk = DeviceStatistics.Disk(path: "/images/a.img", readRequests: 3, readBytes: 1536, writeRequests: 2,
                                            writeBytes: 1024, flushRequests: 1, errors: 0)

    func answer(_ request: ScriptedRequest) -> String {
        // A VMM that is not up has no socket: the caller sees the connection fail.
        guard FileManager.default.fileExists(atPath: directory + "/fake-alive") else { return "" }
        lock.lock(); lines.append(request.line); let paused = self.paused; lock.unlock()
        switch (request.method, request.path) {
        case (ControlRoute.info.method, ControlRoute.info.path):
            return json(200, VMInfo(state: paused ? "paused" : "running", vcpus: 1, memoryBytes: 32 << 20, boot: "fake", cmdline: "",
                                    hostProfile: "native", outcome: nil, powerButtonEnabled: false, powerButtonPending: false,
                                    restoredFrom: nil))
        case (ControlRoute.stats.method, ControlRoute.stats.path):
            return json(200, VMContract.VMStats(exits: 1, exitReasons: [], cpuUserSeconds: 0, cpuSystemSeconds: 0, rssBytes: 0,
                                     devices: DeviceStatistics(disks: [Self.disk])))
        case (ControlRoute.pause.method, ControlRoute.pause.path), (ControlRoute.resume.method, ControlRoute.resume.path):
            lock.lock(); self.paused = request.path == ControlRoute.pause.path; lock.unlock()
            return ScriptedControlSocket.http(204, "")
        case (ControlRoute.migrate.method, ControlRoute.migrate.path):
            return startMigration(request.body)
        case (ControlRoute.migration.method, ControlRoute.migration.path):
            return json(200, migrationProgress)
        case (ControlRoute.migrateCancel.method, ControlRoute.migrateCancel.path):
            guard migrationProgress.isActive else { return json(409, ControlError(error: "no migration is under way")) }
            return json(200, updateMigration { $0.phase = .cancelled; $0.error = "cancelled" })
        case (ControlRoute.shutdown.method, ControlRoute.shutdown.path):
            return json(202, PowerButtonResult(pressed: true, guestListening: false))
        case (ControlRoute.stop.method, ControlRoute.stop.path):
            exit(RunStatus(outcome: .stopped, detail: "stopped by the host", exitStatus: 0))
            return ScriptedControlSocket.http(204, "")
        case (ControlRoute.snapshot.method, ControlRoute.snapshot.path):
            guard let snapshot = try? ContractJSON.decode(SnapshotRequest.self, from: request.body) else {
                return json(400, ControlError(error: "expected {\"path\": \"FILE\", \"then\": \"keep\" or \"stop\"}"))
            }
            lock.lock(); snapshots.append(snapshot); lock.unlock()
            if failSnapshot { return json(500, ControlError(error: "snapshot failed: No space left on device")) }
            _ = FileManager.default.createFile(atPath: snapshot.path, contents: Data("fake snapshot".utf8))
            if snapshot.then == .stop { exit(RunStatus(outcome: .saved, detail: "saved to \(snapshot.path)", exitStatus: 0)) }
            return json(200, SnapshotResult(path: snapshot.path, bytes: 13, pausedMilliseconds: 1,
                                            state: snapshot.then == .stop ? "stopped" : "running"))
        case (ControlRoute.snapshotProgress.method, ControlRoute.snapshotProgress.path):
            return json(200, Self.progress)
        default:
            return json(404, ControlError(error: "no such resource: \(request.path)"))
        }
    }

    var migrationProgress: MigrationProgress { lock.lock(); defer { lock.unlock() }; return migration }

    @discardableResult
    private func updateMigration(_ change: (inout MigrationProgress) -> Void) -> MigrationProgress {
        lock.lock(); defer { lock.unlock() }
        change(&migration)
        return migration
    }

    /// PUT /vm/migrate: answers at once, then plays `migrationScript` on a thread of its own,
    /// telling the destination's fake VMM (found by the address) how it ends.
    private func startMigration(_ body: [UInt8]) -> String {
        guard let request = try? ContractJSON.decode(MigrationRequest.self, from: body) else {
            return json(400, ControlError(error: "expected {\"destination\": ...}"))
        }
        lock.lock(); migrations.append(request); lock.unlock()
        if migrationScript == .refuse { return json(400, ControlError(error: "cannot migrate a VM that is stopped")) }
        let started = updateMigration { $0 = MigrationProgress(phase: .setup, destination: request.destination, ramBytesTotal: 32 << 20) }
        let destination = FakeIncoming.directory(for: request.destination)
        Thread { [self] in playMigration(to: destination) }.start()
        return json(202, started)
    }

    private func playMigration(to destination: String?) {
        for round in 1...3 {
            usleep(100_000)
            guard migrationProgress.isActive else { break }
            updateMigration {
                $0.phase = .precopy; $0.rounds = round; $0.ramBytesTransferred = UInt64(round) << 20
                $0.ramBytesRemaining = 256 << 10; $0.bandwidthBytesPerSecond = 10_485_760; $0.dirtyPagesPerSecond = 64
                $0.expectedDowntimeMilliseconds = 25
            }
        }
        while migrationScript == .runUntilCancelled && migrationProgress.isActive { usleep(20_000) }
        guard migrationProgress.isActive else {
            // Cancelled: the destination's VMM sees the stream end.
            if let destination { _ = FileManager.default.createFile(atPath: destination + "/fake-failed", contents: nil) }
            return
        }
        if migrationScript == .fail {
            updateMigration { $0.phase = .failed; $0.error = "connection reset by peer" }
            if let destination { _ = FileManager.default.createFile(atPath: destination + "/fake-failed", contents: nil) }
            return
        }
        updateMigration { $0.phase = .stopAndCopy }
        usleep(150_000)
        guard let destination else {
            updateMigration { $0.phase = .failed; $0.error = "no fake destination listens on that address" }
            return
        }
        if case .loseTheAnswer(let runs) = migrationScript {
            lock.lock(); paused = true; lock.unlock()
            _ = FileManager.default.createFile(atPath: destination + (runs ? "/fake-arrived" : "/fake-failed"), contents: nil)
            if runs { for _ in 0..<200 where !FileManager.default.fileExists(atPath: destination + "/fake-alive") { usleep(10_000) } }
            updateMigration {
                $0.phase = .failed; $0.downtimeMilliseconds = 40
                $0.error = "the migration connection closed after the whole VM was sent: it may be running on the destination; it stays paused here"
            }
            return
        }
        _ = FileManager.default.createFile(atPath: destination + "/fake-arrived", contents: nil)
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: destination + "/fake-alive") { usleep(10_000) }
        updateMigration {
            $0.phase = .completed; $0.ramBytesRemaining = 0; $0.downtimeMilliseconds = Self.downtime; $0.elapsedMilliseconds = 600
        }
        // As the VMM: it stops once the destination runs the guest (after the daemon has read the end).
        usleep(300_000)
        exit(RunStatus(outcome: .migrated, detail: "migrated to \(migrationProgress.destination ?? "")", exitStatus: 0))
    }

    /// As the VMM ends: the status file first, then the process goes.
    private func exit(_ status: RunStatus) {
        try? status.write(to: directory + "/status.json")
        _ = FileManager.default.createFile(atPath: directory + "/fake-exit", contents: nil)
    }

    private func json(_ status: Int, _ value: some Encodable) -> String {
        ScriptedControlSocket.http(status, String(decoding: (try? ContractJSON.encode(value)) ?? [], as: UTF8.self))
    }
}

/// Where the fake VMMs waiting for a migration are: a Unix address names the VM's directory; a
/// TCP one is matched by port against what each fake `vireo run --incoming` wrote it listens on.
enum FakeIncoming {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var directories: [String] = []

    static func register(_ directory: String) {
        lock.lock(); defer { lock.unlock() }
        directories.append(directory)
    }

    static func directory(for address: String) -> String? {
        if address.hasPrefix("unix:") {
            return URL(fileURLWithPath: String(address.dropFirst("unix:".count))).deletingLastPathComponent().path
        }
        guard let port = address.split(separator: ":").last else { return nil }
        lock.lock(); defer { lock.unlock() }
        return directories.last { directory in
            readSmallFile(directory + "/fake-incoming")?.trimmingCharacters(in: .whitespacesAndNewlines).hasSuffix(":" + port) == true
        }
    }
}
