import VMContract
import Foundation
import Testing
@testable import Manager

/// virsh managedsave through the daemon's REST API, against fake VMMs (FakeVMMDaemon): the save
/// goes into the VM's own directory, the next start resumes it and removes it, `force_boot` and
/// managedsave-remove discard it, undefine keeps it unless asked. The same with a real guest is
/// in DaemonVMTests.
@Suite struct DaemonManagedSaveTests {
    @Test func theNextStartResumesAManagedSaveAndRemovesIt() throws {
        let fake = try FakeVMMDaemon()
        let events = EventRecorder(client: fake.client)
        let control = try fake.define("vm1")
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try summary(fake, "vm1").managedSave == false)

        let save = try fake.post("/v1/vms/vm1/managedsave")
        #expect(save.status == 200, "\(save.text)")
        #expect(try decodeJSON(ActionResult.self, save) == ActionResult(message: "Domain 'vm1' state saved by the daemon", state: "shutoff", reason: "saved"))
        let image = try #require(canonicalPath(fake.vmDirectory("vm1"))) + "/managed.save"
        #expect(control.snapshotRequests == [SnapshotRequest(path: image, then: .stop)])
        #expect(FileManager.default.fileExists(atPath: image))
        #expect(try fake.state("vm1") == VMStateBody(state: "shutoff", reason: "saved"))
        #expect(try summary(fake, "vm1").managedSave)

        // The saved state is the VM: undefine keeps it unless told to remove it.
        let undefine = try fake.client.request("DELETE", "/v1/vms/vm1")
        #expect(undefine.status == 409)
        #expect(undefine.errorMessage == "domain 'vm1' has a managed save image; 'vireo start vm1' resumes it, 'vireo undefine --managed-save vm1' removes it with the definition")

