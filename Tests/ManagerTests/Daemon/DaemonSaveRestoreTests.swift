import VMContract
import Foundation
import Testing
@testable import Manager

/// virsh save and restore through the daemon's REST API, against fake VMMs (FakeVMMDaemon): the
/// state transitions and reasons, the saved-image bookkeeping, the launch spec of a restore, and
/// every refusal. The same with a real guest is in DaemonVMTests.
@Suite struct DaemonSaveRestoreTests {
    @Test func saveStopsTheVMAndRestoreResumesItFromTheFile() throws {
        let fake = try FakeVMMDaemon()
        let events = EventRecorder(client: fake.client)
        let control = try fake.define("vm1", extraYAML: "disks:\n  - source: /images/a.img\n    target: vda\n")
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.launchSpec("vm1").restore == nil)

        // The CLI sends an absolute path; the daemon records where the file really is.
        let saves = fake.server.directory + "/saves"
        try FileManager.default.createDirectory(atPath: saves, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: fake.server.directory + "/link", withDestinationPath: saves)
        let given = fake.server.directory + "/link/../saves/./vm1.save"
        let image = try #require(canonicalPath(saves)) + "/vm1.save"
        let save = try fake.post("/v1/vms/vm1/save", SnapshotFileBody(path: given))
        #expect(save.status == 200, "\(save.text)")
        #expect(try decodeJSON(ActionResult.self, save) == ActionResult(message: "Domain 'vm1' saved to \(given)", state: "shutoff", reason: "saved"))
        #expect(control.snapshotRequests == [SnapshotRequest(path: image, then: .stop)])
        #expect(try fake.state("vm1") == VMStateBody(state: "shutoff", reason: "saved"))
        #expect(try fake.store.savedImage(name: "vm1") == image)
        #expect(try fake.store.processIdentity(name: "vm1") == nil)
        #expect(try decodeJSON(VMSummary.self, try fake.client.request("GET", "/v1/vms/vm1")).id == nil)

