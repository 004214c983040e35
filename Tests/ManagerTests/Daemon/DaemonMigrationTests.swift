import VMContract
import Foundation
import Testing
@testable import Manager

/// virsh migrate between two daemons in this process, with fake VMMs (FakeVMMDaemon): the states
/// and reasons on both sides, the definition moving with the VM, the events, every refusal, and
/// what a failure or cancel leaves (the VM running here, nothing there). The same with two real
/// daemon processes and a real guest is in VireoCLITests (ManageCommandTests).
@Suite struct DaemonMigrationTests {
    @Test func aMigratedVMRunsOnTheDestinationWithItsDefinitionAndCanComeBack() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let sourceEvents = EventRecorder(client: source.client), destinationEvents = EventRecorder(client: destination.client)
        let control = try source.define("vm1", extraYAML: "vcpus: 2\ndisks:\n  - source: /images/a.img\n    target: vda\n")
        let arriving = try destination.serve("vm1")
        #expect(try source.post("/v1/vms/vm1/start").status == 200)

        let started = try source.migrate("vm1", to: destination)
        #expect(started.status == 202, "\(started.text)")
        #expect(try decodeJSON(MigrationProgress.self, started).phase == .setup)
        let done = try source.waitForMigrationEnd("vm1")
        #expect(done.phase == .completed, "\(done)")
        #expect(done.error == nil)
        #expect(done.downtimeMilliseconds == FakeControl.downtime)
        #expect(done.rounds == 3)
        #expect(done.destination == "unix://" + destination.socket)

        #expect(try source.state("vm1") == VMStateBody(state: "shutoff", reason: "migrated"))
        #expect(try destination.state("vm1") == VMStateBody(state: "running", reason: "migrated"))
        #expect(try source.store.processIdentity(name: "vm1") == nil)
        #expect(try destination.store.processIdentity(name: "vm1") != nil)
        // The definition moved with the VM: same uuid, same devices.
        let here = try source.store.record(named: "vm1"), there = try destination.store.record(named: "vm1")
        #expect(there.uuid == here.uuid)
        #expect(there.definition == here.definition)
        // Same host: the destination's VMM listens on a socket in its state dir, and the source's
        // VMM was sent there with the default downtime target.
        let address = "unix:" + destination.vmDirectory("vm1") + "/migration.sock"
        #expect(control.migrationRequests == [MigrationRequest(destination: address)])
        let spec = try destination.launchSpec("vm1")
        #expect(spec.incoming == address)
        #expect(spec.kernel == nil && spec.cpus == 2)
        #expect(spec.devices.disks.map(\.path) == ["/images/a.img"])
        #expect(spec.apiSocket == destination.vmDirectory("vm1") + "/control.sock")

