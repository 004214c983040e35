import Foundation
import VMM

/// The per-VM control API, independent of HTTP plumbing: a request in, a response out.
///
/// ```
/// GET  /vm                 state, vCPUs, memory, boot path          200 JSON
/// GET  /vm/stats           exits (with the top reasons), CPU, RSS   200 JSON
/// PUT  /vm/pause           park every vCPU (consistent point)       204
/// PUT  /vm/resume                                                   204
/// PUT  /vm/stop            hard stop (like pulling the plug)        204
/// PUT  /vm/shutdown        ACPI power button (guest shuts down)     202 JSON
/// GET  /console            recent serial output (bounded ring)      200 bytes
/// GET  /console?follow=1   recent output, then live as it comes     200 chunked
/// POST /console/input      typed into hvc0 or COM1, flow-controlled 200 {"accepted": n}
/// ```
/// Errors are JSON `{"error": "..."}` with 400/404/405/409/500.
public struct ControlAPI: Sendable {
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        public var contentType: String
        /// Keep the connection streaming console output after `body`.
        public var followConsole = false

        static func json(_ status: Int, _ object: some Encodable) -> Response {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let data = (try? encoder.encode(object)) ?? Data("{}".utf8)
            return Response(status: status, body: Array(data) + [0x0A], contentType: "application/json")
        }

        static func error(_ status: Int, _ message: String) -> Response { json(status, ["error": message]) }
        static let noContent = Response(status: 204, body: [], contentType: "application/json")
    }

    struct VMInfo: Encodable {
        let state: String
        let vcpus: Int
        let memoryBytes: UInt64
        let boot: String
        let cmdline: String
        let hostProfile: String
        let outcome: String?
        /// The guest's ACPI driver enabled power-button events.
        let powerButtonEnabled: Bool
        /// A press the guest has not acknowledged yet (PWRBTN_STS still set).
        let powerButtonPending: Bool
        enum CodingKeys: String, CodingKey {
            case state, vcpus, boot, cmdline, outcome
            case memoryBytes = "memory_bytes"
            case hostProfile = "host_profile"
            case powerButtonEnabled = "power_button_enabled"
            case powerButtonPending = "power_button_pending"
        }
    }

    struct PowerButton: Encodable {
        let pressed: Bool
        /// Whether the guest had enabled power-button events (an ACPI OS that will act on it).
        let guestListening: Bool
        enum CodingKeys: String, CodingKey {
            case pressed
            case guestListening = "guest_listening"
        }
    }

    struct Stats: Encodable {
        let exits: UInt64
        /// The most frequent exit reasons ("pio_out 0x3f8", "mmio_write 0xfee00000", ...) and counts.
        let exitReasons: [ExitCount]
        let cpuUserSeconds: Double
        let cpuSystemSeconds: Double
        let rssBytes: UInt64
        let devices: DeviceStatistics
        enum CodingKeys: String, CodingKey {
            case exits, devices
            case exitReasons = "exit_reasons"
            case cpuUserSeconds = "cpu_user_seconds"
            case cpuSystemSeconds = "cpu_system_seconds"
            case rssBytes = "rss_bytes"
        }
    }

    struct ExitCount: Encodable {
        let reason: String
        let count: UInt64
    }
    /// How many reasons /vm/stats lists (the rest are in `exits`).
    static let listedExitReasons = 20

    let machine: @Sendable () -> Machine?
    let console: ConsoleLog

    public init(machine: @escaping @Sendable () -> Machine?, console: ConsoleLog) {
        self.machine = machine
        self.console = console
    }

    /// Handles one request. May block briefly (pause waits for every vCPU to park): call it off
    /// any event loop.
    public func handle(method: String, uri: String, body: [UInt8] = []) -> Response {
        let (path, query) = split(uri)
        let routes: [String: Set<String>] = [
            "/vm": ["GET"], "/vm/stats": ["GET"], "/vm/pause": ["PUT"], "/vm/resume": ["PUT"],
            "/vm/stop": ["PUT"], "/vm/shutdown": ["PUT"], "/console": ["GET"], "/console/input": ["POST"],
        ]
        guard let allowed = routes[path] else { return .error(404, "no such resource: \(path)") }
        guard allowed.contains(method) else { return .error(405, "\(method) is not allowed on \(path) (use \(allowed.sorted().joined(separator: ", ")))") }
        if path == "/console" {
            var response = Response(status: 200, body: console.recent(), contentType: "application/octet-stream")
            response.followConsole = query["follow"] == "1"
            return response
        }
        guard let machine = machine() else { return .error(409, "the VM is being restarted; try again") }
        switch path {
        case "/vm":
            var outcome: String?
            if let ended = machine.outcome { outcome = ended.description }
            return .json(200, VMInfo(state: machine.runState.rawValue, vcpus: machine.config.cpus,
                                     memoryBytes: machine.config.memorySize, boot: machine.bootPlan.format.description,
                                     cmdline: machine.effectiveCmdline, hostProfile: machine.profile.kind.rawValue,
                                     outcome: outcome, powerButtonEnabled: machine.powerButtonEnabled,
                                     powerButtonPending: machine.powerButtonPending))
        case "/vm/stats":
            // Reasons first: each exit is counted in the total before its reason, so the total read
            // after them is never below what they add up to.
            let reasons = machine.exitReasons
            return .json(200, Self.stats(exits: machine.exitCount, exitReasons: reasons, devices: machine.deviceStatistics))
        case "/vm/pause":
            guard machine.runState == .running || machine.runState == .paused else {
                return .error(409, "cannot pause a VM that is \(machine.runState.rawValue)")
            }
            do { try machine.pause() } catch { return .error(500, "\(error)") }
            return .noContent
        case "/vm/resume":
            guard machine.runState != .stopped else { return .error(409, "cannot resume a stopped VM") }
            machine.resume()
            return .noContent
        case "/console/input":
            guard machine.runState == .running || machine.runState == .paused else {
                return .error(409, "cannot type into a VM that is \(machine.runState.rawValue)")
            }
            return .json(200, ["accepted": machine.typeConsoleInput(body)])
        case "/vm/stop":
            machine.requestStop()
            return .noContent
        default: // /vm/shutdown
            guard machine.runState == .running else {
                return .error(409, "cannot shut down a VM that is \(machine.runState.rawValue) (resume it first)")
            }
            // Like pressing the button on a PC: the guest decides; the caller watches the state.
            let listening = machine.powerButtonEnabled
            machine.pressPowerButton()
            return .json(202, PowerButton(pressed: true, guestListening: listening))
        }
    }

    private func split(_ uri: String) -> (String, [String: String]) {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query[String(kv[0])] = kv.count == 2 ? String(kv[1]) : ""
            }
        }
        return (String(parts.first ?? ""), query)
    }

    /// Whole-process figures: this process is one VM.
    static func stats(exits: UInt64, exitReasons: [ExitReason: UInt64], devices: DeviceStatistics) -> Stats {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let pages = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        return Stats(exits: exits,
                     exitReasons: exitReasons.top(listedExitReasons).map { ExitCount(reason: $0.reason.description, count: $0.count) },
                     cpuUserSeconds: Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
                     cpuSystemSeconds: Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6,
                     rssBytes: pages * UInt64(sysconf(Int32(_SC_PAGESIZE))), devices: devices)
    }
}