        // Named through a symbolic link, the file is still the one vm1 was saved to.
        try FileManager.default.createSymbolicLink(atPath: fake.server.directory + "/latest", withDestinationPath: image)
        let restore = try fake.post("/v1/restore", SnapshotFileBody(path: fake.server.directory + "/latest"))
        #expect(restore.status == 200, "\(restore.text)")
        #expect(try decodeJSON(ActionResult.self, restore) == ActionResult(message: "Domain 'vm1' restored from \(image)", state: "running", reason: "restored"))
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "restored"))
        let spec = try fake.launchSpec("vm1")
        #expect(spec.restore == RestoreSource(path: image, memory: .mapped))
        #expect(spec.kernel == nil)
        #expect(spec.devices.disks.map(\.path) == ["/images/a.img"])
        #expect(spec.apiSocket == fake.vmDirectory("vm1") + "/control.sock")

        let again = try fake.post("/v1/restore", SnapshotFileBody(path: image))
        #expect(again.status == 409)
        #expect(again.errorMessage == "domain 'vm1' is already active")

        // A plain start boots the definition afresh; the saved image stays for a later restore.
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.launchSpec("vm1").restore == nil && fake.launchSpec("vm1").kernel == "/fake/vmlinux")
        #expect(try fake.store.savedImage(name: "vm1") == image)
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)

        #expect(events.kinds(until: "stopped", count: 3, withReasons: true) ==
                ["defined", "started:booted", "stopped:saved", "started:restored", "stopped:destroyed",
                 "started:booted", "stopped:destroyed"])
    }

    @Test func aPausedVMCanBeSavedAndTheLatestSaveToAFileOwnsIt() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("a")
        try fake.define("b")
        let file = fake.server.directory + "/shared.save"
        #expect(try fake.post("/v1/vms/a/start").status == 200)
        #expect(try fake.post("/v1/vms/a/suspend").status == 200)
        #expect(try fake.post("/v1/vms/a/save", SnapshotFileBody(path: file)).status == 200)
        #expect(try fake.state("a") == VMStateBody(state: "shutoff", reason: "saved"))
        #expect(try fake.post("/v1/vms/b/start").status == 200)
        #expect(try fake.post("/v1/vms/b/save", SnapshotFileBody(path: file)).status == 200)
        // The file now holds b: a has no saved image any more, and restore brings back b.
        #expect(try fake.store.savedImage(name: "a") == nil)
        let restore = try fake.post("/v1/restore", SnapshotFileBody(path: file))
        #expect(try decodeJSON(ActionResult.self, restore).message.hasPrefix("Domain 'b' restored from "))
        #expect(try fake.state("a").state == "shutoff")
        #expect(try fake.post("/v1/vms/b/destroy").status == 200)
    }

    /// `vireo save`'s progress line reads the VMM's snapshot progress through the daemon, outside
    /// the VM's queue (which the save itself holds).
    @Test func saveProgressIsTheVMMsOwn() throws {
        let fake = try FakeVMMDaemon()
        _ = try fake.define("vm1")
        let idle = try fake.client.request("GET", "/v1/vms/vm1/save/progress")
        #expect(idle.status == 409)
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        let running = try fake.client.request("GET", "/v1/vms/vm1/save/progress")
        #expect(running.status == 200)
        #expect(try ContractJSON.decode(SnapshotProgress.self, from: running.body) == FakeControl.progress)
        #expect(try fake.client.request("GET", "/v1/vms/nope/save/progress").status == 404)
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)
    }

    @Test func restoreNeedsAFileADefinedVMWasSavedTo() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("vm1")
        let stranger = fake.server.directory + "/stranger.save"
        #expect(FileManager.default.createFile(atPath: stranger, contents: Data("x".utf8)))
        let unknown = try fake.post("/v1/restore", SnapshotFileBody(path: stranger))
        #expect(unknown.status == 404)
        #expect(unknown.errorMessage == "no defined domain was saved to \(stranger)")
        let missing = try fake.post("/v1/restore", SnapshotFileBody(path: fake.server.directory + "/none.save"))
        #expect(missing.status == 404)
        #expect(missing.errorMessage == "cannot restore from \(fake.server.directory)/none.save: No such file or directory")
        let relative = try fake.post("/v1/restore", SnapshotFileBody(path: "vm1.save"))
        #expect(relative.status == 400)
        #expect(relative.errorMessage == "path: 'vm1.save' is not an absolute path")
        #expect(try fake.client.request("POST", "/v1/restore", body: Array("{}".utf8)).status == 400)
        #expect(try fake.state("vm1") == VMStateBody(state: "shutoff", reason: "unknown"))

        // An undefined VM's saved image goes with it.
        try fake.define("gone")
        #expect(try fake.post("/v1/vms/gone/start").status == 200)
        let file = fake.server.directory + "/gone.save"
        #expect(try fake.post("/v1/vms/gone/save", SnapshotFileBody(path: file)).status == 200)
        #expect(try fake.client.request("DELETE", "/v1/vms/gone").status == 200)
        #expect(try fake.post("/v1/restore", SnapshotFileBody(path: file)).errorMessage == "no defined domain was saved to \(file)")
    }

    @Test func saveIsRefusedUnlessTheVMRunsAndThePathIsAFileInADirectory() throws {
        let fake = try FakeVMMDaemon()
        let control = try fake.define("vm1")
        let file = fake.server.directory + "/vm1.save"
        let idle = try fake.post("/v1/vms/vm1/save", SnapshotFileBody(path: file))
        #expect(idle.status == 409 && idle.errorMessage == "domain 'vm1' is not running")
        let nobody = try fake.post("/v1/vms/nosuch/save", SnapshotFileBody(path: file))
        #expect(nobody.status == 404 && nobody.errorMessage == "no VM named 'nosuch'")
        #expect(try fake.post("/v1/vms/vm1/save", SnapshotFileBody(path: "vm1.save")).status == 400)
        #expect(try fake.client.request("POST", "/v1/vms/vm1/save", body: Array("not json".utf8)).status == 400)

        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        let noDirectory = try fake.post("/v1/vms/vm1/save", SnapshotFileBody(path: fake.server.directory + "/missing/vm1.save"))
        #expect(noDirectory.status == 400)
        #expect(noDirectory.errorMessage == "cannot save to \(fake.server.directory)/missing/vm1.save: directory \(fake.server.directory)/missing: No such file or directory")
        #expect(try fake.post("/v1/vms/vm1/save", SnapshotFileBody(path: fake.server.directory + "/..")).status == 400)
        #expect(control.snapshotRequests.isEmpty)
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)
    }

    @Test func aSnapshotTheVMMFailsToWriteLeavesTheVMRunning() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("full", failSnapshot: true)
        #expect(try fake.post("/v1/vms/full/start").status == 200)
        let save = try fake.post("/v1/vms/full/save", SnapshotFileBody(path: fake.server.directory + "/full.save"))
        #expect(save.status == 500)
        #expect(save.errorMessage == "domain 'full': save failed: snapshot failed: No space left on device")
        #expect(try fake.state("full") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.store.savedImage(name: "full") == nil)
        let controller = try fake.server.daemon.controller("full")
        #expect(controller.process?.intent == StopIntent.none)
        // Its later end is recorded as what it is, not as a save.
        #expect(try fake.post("/v1/vms/full/destroy").status == 200)
        #expect(try fake.state("full") == VMStateBody(state: "shutoff", reason: "destroyed"))
    }

    @Test func aSnapshotTheVMMCannotResumeReportsTheVMMsError() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("vm1")
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        // The fake VMM refuses to resume any file whose path says "corrupt".
        let file = fake.server.directory + "/corrupt.save"
        #expect(try fake.post("/v1/vms/vm1/save", SnapshotFileBody(path: file)).status == 200)
        let restore = try fake.post("/v1/restore", SnapshotFileBody(path: file))
        #expect(restore.status == 500)
        #expect(restore.errorMessage == "failed to restore domain 'vm1' from \(file): vireo: cannot restore the snapshot: not a Vireo snapshot (bad magic)")
        #expect(fake.waitForState("vm1", "shutoff"))
        #expect(try fake.state("vm1").reason == "failed")
        // The file is still vm1's: the definition can be fixed and the restore tried again.
        #expect(try fake.store.savedImage(name: "vm1") == file)
    }

    /// Stats and the power button's answer are read as VMContract types, not by string keys.
    @Test func controlAnswersAreReadAsContractTypes() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("vm1", extraYAML: "disks:\n  - source: /images/a.img\n    target: vdb\n")
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        let stats = try decodeJSON(Manager.VMStats.self, try fake.client.request("GET", "/v1/vms/vm1/stats"))
        let disk = FakeControl.disk
        #expect(stats.block == [DeviceCounters(name: "vdb", path: disk.path, counters: [
            "rd.reqs": disk.readRequests, "rd.bytes": disk.readBytes, "wr.reqs": disk.writeRequests,
            "wr.bytes": disk.writeBytes, "fl.reqs": disk.flushRequests, "errs": disk.errors])])
        let shutdown = try decodeJSON(ActionResult.self, try fake.post("/v1/vms/vm1/shutdown"))
        #expect(shutdown.message.contains("has not enabled ACPI power-button events"))
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)
    }
}

extension FakeVMMDaemon {
    func waitForState(_ name: String, _ state: String, seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? self.state(name))?.state == state { return true }
            usleep(20_000)
        }
        return false
    }
}
