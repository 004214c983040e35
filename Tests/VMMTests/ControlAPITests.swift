import Foundation
import KVM
import Testing
@testable import VMM
@testable import VMMControl

/// A test guest run by a VM session with the control API in front of it, as `vireo run` does.
struct ControlledGuest {
    let guest: SessionGuest
    let api: ControlAPI
    var machine: Machine { guest.machine }
    var console: ConsoleLog { guest.session.console }

    init(_ name: String = "mb-user.elf", cmdline: String, devices: DeviceOptions = DeviceOptions()) throws {
        guest = try SessionGuest(guest: name, cmdline: cmdline, devices: devices)
        api = ControlAPI(session: guest.session)
    }

    func stop() { guest.stop() }

    /// Waits (bounded) until the console shows `needle`, by subscribing rather than polling.
    func waitFor(_ needle: String, timeoutSeconds: Double = 30) -> Bool {
        let seen = Guarded("")
        let (id, recent) = console.attach { byte in seen.update { $0.unicodeScalars.append(Unicode.Scalar(byte)) } }
        defer { console.detach(id) }
        seen.update { $0 = String(decoding: recent, as: UTF8.self) + $0 }
        return seen.wait(until: { $0.contains(needle) }, timeoutSeconds: timeoutSeconds) { _ in true } ?? false
    }

    func json(_ uri: String) throws -> [String: Any] {
        let response = api.handle(method: "GET", uri: uri)
        #expect(response.status == 200)
        return try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] ?? [:]
    }
}

extension KVMGuestSuites {
@Suite struct ControlAPITests {
    @Test func pauseResumeStopThroughTheAPI() throws {
        let guest = try ControlledGuest(cmdline: "ticks=100000 spin=20000000")
        #expect(guest.waitFor("tick 2"))
        #expect(try guest.json("/vm")["state"] as? String == "running")

        #expect(guest.api.handle(method: "PUT", uri: "/vm/pause").status == 204)
        #expect(try guest.json("/vm")["state"] as? String == "paused")
        let frozen = guest.console.recent()
        // While paused the guest cannot print: give a running one ample time for its next ticks.
        #expect(!guest.waitFor("tick 50", timeoutSeconds: 1))
        #expect(guest.console.recent() == frozen)

        #expect(guest.api.handle(method: "PUT", uri: "/vm/resume").status == 204)
        #expect(try guest.json("/vm")["state"] as? String == "running")
        #expect(guest.waitFor("tick 5"))
        let stats = try guest.json("/vm/stats")
        #expect((stats["exits"] as? Int ?? 0) > 0)
        #expect((stats["rss_bytes"] as? Int ?? 0) > 0)
        // Exits by reason: the guest's serial output is PIO writes to COM1.
        let reasons = stats["exit_reasons"] as? [[String: Any]] ?? []
        let com1 = reasons.first { $0["reason"] as? String == "pio_out 0x3f8" }?["count"] as? Int ?? 0
        #expect(com1 >= "tick 5".count)
        #expect(reasons.reduce(0) { $0 + ($1["count"] as? Int ?? 0) } <= stats["exits"] as? Int ?? 0)

        #expect(guest.api.handle(method: "PUT", uri: "/vm/stop").status == 204)
        #expect(guest.machine.waitForExit(timeoutSeconds: 10) == .stopped)
        #expect(try guest.json("/vm")["state"] as? String == "stopped")
        #expect(guest.api.handle(method: "PUT", uri: "/vm/pause").status == 409)
    }