        // The stop for the switch-over shows as suspended (migrating) when it is seen in time.
        #expect(sourceEvents.kinds(until: "stopped", withReasons: true).filter { $0 != "suspended:migrating" }
                == ["defined", "started:booted", "stopped:migrated"])
        #expect(destinationEvents.kinds(until: "resumed", withReasons: true) == ["defined", "started:migrating", "resumed:migrated"])

        // And back: the source still has it (same uuid, shut off), so it takes it again.
        let back = try destination.migrate("vm1", to: source)
        #expect(back.status == 202, "\(back.text)")
        #expect(try destination.waitForMigrationEnd("vm1").phase == .completed)
        #expect(try source.state("vm1") == VMStateBody(state: "running", reason: "migrated"))
        #expect(try destination.state("vm1") == VMStateBody(state: "shutoff", reason: "migrated"))
        #expect(arriving.migrationRequests == [MigrationRequest(destination: "unix:" + source.vmDirectory("vm1") + "/migration.sock")])
        #expect(try source.post("/v1/vms/vm1/destroy").status == 200)
    }

    @Test func theDestinationRefusesANameOrUUIDItHasBeforeAnythingStarts() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let control = try source.define("vm1")
        #expect(try source.post("/v1/vms/vm1/start").status == 200)
        try destination.define("vm1")
        let theirs = try destination.store.record(named: "vm1")

        let refused = try source.migrate("vm1", to: destination)
        #expect(refused.status == 409)
        #expect(refused.errorMessage == "the destination refused domain 'vm1': a different domain named 'vm1' already exists here (uuid \(theirs.uuid.uuidString.lowercased()))")
        #expect(control.migrationRequests.isEmpty)
        #expect(try source.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try destination.store.record(named: "vm1") == theirs)
        #expect(try destination.state("vm1") == VMStateBody(state: "shutoff", reason: "unknown"))
        #expect(!FileManager.default.fileExists(atPath: destination.vmDirectory("vm1") + "/launch.json"))
        let job = try source.migration("vm1")
        #expect(job.phase == .failed && job.error == refused.errorMessage)

        // Its uuid under another name is refused as define refuses it.
        let other = try FakeVMMDaemon()
        let uuid = try source.store.record(named: "vm1").uuid.uuidString.lowercased()
        try other.define("twin", extraYAML: "uuid: \(uuid)\n")
        let twin = try source.migrate("vm1", to: other)
        #expect(twin.status == 409)
        #expect(twin.errorMessage == "the destination refused domain 'vm1': uuid \(uuid) is already defined as VM 'twin'")
        #expect(try other.client.request("GET", "/v1/vms/vm1").status == 404)

        // A destination that is not there, not a daemon URI, or this very daemon.
        let nowhere = try source.migrate("vm1", MigrateBody(destination: "unix://" + source.server.directory + "/none.sock", live: true))
        #expect(nowhere.status == 502)
        #expect(nowhere.errorMessage == "cannot reach the destination daemon: cannot connect to unix://\(source.server.directory)/none.sock: No such file or directory")
        let ftp = try source.migrate("vm1", MigrateBody(destination: "ftp://host", live: true))
        #expect(ftp.status == 400 && ftp.errorMessage == "destination: 'ftp://host' is not unix:///path/to/daemon.sock or http://host:port")
        let itself = try source.migrate("vm1", to: source)
        #expect(itself.status == 400 && itself.errorMessage == "destination: unix://\(source.socket) is this daemon")
        let slow = try source.migrate("vm1", MigrateBody(destination: "unix://" + destination.socket, live: true, maxDowntimeMilliseconds: 0))
        #expect(slow.status == 400 && slow.errorMessage == "max_downtime_ms must be in (0, 600000]")
        #expect(try source.client.request("POST", "/v1/vms/vm1/migrate", body: Array("{}".utf8)).status == 400)
        #expect(try source.migrate("nosuch", to: destination).status == 404)
        try source.define("idle")
        let idle = try source.migrate("idle", to: destination)
        #expect(idle.status == 409 && idle.errorMessage == "domain 'idle' is not running")
        #expect(control.migrationRequests.isEmpty)
        #expect(try source.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try source.post("/v1/vms/vm1/destroy").status == 200)
    }

    @Test func aMigrationTheVMMFailsLeavesTheVMRunningHereAndNothingThere() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let events = EventRecorder(client: destination.client)
        try source.define("vm1", migration: .fail)
        try destination.serve("vm1")
        #expect(try source.post("/v1/vms/vm1/start").status == 200)
        #expect(try source.migrate("vm1", to: destination).status == 202)
        let done = try source.waitForMigrationEnd("vm1")
        #expect(done.phase == .failed)
        #expect(done.error == "connection reset by peer")
        #expect(try source.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        // The destination's half-made VM is gone: process, definition and directory.
        #expect(destination.waitUntilGone("vm1"))
        #expect(!FileManager.default.fileExists(atPath: destination.vmDirectory("vm1")))
        #expect(events.kinds(until: "undefined", withReasons: true) == ["defined", "started:migrating", "stopped:failed", "undefined"])

        // A VMM that refuses at once: the destination is told to give up before this answers.
        try source.define("vm2", migration: .refuse)
        try destination.serve("vm2")
        #expect(try source.post("/v1/vms/vm2/start").status == 200)
        let refused = try source.migrate("vm2", to: destination)
        #expect(refused.status == 502)
        #expect(refused.errorMessage == "domain 'vm2': the VMM refused the migration: cannot migrate a VM that is stopped")
        #expect(try destination.client.request("GET", "/v1/vms/vm2").status == 404)
        #expect(try source.state("vm2") == VMStateBody(state: "running", reason: "booted"))
        #expect(try source.migration("vm2").phase == .failed)
        #expect(try source.post("/v1/vms/vm1/destroy").status == 200)
        #expect(try source.post("/v1/vms/vm2/destroy").status == 200)
    }

    @Test func cancelEndsTheMigrationAndTheVMStaysHere() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let control = try source.define("vm1", migration: .runUntilCancelled)
        try destination.serve("vm1")
        #expect(try source.post("/v1/vms/vm1/start").status == 200)
        let idle = try source.post("/v1/vms/vm1/migrate/cancel")
        #expect(idle.status == 409 && idle.errorMessage == "no migration of domain 'vm1' is under way")

        #expect(try source.migrate("vm1", to: destination).status == 202)
        #expect(source.waitForMigrationPhase("vm1", .precopy))
        // Meanwhile only destroy goes ahead, on both sides.
        let busy = "domain 'vm1' is being migrated to unix://\(destination.socket); cancel it first with 'vireo migrate --cancel vm1'"
        #expect(try source.post("/v1/vms/vm1/suspend").errorMessage == busy)
        #expect(try source.migrate("vm1", to: destination).errorMessage == busy)
        #expect(try source.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try destination.state("vm1") == VMStateBody(state: "paused", reason: "migrating"))
        let arriving = try destination.post("/v1/vms/vm1/start")
        #expect(arriving.status == 409)
        #expect(arriving.errorMessage == "domain 'vm1' is arriving by migration and does not run here yet (destroy aborts the migration)")

        let cancel = try source.post("/v1/vms/vm1/migrate/cancel")
        #expect(cancel.status == 200, "\(cancel.text)")
        let cancelled = try decodeJSON(MigrationProgress.self, cancel)
        #expect(cancelled.phase == .cancelled && cancelled.error == "cancelled")
        #expect(control.requests.contains("PUT /vm/migrate/cancel"))
        #expect(try source.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(destination.waitUntilGone("vm1"))
        #expect(try source.post("/v1/vms/vm1/suspend").status == 200)
        #expect(try source.post("/v1/vms/vm1/destroy").status == 200)
    }

    /// Everything was sent but the destination's answer was lost (the VMM holds the guest paused):
    /// the destination daemon says whether it runs the guest, and only one side ever does.
    @Test func aLostAnswerIsSettledByAskingTheDestinationDaemon() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let control = try source.define("there", migration: .loseTheAnswer(destinationRuns: true))
        try destination.serve("there")
        #expect(try source.post("/v1/vms/there/start").status == 200)
        #expect(try source.migrate("there", to: destination).status == 202)
        let arrived = try source.waitForMigrationEnd("there")
        #expect(arrived.phase == .completed, "\(arrived)")
        #expect(control.requests.contains("PUT /vm/stop"))
        #expect(try source.state("there") == VMStateBody(state: "shutoff", reason: "migrated"))
        #expect(try destination.state("there") == VMStateBody(state: "running", reason: "migrated"))

        let kept = try source.define("here", migration: .loseTheAnswer(destinationRuns: false))
        try destination.serve("here")
        #expect(try source.post("/v1/vms/here/start").status == 200)
        #expect(try source.migrate("here", to: destination).status == 202)
        let failed = try source.waitForMigrationEnd("here")
        #expect(failed.phase == .failed)
        #expect(kept.requests.contains("PUT /vm/resume"))
        #expect(try source.state("here") == VMStateBody(state: "running", reason: "booted"))
        #expect(try destination.client.request("GET", "/v1/vms/here").status == 404)
        #expect(try source.post("/v1/vms/here/destroy").status == 200)
        #expect(try destination.post("/v1/vms/there/destroy").status == 200)
    }

    /// Without live, the source daemon pauses the guest first (paused (migrating)) and the
    /// destination resumes it on arrival; a guest its user had paused arrives and stays paused.
    @Test func aNonLiveMigrationPausesFirstAndTheDestinationResumes() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let events = EventRecorder(client: source.client)
        let control = try source.define("vm1")
        let arriving = try destination.serve("vm1", arrivesPaused: true)
        #expect(try source.post("/v1/vms/vm1/start").status == 200)
        #expect(try source.migrate("vm1", to: destination, live: false).status == 202)
        #expect(try source.state("vm1") == VMStateBody(state: "paused", reason: "migrating"))
        #expect(try source.waitForMigrationEnd("vm1").phase == .completed)
        let requests = control.requests
        #expect((requests.firstIndex(of: "PUT /vm/pause") ?? .max) < (requests.firstIndex(of: "PUT /vm/migrate") ?? -1), "\(requests)")
        #expect(arriving.requests.contains("PUT /vm/resume"))
        #expect(try destination.state("vm1") == VMStateBody(state: "running", reason: "migrated"))
        #expect(try source.state("vm1") == VMStateBody(state: "shutoff", reason: "migrated"))
        #expect(events.kinds(until: "stopped", withReasons: true) == ["defined", "started:booted", "suspended:migrating", "stopped:migrated"])

        try source.define("vm2")
        let paused = try destination.serve("vm2", arrivesPaused: true)
        #expect(try source.post("/v1/vms/vm2/start").status == 200)
        #expect(try source.post("/v1/vms/vm2/suspend").status == 200)
        #expect(try source.migrate("vm2", to: destination, live: true).status == 202)
        #expect(try source.waitForMigrationEnd("vm2").phase == .completed)
        #expect(try destination.state("vm2") == VMStateBody(state: "paused", reason: "user"))
        #expect(!paused.requests.contains("PUT /vm/resume"))
        #expect(try destination.post("/v1/vms/vm1/destroy").status == 200)
        #expect(try destination.post("/v1/vms/vm2/destroy").status == 200)
    }

    /// Over TCP the destination's token is needed, its VMM listens on a TCP port, and the source's
    /// VMM connects to the host the destination daemon was reached at.
    @Test func overTCPTheTokenIsCheckedAndTheVMMGoesToTheDestinationsHost() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        let control = try source.define("vm1")
        try destination.serve("vm1")
        #expect(try source.post("/v1/vms/vm1/start").status == 200)
        let url = "http://127.0.0.1:\(destination.server.daemon.tcpPort ?? 0)"

        let wrong = try source.migrate("vm1", MigrateBody(destination: url, destinationToken: "not-the-token-0123456789", live: true))
        #expect(wrong.status == 502)
        #expect(wrong.errorMessage == "the destination refused domain 'vm1': missing or wrong bearer token")
        #expect(try destination.client.request("GET", "/v1/vms/vm1").status == 404)

        let right = try source.migrate("vm1", MigrateBody(destination: url, destinationToken: InProcessDaemon.token, live: true,
                                                          maxDowntimeMilliseconds: 20, bandwidthMiBps: 100, undefineSource: true))
        #expect(right.status == 202, "\(right.text)")
        #expect(try source.waitForMigrationEnd("vm1").phase == .completed)
        #expect(try destination.launchSpec("vm1").incoming == "tcp:0.0.0.0:0")
        #expect(control.migrationRequests == [MigrationRequest(destination: "tcp:127.0.0.1:45678", maxDowntimeMilliseconds: 20, bandwidthMiBps: 100)])
        #expect(try destination.state("vm1") == VMStateBody(state: "running", reason: "migrated"))
        // --undefine-source: the VM is gone here, its last migration still readable.
        #expect(try source.client.request("GET", "/v1/vms/vm1").status == 404)
        #expect(try source.migration("vm1").phase == .completed)
        #expect(try destination.post("/v1/vms/vm1/destroy").status == 200)
    }

    /// A VM migrated away keeps its definition here, autostart flag included; the daemon's next
    /// start must not boot a second copy of a guest that runs elsewhere.
    @Test func aVMMigratedAwayIsNotAutostartedHere() throws {
        let source = try FakeVMMDaemon(), destination = try FakeVMMDaemon()
        try source.define("vm1", extraYAML: "autostart: true\n")
        try destination.serve("vm1")
        #expect(try source.post("/v1/vms/vm1/start").status == 200)
        #expect(try source.migrate("vm1", to: destination).status == 202)
        #expect(try source.waitForMigrationEnd("vm1").phase == .completed)
        #expect(try destination.store.record(named: "vm1").autostart)

        source.server.daemon.stop()
        let log = LockedEvents()
        let restarted = try Daemon(configuration: DaemonConfiguration(stateDirectory: source.stateDirectory,
                                                                      socketPath: source.server.directory + "/again.sock",
                                                                      executable: "/nonexistent/vireo"),
                                   log: { log.append($0 + "\n") })
        try restarted.start()
        defer { restarted.stop() }
        usleep(300_000)
        #expect(log.text.contains("VM 'vm1' was migrated to another daemon; not autostarted"), "\(log.text)")
        #expect(!log.text.contains("autostart of VM 'vm1'"))
        #expect(try restarted.store.state(named: "vm1").state == .shutoff)
        #expect(try destination.post("/v1/vms/vm1/destroy").status == 200)
    }

    @Test func theDaemonAndTheVMMAgreeOnWhereAndHowAMigrationEnds() throws {
        // A wildcard host is the host the destination daemon was reached at.
        let answer = { (address: String) in IncomingMigrationAnswer(name: "vm1", address: address) }
        #expect(answer("tcp:0.0.0.0:4444").connectAddress(reachedVia: .tcp(host: "10.0.0.2", port: 8450)) == "tcp:10.0.0.2:4444")
        #expect(answer("tcp:[::]:4444").connectAddress(reachedVia: .tcp(host: "fd00::2", port: 8450)) == "tcp:[fd00::2]:4444")
        #expect(answer("tcp:10.1.1.1:4444").connectAddress(reachedVia: .tcp(host: "10.0.0.2", port: 8450)) == "tcp:10.1.1.1:4444")
        #expect(answer("unix:/s/vms/vm1/migration.sock").connectAddress(reachedVia: .unix(path: "/run/b.sock")) == "unix:/s/vms/vm1/migration.sock")
        #expect(Endpoint(daemonURI: "unix:///run/b.sock") == .unix(path: "/run/b.sock"))
        #expect(Endpoint(daemonURI: "http://[fd00::2]:8450/") == .tcp(host: "fd00::2", port: 8450))
        #expect(Endpoint(daemonURI: "unix://relative.sock") == nil && Endpoint(daemonURI: "http://host") == nil)

        // Where `vireo run --incoming` listens, read from its log after the launch's offset.
        let log = NSTemporaryDirectory() + "vireo-incoming-\(UUID().uuidString).log"
        defer { unlink(log) }
        try "vireo: waiting for a migration on tcp:0.0.0.0:1\r\n".write(toFile: log, atomically: true, encoding: .utf8)
        let offset = fileSize(log)
        #expect(VMController.listeningAddress(in: log, from: offset) == nil)
        let handle = try #require(FileHandle(forWritingAtPath: log))
        handle.seekToEndOfFile()
        handle.write(Data("vireo: waiting for a migration on tcp:0.0.0.0:3".utf8))
        #expect(VMController.listeningAddress(in: log, from: offset) == nil)
        handle.write(Data("9181\r\n".utf8))
        try handle.close()
        #expect(VMController.listeningAddress(in: log, from: offset) == "tcp:0.0.0.0:39181")

        // Once the VMM said the destination runs the guest, any end of the process is a migration.
        #expect(ExitClassifier.reason(intent: .migrated, status: nil, waitStatus: 9) == .migrated)
        #expect(ExitClassifier.reason(intent: .none, status: RunStatus(outcome: .migrated, detail: "", exitStatus: 0), waitStatus: 0) == .migrated)
    }
}

