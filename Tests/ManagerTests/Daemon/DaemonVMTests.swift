import Foundation
import Testing
@testable import Manager

/// A real daemon process with real VMs (the mb-echo test guest under KVM). Serialized: each test
/// boots its own VMs, and the kill -9 test must not race another test's daemon.
@Suite(.serialized) struct DaemonVMTests {
    /// The VMM presses an ACPI power button on shutdown (the echo guest's "acpi" mode powers off).
    /// Set to false for a VMM that answers 501: then shutdown must fail with the destroy hint.
    static let vmmHasPowerButton = true

    @Test func lifecycleFromDefineToUndefine() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        let events = EventRecorder(client: daemon.client)
        let yaml = "name: life\nmemory: 32M\nos:\n  kernel: \(DaemonProcess.echoGuest)\n  cmdline: acpi\nonReboot: destroy\n"
        #expect(try daemon.client.request("POST", "/v1/vms", body: Array(yaml.utf8)).status == 201)

        let start = try daemon.client.request("POST", "/v1/vms/life/start")
        #expect(start.status == 200, "\(start.text) \(daemon.daemonLog)")
        #expect(try JSONDecoder().decode(ActionResult.self, from: Data(start.body)).message == "Domain 'life' started")
        #expect(try daemon.state("life") == VMStateBody(state: "running", reason: "booted"))
        let pid = try #require(try daemon.summary("life").id)
        #expect(ProcessSnapshot.read(pid: pid)?.isRunning == true)
        // Its own session: the daemon's terminal signals and death do not reach it.
        #expect(getsid(pid) == pid)

        #expect(daemon.waitForConsole("life", toContain: "echo: ready"))
        let typed = try daemon.client.request("POST", "/v1/vms/life/console/input", body: Array("hello\n".utf8))
        #expect(typed.status == 200)
        #expect(daemon.waitForConsole("life", toContain: "HELLO"))
        // The serial log under the state dir has it too.
        let serialLog = daemon.stateDirectory + "/vms/life/serial.log"
        #expect((try? String(contentsOfFile: serialLog, encoding: .utf8))?.contains("HELLO") == true)
        // ...and only it: the process log holds the VMM's own lines, not a second copy.
        let processLog = (try? String(contentsOfFile: daemon.stateDirectory + "/vms/life/vireo-run.log", encoding: .utf8)) ?? ""
        #expect(!processLog.contains("HELLO") && !processLog.contains("echo: ready"), "\(processLog)")

        #expect(try daemon.client.request("POST", "/v1/vms/life/suspend").status == 200)
        #expect(try daemon.state("life") == VMStateBody(state: "paused", reason: "user"))
        #expect(try daemon.client.request("POST", "/v1/vms/life/resume").status == 200)
        #expect(try daemon.state("life") == VMStateBody(state: "running", reason: "unpaused"))

        let stats = try JSONDecoder().decode(VMStats.self, from: Data(try daemon.client.request("GET", "/v1/vms/life/stats").body))
        #expect(stats.stateCode == 1 && stats.vcpus == 1 && stats.memoryMaxBytes == 32 << 20)
        #expect(stats.rssBytes > 0)
        #expect(stats.cpuUserSeconds + stats.cpuSystemSeconds > 0)
        let metrics = try daemon.client.request("GET", "/metrics").text
        #expect(metrics.contains(#"vireo_vm_state{name="life""#))
        #expect(metrics.contains("vireo_vm_rss_bytes{name=\"life\""))

        let undefineRunning = try daemon.client.request("DELETE", "/v1/vms/life")
        #expect(undefineRunning.status == 409)

        let shutdown = try daemon.client.request("POST", "/v1/vms/life/shutdown")
        if Self.vmmHasPowerButton {
            #expect(shutdown.status == 200, "\(shutdown.text)")
            #expect(daemon.waitForState("life", "shutoff"))
            #expect(try daemon.state("life") == VMStateBody(state: "shutoff", reason: "shutdown"))
            #expect(try daemon.client.request("POST", "/v1/vms/life/start").status == 200)
        } else {
            #expect(shutdown.status == 501)
            #expect(shutdown.errorMessage.contains("use 'vireo destroy life'"))
        }
        let destroy = try daemon.client.request("POST", "/v1/vms/life/destroy")
        #expect(destroy.status == 200)
        #expect(try daemon.state("life") == VMStateBody(state: "shutoff", reason: "destroyed"))
        #expect(vmProcesses(controlSocket: daemon.stateDirectory + "/vms/life/control.sock").isEmpty)
        // A stopped VM's console still shows what it printed (from the serial log).
        #expect(try daemon.client.request("GET", "/v1/vms/life/console").text.contains("HELLO"))