    /// GET /vm/vcpus reads each vCPU on its own thread during a moment's pause and leaves the VM
    /// as it found it: a running one runs on, a paused one stays paused.
    @Test func vcpuReportsDescribeEachVCPUAndLeaveTheVMAsItWas() throws {
        let guest = try ControlledGuest(cmdline: "ticks=100000 spin=20000000")
        defer { guest.stop() }
        #expect(guest.waitFor("tick 2"))
        func reports() throws -> [[String: Any]] {
            let response = guest.api.handle(method: "GET", uri: "/vm/vcpus")
            #expect(response.status == 200)
            return try JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]] ?? []
        }
        let running = try reports()
        try #require(running.count == 1, "\(running)")
        let vcpu = running[0]
        #expect(vcpu["id"] as? Int == 0)
        #expect(vcpu["thread"] as? String == "running")
        #expect(vcpu["error"] == nil)
        // The user-mode test guest (user.c, entry64.S) runs in long mode, its ticks at CPL3.
        #expect(vcpu["mode"] as? String == "long")
        #expect((vcpu["rip"] as? String)?.hasPrefix("0x") == true)
        #expect(vcpu["mp_state"] as? String == "runnable")
        #expect((vcpu["lapic_timer"] as? String)?.contains("vector") == true)
        #expect((vcpu["exits"] as? Int ?? 0) > 0)
        #expect(try guest.json("/vm")["state"] as? String == "running")
        let ticks = guest.console.recent().count
        #expect(guest.waitFor("tick 6"), "the guest runs on after the report")
        #expect(guest.console.recent().count > ticks)

        #expect(guest.api.handle(method: "PUT", uri: "/vm/pause").status == 204)
        let paused = try reports()
        #expect(paused.first?["thread"] as? String == "parked")
        #expect(paused.first?["rip"] != nil)
        #expect(try guest.json("/vm")["state"] as? String == "paused")
    }

    /// Keystrokes through the API reach the guest with flow control (the UART holds 1-16 bytes).
    @Test func consoleInputIsTypedIntoTheGuest() throws {
        let guest = try ControlledGuest("mb-echo.elf", cmdline: "")
        #expect(guest.waitFor("echo: ready"))
        let text = "typed through the control api"
        let response = guest.api.handle(method: "POST", uri: "/console/input", body: Array(text.utf8))
        #expect(response.status == 200)
        #expect(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Int] == ["accepted": text.utf8.count])
        #expect(guest.waitFor(text.uppercased()))
        _ = guest.api.handle(method: "POST", uri: "/console/input", body: Array("q".utf8))
        #expect(guest.machine.waitForExit(timeoutSeconds: 30) == .debugExit(value: 0))
        #expect(guest.api.handle(method: "POST", uri: "/console/input", body: [0x61]).status == 409)
    }

    /// Graceful shutdown is the ACPI power button: an ACPI guest (mb-echo acpi) acknowledges it,
    /// powers off through S5, and GET /vm reports the button state along the way.
    @Test func shutdownPressesThePowerButton() throws {
        let guest = try ControlledGuest("mb-echo.elf", cmdline: "acpi")
        #expect(guest.waitFor("echo: ready"))
        #expect(try guest.json("/vm")["power_button_enabled"] as? Bool == true)
        let response = guest.api.handle(method: "PUT", uri: "/vm/shutdown")
        #expect(response.status == 202)
        let body = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Bool]
        #expect(body == ["pressed": true, "guest_listening": true])
        #expect(guest.machine.waitForExit(timeoutSeconds: 30) == .powerOff)
        #expect(try guest.json("/vm")["power_button_pending"] as? Bool == false)
        #expect(guest.api.handle(method: "PUT", uri: "/vm/shutdown").status == 409)
    }

    @Test func errorsAreJSONWithTheRightStatus() throws {
        let guest = try ControlledGuest(cmdline: "ticks=100000")
        defer { guest.stop() }
        for (method, uri, status) in [("GET", "/nope", 404), ("POST", "/vm/pause", 405), ("GET", "/vm/pause", 405),
                                      ("GET", "/vm/shutdown", 405)] {
            let response = guest.api.handle(method: method, uri: uri)
            #expect(response.status == status, "\(method) \(uri)")
            let object = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            #expect(object?["error"] is String, "\(method) \(uri)")
        }
    }
}

}