        let start = try fake.post("/v1/vms/vm1/start")
        #expect(start.status == 200, "\(start.text)")
        #expect(try decodeJSON(ActionResult.self, start) == ActionResult(message: "Domain 'vm1' started from its managed save image", state: "running", reason: "restored"))
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "restored"))
        #expect(try fake.launchSpec("vm1").restore == RestoreSource(path: image, memory: .mapped))
        #expect(try fake.launchSpec("vm1").kernel == nil)
        // Resumed once: the image is gone (the VMM holds it open), the next start boots afresh.
        #expect(!FileManager.default.fileExists(atPath: image))
        #expect(try fake.store.savedImage(name: "vm1") == nil)
        #expect(try summary(fake, "vm1").managedSave == false)
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.launchSpec("vm1").restore == nil)

        // A paused VM is saved too (the fake VMM, like the real one, resumes it paused).
        #expect(try fake.post("/v1/vms/vm1/suspend").status == 200)
        #expect(try fake.post("/v1/vms/vm1/managedsave").status == 200)
        #expect(try fake.state("vm1") == VMStateBody(state: "shutoff", reason: "saved"))
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.launchSpec("vm1").restore?.path == image)
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)

        #expect(events.kinds(until: "stopped", count: 4, withReasons: true) ==
                ["defined", "started:booted", "stopped:saved", "started:restored", "stopped:destroyed",
                 "started:booted", "suspended:user", "stopped:saved", "started:restored", "stopped:destroyed"])
    }

    @Test func forceBootRemoveAndUndefineDiscardTheImage() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("vm1")
        let image = { try #require(canonicalPath(fake.vmDirectory("vm1"))) + "/managed.save" }

        // start --force-boot boots the definition and discards the image.
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.post("/v1/vms/vm1/managedsave").status == 200)
        let forced = try fake.client.request("POST", "/v1/vms/vm1/start", body: Array(#"{"force_boot": true}"#.utf8))
        #expect(forced.status == 200, "\(forced.text)")
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.launchSpec("vm1").restore == nil)
        #expect(!FileManager.default.fileExists(atPath: try image()))
        #expect(try fake.store.savedImage(name: "vm1") == nil)

        // managedsave-remove, then again: nothing left to remove is not an error (as virsh).
        #expect(try fake.post("/v1/vms/vm1/managedsave").status == 200)
        let removed = try fake.client.request("DELETE", "/v1/vms/vm1/managedsave")
        #expect(removed.status == 200)
        #expect(try decodeJSON([String: String].self, removed) == ["message": "Removed managed save image for domain 'vm1'"])
        #expect(!FileManager.default.fileExists(atPath: try image()))
        let again = try fake.client.request("DELETE", "/v1/vms/vm1/managedsave")
        #expect(try decodeJSON([String: String].self, again) == ["message": "Domain 'vm1' has no managed save image; removal skipped"])
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.state("vm1").reason == "booted")

        // A save the user deleted by hand is no managed save: start boots.
        #expect(try fake.post("/v1/vms/vm1/managedsave").status == 200)
        #expect(unlink(try image()) == 0)
        #expect(try summary(fake, "vm1").managedSave == false)
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.state("vm1").reason == "booted")

        // undefine --managed-save takes the image with the definition.
        #expect(try fake.post("/v1/vms/vm1/managedsave").status == 200)
        #expect(try fake.client.request("DELETE", "/v1/vms/vm1?managed_save=maybe").status == 400)
        #expect(try fake.client.request("DELETE", "/v1/vms/vm1?managed_save=true").status == 200)
        #expect(!FileManager.default.fileExists(atPath: fake.vmDirectory("vm1")))
        #expect(try fake.client.request("GET", "/v1/vms/vm1").status == 404)
    }

    @Test func aManagedSaveThatCannotBeResumedIsKeptAndSaysHowToBootAfresh() throws {
        let fake = try FakeVMMDaemon()
        // The fake VMM refuses to resume any file whose path says "corrupt".
        try fake.define("corrupt1")
        #expect(try fake.post("/v1/vms/corrupt1/start").status == 200)
        #expect(try fake.post("/v1/vms/corrupt1/managedsave").status == 200)
        let image = try #require(canonicalPath(fake.vmDirectory("corrupt1"))) + "/managed.save"
        let start = try fake.post("/v1/vms/corrupt1/start")
        #expect(start.status == 500)
        #expect(start.errorMessage == "failed to restore domain 'corrupt1' from \(image): vireo: cannot restore the snapshot: not a Vireo snapshot (bad magic) (its managed save image is kept; 'vireo start --force-boot corrupt1' discards it and boots afresh)")
        #expect(fake.waitForState("corrupt1", "shutoff"))
        #expect(FileManager.default.fileExists(atPath: image))
        #expect(try summary(fake, "corrupt1").managedSave)
        #expect(try fake.client.request("POST", "/v1/vms/corrupt1/start", body: Array("{\"force_boot\": 1".utf8)).status == 400)
        #expect(try fake.client.request("POST", "/v1/vms/corrupt1/start", body: Array(#"{"force_boot": true}"#.utf8)).status == 200)
        #expect(try fake.state("corrupt1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.post("/v1/vms/corrupt1/destroy").status == 200)
    }

    @Test func managedSaveNeedsARunningVM() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("vm1", failSnapshot: true)
        let idle = try fake.post("/v1/vms/vm1/managedsave")
        #expect(idle.status == 409 && idle.errorMessage == "domain 'vm1' is not running")
        #expect(try fake.post("/v1/vms/nosuch/managedsave").status == 404)
        #expect(try fake.client.request("DELETE", "/v1/vms/nosuch/managedsave").status == 404)
        // A save the VMM fails leaves the VM running and no image behind.
        #expect(try fake.post("/v1/vms/vm1/start").status == 200)
        #expect(try fake.post("/v1/vms/vm1/managedsave").status == 500)
        #expect(try fake.state("vm1") == VMStateBody(state: "running", reason: "booted"))
        #expect(try summary(fake, "vm1").managedSave == false)
        #expect(try fake.post("/v1/vms/vm1/destroy").status == 200)
    }

    private func summary(_ fake: FakeVMMDaemon, _ name: String) throws -> VMSummary {
        try decodeJSON(VMSummary.self, try fake.client.request("GET", "/v1/vms/\(name)"))
    }
}