        #expect(try daemon.client.request("DELETE", "/v1/vms/life").status == 200)
        #expect(try daemon.client.request("GET", "/v1/vms/life").status == 404)

        let seen = events.kinds(until: "undefined")
        var expected = ["defined", "started", "suspended", "resumed"]
        if Self.vmmHasPowerButton { expected += ["stopped:shutdown", "started"] }
        expected += ["stopped:destroyed", "undefined"]
        #expect(seen == expected)
    }

    @Test func guestPowerOffAndCrashAreRecordedWithTheirReasons() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("off")
        #expect(try daemon.client.request("POST", "/v1/vms/off/start").status == 200)
        #expect(daemon.waitForConsole("off", toContain: "echo: ready"))
        // 'q' makes the echo guest leave through the debug-exit port: the guest ended itself.
        _ = try daemon.client.request("POST", "/v1/vms/off/console/input", body: Array("q".utf8))
        #expect(daemon.waitForState("off", "shutoff"))
        #expect(try daemon.state("off").reason == "shutdown")

        #expect(try daemon.client.request("POST", "/v1/vms/off/start").status == 200)
        let pid = try #require(try daemon.summary("off").id)
        kill(pid, SIGKILL)
        #expect(daemon.waitForState("off", "shutoff"))
        #expect(try daemon.state("off").reason == "crashed")
    }

    @Test func rebootBootsAFreshProcessAndPoweroffRestartIsHonoured() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        let yaml = "name: again\nmemory: 32M\nos:\n  kernel: \(DaemonProcess.echoGuest)\nonPoweroff: restart\n"
        #expect(try daemon.client.request("POST", "/v1/vms", body: Array(yaml.utf8)).status == 201)
        #expect(try daemon.client.request("POST", "/v1/vms/again/start").status == 200)
        let first = try #require(try daemon.summary("again").id)

        let reboot = try daemon.client.request("POST", "/v1/vms/again/reboot")
        #expect(reboot.status == 200, "\(reboot.text)")
        let second = try #require(try daemon.summary("again").id)
        #expect(second != first)
        #expect(ProcessSnapshot.read(pid: first)?.isRunning != true)
        #expect(try daemon.state("again") == VMStateBody(state: "running", reason: "booted"))
        #expect(daemon.waitForConsole("again", toContain: "echo: ready"))

        // The guest ends itself ('q'); onPoweroff: restart boots it again in a new process.
        _ = try daemon.client.request("POST", "/v1/vms/again/console/input", body: Array("q".utf8))
        let deadline = Date().addingTimeInterval(20)
        var third: Int32?
        while Date() < deadline {
            if let id = try? daemon.summary("again").id, id != second { third = id; break }
            usleep(50_000)
        }
        #expect(third != nil)
        #expect(daemon.waitForState("again", "running"))
        #expect(try daemon.client.request("POST", "/v1/vms/again/destroy").status == 200)
        #expect(try daemon.state("again") == VMStateBody(state: "shutoff", reason: "destroyed"))
    }

    @Test func severalConsolesFollowOneVM() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("shared")
        #expect(try daemon.client.request("POST", "/v1/vms/shared/start").status == 200)
        #expect(daemon.waitForConsole("shared", toContain: "echo: ready"))
        let viewers = (0..<3).map { _ in LockedEvents() }
        let handles = (0..<3).map { _ in StreamHandle() }
        for (viewer, handle) in zip(viewers, handles) {
            let client = daemon.client
            Thread {
                _ = try? client.stream("GET", "/v1/vms/shared/console?follow=1", connection: handle) { bytes in
                    viewer.append(String(decoding: bytes, as: UTF8.self))
                    return true
                }
            }.start()
        }
        for viewer in viewers { for _ in 0..<100 where !viewer.text.contains("echo: ready") { usleep(20_000) } }
        _ = try daemon.client.request("POST", "/v1/vms/shared/console/input", body: Array("to all\n".utf8))
        for viewer in viewers { for _ in 0..<100 where !viewer.text.contains("TO ALL") { usleep(20_000) } }
        handles.forEach { $0.cancel() }
        for viewer in viewers {
            // Recent output on attach, then the live echo.
            #expect(viewer.text.contains("echo: ready"))
            #expect(viewer.text.contains("TO ALL"))
        }
        #expect(try daemon.client.request("POST", "/v1/vms/shared/destroy").status == 200)
        // A stream on a VM that stopped ends; a new follow is refused with the reason.
        let refused = try daemon.client.request("GET", "/v1/vms/shared/console?follow=1")
        #expect(refused.status == 409)
    }

    /// virsh save, restore and managedsave with a real guest: the VMM writes the whole VM to a file
    /// and exits; a new process resumes it from there, mid-run (the guest does not boot again).
    @Test func saveAndRestoreARunningGuest() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("saved")
        #expect(try daemon.client.request("POST", "/v1/vms/saved/start").status == 200)
        #expect(daemon.waitForConsole("saved", toContain: "echo: ready"))
        _ = try daemon.client.request("POST", "/v1/vms/saved/console/input", body: Array("before\n".utf8))
        #expect(daemon.waitForConsole("saved", toContain: "BEFORE"))
        let first = try #require(try daemon.summary("saved").id)

        let file = daemon.directory + "/saved.save"
        let save = try daemon.client.request("POST", "/v1/vms/saved/save", body: Array(#"{"path": "\#(file)"}"#.utf8))
        #expect(save.status == 200, "\(save.text) \(daemon.daemonLog)")
        #expect(try JSONDecoder().decode(ActionResult.self, from: Data(save.body)).message == "Domain 'saved' saved to \(file)")
        #expect(try daemon.state("saved") == VMStateBody(state: "shutoff", reason: "saved"))
        #expect(ProcessSnapshot.read(pid: first)?.isRunning != true)
        #expect(vmProcesses(controlSocket: daemon.stateDirectory + "/vms/saved/control.sock").isEmpty)
        #expect(((try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0) > 0)

        let restore = try daemon.client.request("POST", "/v1/restore", body: Array(#"{"path": "\#(file)"}"#.utf8))
        #expect(restore.status == 200, "\(restore.text) \(daemon.daemonLog)")
        #expect(try daemon.state("saved") == VMStateBody(state: "running", reason: "restored"))
        let second = try #require(try daemon.summary("saved").id)
        #expect(second != first)
        let vmm = try HTTPClient(endpoint: .unix(path: daemon.stateDirectory + "/vms/saved/control.sock")).request("GET", "/vm")
        #expect(vmm.text.contains(#""restored_from":"\#(file)""#), "\(vmm.text)")
        // The guest goes on from where it was: it echoes at once, and never printed its banner again.
        _ = try daemon.client.request("POST", "/v1/vms/saved/console/input", body: Array("after\n".utf8))
        #expect(daemon.waitForConsole("saved", toContain: "AFTER"))
        #expect(try !daemon.client.request("GET", "/v1/vms/saved/console").text.contains("echo: ready"))

        let running = try daemon.client.request("POST", "/v1/restore", body: Array(#"{"path": "\#(file)"}"#.utf8))
        #expect(running.status == 409)

        // virsh managedsave: the next start resumes the guest, then the image is removed while the
        // VMM still maps the guest's RAM from it.
        let managed = try daemon.client.request("POST", "/v1/vms/saved/managedsave")
        #expect(managed.status == 200, "\(managed.text) \(daemon.daemonLog)")
        let image = daemon.stateDirectory + "/vms/saved/managed.save"
        #expect(FileManager.default.fileExists(atPath: image))
        #expect(try daemon.state("saved") == VMStateBody(state: "shutoff", reason: "saved"))
        let resumed = try daemon.client.request("POST", "/v1/vms/saved/start")
        #expect(resumed.status == 200, "\(resumed.text) \(daemon.daemonLog)")
        #expect(try daemon.state("saved") == VMStateBody(state: "running", reason: "restored"))
        #expect(!FileManager.default.fileExists(atPath: image))
        _ = try daemon.client.request("POST", "/v1/vms/saved/console/input", body: Array("again\n".utf8))
        #expect(daemon.waitForConsole("saved", toContain: "AGAIN"))
        #expect(try !daemon.client.request("GET", "/v1/vms/saved/console").text.contains("echo: ready"))
        #expect(try daemon.client.request("POST", "/v1/vms/saved/destroy").status == 200)
    }

    @Test func vmSurvivesDaemonKill9AndIsReattached() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("keep")
        #expect(try daemon.client.request("POST", "/v1/vms/keep/start").status == 200)
        #expect(daemon.waitForConsole("keep", toContain: "echo: ready"))
        let pid = try #require(try daemon.summary("keep").id)

        daemon.kill9()
        usleep(300_000)
        #expect(ProcessSnapshot.read(pid: pid)?.isRunning == true, "the VM died with the daemon")

        try daemon.start()
        let summary = try daemon.summary("keep")
        #expect(summary.state == "running")
        #expect(summary.id == pid)
        #expect(daemon.daemonLog.contains("re-attached to VM 'keep' (pid \(pid)"))
        // The console works through the new daemon: old output first, then new.
        _ = try daemon.client.request("POST", "/v1/vms/keep/console/input", body: Array("again\n".utf8))
        #expect(daemon.waitForConsole("keep", toContain: "AGAIN"))
        #expect(try daemon.client.request("POST", "/v1/vms/keep/suspend").status == 200)
        #expect(try daemon.client.request("POST", "/v1/vms/keep/resume").status == 200)

        // A re-attached VM is not the daemon's child; its end is still noticed and recorded.
        #expect(try daemon.client.request("POST", "/v1/vms/keep/destroy").status == 200)
        #expect(try daemon.state("keep") == VMStateBody(state: "shutoff", reason: "destroyed"))
        #expect(ProcessSnapshot.read(pid: pid)?.isRunning != true)
    }

    @Test func vmThatDiedWhileTheDaemonWasDownIsMarkedShutOff() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("gone")
        #expect(try daemon.client.request("POST", "/v1/vms/gone/start").status == 200)
        let pid = try #require(try daemon.summary("gone").id)
        daemon.kill9()
        kill(pid, SIGKILL)
        usleep(200_000)
        try daemon.start()
        #expect(try daemon.state("gone") == VMStateBody(state: "shutoff", reason: "crashed"))
        #expect(try daemon.summary("gone").id == nil)
    }

    @Test func autostartVMsStartWithTheDaemon() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("early", autostart: true)
        try daemon.defineEcho("late")
        daemon.terminate()
        try daemon.start()
        #expect(daemon.waitForState("early", "running"))
        #expect(try daemon.state("late").state == "shutoff")
        // Logged once the VM's control socket answered, a moment after the state was recorded.
        for _ in 0..<100 where !daemon.daemonLog.contains("autostarted VM 'early'") { usleep(50_000) }
        #expect(daemon.daemonLog.contains("autostarted VM 'early'"))
    }

    /// domstats' block counters come from the VMM's virtio-blk and are named as virsh names them.
    @Test func diskCountersAreNamedByTargetWithTheirPath() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        let image = daemon.stateDirectory + "/data.img"
        #expect(FileManager.default.createFile(atPath: image, contents: Data(count: 1 << 20)))
        let yaml = """
            name: withdisk
            memory: 32M
            os:
              kernel: \(DaemonProcess.echoGuest)
            disks:
              - source: \(image)
                target: vdb
            """
        #expect(try daemon.client.request("POST", "/v1/vms", body: Array(yaml.utf8)).status == 201)
        #expect(try daemon.client.request("POST", "/v1/vms/withdisk/start").status == 200)
        #expect(daemon.waitForConsole("withdisk", toContain: "echo: ready"))
        let stats = try JSONDecoder().decode(VMStats.self, from: Data(try daemon.client.request("GET", "/v1/vms/withdisk/stats").body))
        #expect(stats.block.count == 1)
        #expect(stats.block.first?.name == "vdb")
        #expect(stats.block.first?.path == image)
        #expect(stats.block.first?.counters["rd.reqs"] == 0)
        // The same counters in the Prometheus text.
        let metrics = try daemon.client.request("GET", "/metrics").text
        #expect(metrics.contains("# TYPE vireo_vm_block_read_bytes_total counter"))
        #expect(metrics.contains("vireo_vm_block_read_bytes_total{name=\"withdisk\",uuid="))
        #expect(metrics.contains(",device=\"vdb\",path=\"\(image)\"} 0\n"))
        #expect(try daemon.client.request("POST", "/v1/vms/withdisk/destroy").status == 200)
    }

    @Test func fiftyConcurrentCallsOnOneVMStayConsistent() throws {
        let daemon = try DaemonProcess()
        try daemon.start()
        try daemon.defineEcho("busy")
        let socket = daemon.stateDirectory + "/vms/busy/control.sock"

        // 50 simultaneous starts: exactly one boots the VM.
        let starts = concurrently(50) { _ in (try? daemon.client.request("POST", "/v1/vms/busy/start"))?.status ?? -1 }
        #expect(starts.filter { $0 == 200 }.count == 1)
        #expect(starts.filter { $0 == 409 }.count == 49)
        #expect(vmProcesses(controlSocket: socket).count == 1)

        // 50 mixed calls: whatever order they run in, the end state matches the process.
        let actions = ["start", "suspend", "resume", "destroy"]
        let mixed = concurrently(50) { index in
            (try? daemon.client.request("POST", "/v1/vms/busy/\(actions[index % actions.count])"))?.status ?? -1
        }
        #expect(mixed.allSatisfy { $0 == 200 || $0 == 409 }, "\(mixed)")
        let state = try daemon.state("busy")
        let processes = vmProcesses(controlSocket: socket)
        #expect(processes.count <= 1)
        switch state.state {
        case "running", "paused":
            #expect(processes.count == 1)
            let vmm = try HTTPClient(endpoint: .unix(path: socket)).request("GET", "/vm")
            #expect(vmm.text.contains("\"state\":\"\(state.state)\""))
        default:
            #expect(state.state == "shutoff")
            #expect(processes.isEmpty)
        }
        _ = try daemon.client.request("POST", "/v1/vms/busy/destroy")
        #expect(vmProcesses(controlSocket: socket).isEmpty)
    }
}