@Suite struct ConsoleLogTests {
    @Test func keepsOnlyTheMostRecentBytes() {
        let log = ConsoleLog(capacity: 16)
        for byte in 0..<100 { log.emit(UInt8(byte)) }
        #expect(log.recent() == (84..<100).map { UInt8($0) })
    }

    @Test func attachGetsBacklogThenLiveBytesExactlyOnce() {
        let log = ConsoleLog(capacity: 8)
        for byte in Array("hello".utf8) { log.emit(byte) }
        let received = Guarded<[UInt8]>([])
        let (id, recent) = log.attach { byte in received.update { $0.append(byte) } }
        #expect(recent == Array("hello".utf8))
        for byte in Array(" world".utf8) { log.emit(byte) }
        #expect(received.read { $0 } == Array(" world".utf8))
        log.detach(id)
        log.emit(0x21)
        #expect(received.read { $0 } == Array(" world".utf8))
    }
}

extension KVMGuestSuites {
/// The HTTP server, driven with curl exactly as a user or script would.
@Suite struct ControlServerTests {
    func curl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-s", "--max-time", "5"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func servesTheAPIAndStreamsTheConsoleOverAUnixSocket() throws {
        let guest = try ControlledGuest(cmdline: "ticks=100000 spin=20000000")
        defer { guest.stop() }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-api-\(getpid()).sock").path
        let server = ControlServer(socketPath: path, api: guest.api)
        try server.start()
        defer { server.stop() }
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)

        let state = try curl(["--unix-socket", path, "http://vm/vm"])
        #expect(state.output.contains("\"state\":\"running\""))
        let pause = try curl(["--unix-socket", path, "-X", "PUT", "-o", "/dev/null", "-w", "%{http_code}", "http://vm/vm/pause"])
        #expect(pause.output == "204")
        #expect(try curl(["--unix-socket", path, "http://vm/vm"]).output.contains("\"state\":\"paused\""))
        _ = try curl(["--unix-socket", path, "-X", "PUT", "http://vm/vm/resume"])

        // Following the console delivers output printed after attaching (curl stops at --max-time).
        #expect(guest.waitFor("tick 3"))
        let follow = try curl(["--unix-socket", path, "-N", "--max-time", "2", "http://vm/console?follow=1"])
        // Backlog then live output, with no byte lost or repeated at the seam: tick numbers are
        // consecutive (the first line may be cut by the ring, so it is dropped), and the stream
        // went on past what the ring held when curl attached.
        // curl's --max-time may cut the last line too ("user: tick 1" of "154"): complete lines only.
        let complete = follow.output.lastIndex(of: "\n").map { follow.output[...$0] } ?? ""
        let lines = complete.split(separator: "\n").dropFirst().filter { $0.hasPrefix("user: tick ") }
        let numbers = lines.compactMap { Int($0.dropFirst("user: tick ".count)) }
        #expect(numbers.count >= 3, "streamed: \(follow.output.suffix(200))")
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 }, "ticks: \(numbers)")
        // Live, not just backlog: the stream kept up with the guest until curl hung up.
        let lastInRing = String(decoding: guest.console.recent(), as: UTF8.self).split(separator: "\n")
            .compactMap { $0.hasPrefix("user: tick ") ? Int($0.dropFirst("user: tick ".count)) : nil }.last ?? 0
        #expect((numbers.last ?? 0) >= lastInRing - 3, "stream ended at \(numbers.last ?? 0), guest at \(lastInRing)")
    }

    @Test func refusesToReplaceAFileThatIsNotASocket() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-not-a-socket-\(getpid())").path
        FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8))
        defer { unlink(path) }
        let guest = try ControlledGuest(cmdline: "ticks=100000")
        defer { guest.stop() }
        let server = ControlServer(socketPath: path, api: guest.api)
        #expect(throws: ControlServerError.self) { try server.start() }
        #expect(FileManager.default.contents(atPath: path) == Data("keep me".utf8))
    }
}
}