extension FakeVMMDaemon {
    var socket: String { server.directory + "/api.sock" }

    func migrate(_ name: String, to destination: FakeVMMDaemon, live: Bool = true) throws -> HTTPResponse {
        try migrate(name, MigrateBody(destination: "unix://" + destination.socket, live: live))
    }

    func migrate(_ name: String, _ body: MigrateBody) throws -> HTTPResponse {
        try client.request("POST", "/v1/vms/\(name)/migrate", body: Array(try JSONEncoder().encode(body)))
    }

    func migration(_ name: String) throws -> MigrationProgress {
        try decodeJSON(MigrationProgress.self, try client.request("GET", "/v1/vms/\(name)/migration"))
    }

    func waitForMigrationEnd(_ name: String, seconds: Double = 15) throws -> MigrationProgress {
        let deadline = Date().addingTimeInterval(seconds)
        var progress = try migration(name)
        while progress.isActive && Date() < deadline {
            usleep(20_000)
            progress = try migration(name)
        }
        return progress
    }

    func waitForMigrationPhase(_ name: String, _ phase: MigrationProgress.Phase, seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? migration(name))?.phase == phase { return true }
            usleep(20_000)
        }
        return false
    }

    /// Until the VM is no longer defined here.
    func waitUntilGone(_ name: String, seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? client.request("GET", "/v1/vms/\(name)"))?.status == 404 { return true }
            usleep(20_000)
        }
        return false
    }
}