/// Runs `count` calls at once on their own threads and returns their results in call order.
func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    let results = LockedArray<T?>(Array(repeating: nil, count: count))
    let group = DispatchGroup()
    let gate = DispatchSemaphore(value: 0)
    for index in 0..<count {
        group.enter()
        Thread {
            gate.wait()
            results.set(index, body(index))
            group.leave()
        }.start()
    }
    for _ in 0..<count { gate.signal() }
    group.wait()
    return results.values.compactMap { $0 }
}

final class LockedArray<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [T]
    init(_ values: [T]) { storage = values }
    func set(_ index: Int, _ value: T) { lock.lock(); storage[index] = value; lock.unlock() }
    var values: [T] { lock.lock(); defer { lock.unlock() }; return storage }
}

/// Collects the daemon's SSE stream from the moment it is created.
final class EventRecorder: @unchecked Sendable {
    private let text = LockedEvents()
    private let handle = StreamHandle()

    init(client: HTTPClient) {
        let text = self.text, handle = self.handle
        Thread {
            _ = try? client.stream("GET", "/v1/events", connection: handle) { bytes in
                text.append(String(decoding: bytes, as: UTF8.self))
                return true
            }
        }.start()
        for _ in 0..<100 where !text.text.contains(": vireo") { usleep(20_000) }
    }

    /// Event kinds ("stopped:destroyed" with the reason for stops; with `withReasons`, for every
    /// event that has one), once `count` events of kind `last` arrived.
    func kinds(until last: String, count: Int = 1, withReasons: Bool = false, seconds: Double = 10) -> [String] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && text.text.components(separatedBy: "event: \(last)\n").count <= count { usleep(20_000) }
        handle.cancel()
        return text.text.components(separatedBy: "\n").compactMap { line -> String? in
            guard line.hasPrefix("data: "),
                  let event = try? JSONDecoder().decode(LifecycleEvent.self, from: Data(line.dropFirst(6).utf8)) else { return nil }
            guard let reason = event.reason, withReasons || event.kind == .stopped else { return event.kind.rawValue }
            return "\(event.kind.rawValue):\(reason)"
        }
    }
}
