import Foundation
import VMM

/// The per-VM control API, independent of HTTP plumbing: a request in, a response out. Routes and
/// bodies are the VMContract types the daemon and CLI decode.
///
/// ```
/// GET  /vm                 state, vCPUs, memory, boot path          200 VMInfo
/// GET  /vm/stats           exits (with the top reasons), CPU, RSS   200 VMStats
/// GET  /vm/vcpus           each vCPU: thread, mode, RIP, MP state, pending events, LAPIC timer   200 [VCPUReport]
/// PUT  /vm/pause           park every vCPU (consistent point)       204
/// PUT  /vm/resume                                                   204
/// PUT  /vm/stop            hard stop (like pulling the plug)        204
/// PUT  /vm/shutdown        ACPI power button (guest shuts down)     202 PowerButtonResult
/// PUT  /vm/snapshot        {"path": F, "then": "keep"|"stop"}       200 SnapshotResult
/// GET  /vm/snapshot/progress  phase, RAM bytes done / total            200 SnapshotProgress
/// PUT  /vm/migrate         {"destination": "tcp:H:P"|"unix:PATH", "max_downtime_ms", "bandwidth_mibps",
///                           "auto_converge", "max_rounds"}: starts a live migration   202 MigrationProgress
/// GET  /vm/migration       phase, rounds, RAM sent/remaining, dirty rate, downtime   200 MigrationProgress
/// PUT  /vm/migrate/cancel  cancel before the switch-over (the VM stays here)      200 MigrationProgress
/// PUT  /vm/migrate/postcopy  switch to post-copy at the next round              200 MigrationProgress
/// GET  /console            recent serial output (bounded ring)      200 bytes
/// GET  /console?follow=1   recent output, then live as it comes     200 chunked
/// POST /console/input      typed into hvc0 or COM1, flow-controlled 200 ConsoleInputResult
/// ```
/// Errors are `ControlError` JSON with 400/404/405/409/500.
public struct ControlAPI: Sendable {
    public struct Response: Sendable, Equatable {
        public var status: Int
        public var body: [UInt8]
        public var contentType: String
        /// Keep the connection streaming console output after `body`.
        public var followConsole = false

        static func json(_ status: Int, _ object: some Encodable) -> Response {
            let data = (try? ContractJSON.encode(object)) ?? Array("{}".utf8)
            return Response(status: status, body: data + [0x0A], contentType: "application/json")
        }

        static func error(_ status: Int, _ message: String) -> Response { json(status, ControlError(error: message)) }
        static let noContent = Response(status: 204, body: [], contentType: "application/json")
    }

    /// How many reasons /vm/stats lists (the rest are in `exits`).
    static let listedExitReasons = 20

    let session: VMSession

    public init(session: VMSession) {
        self.session = session
    }

    var console: ConsoleLog { session.console }

    /// Handles one request. May block (pause waits for every vCPU to park, a snapshot writes guest
    /// RAM): call it off any event loop.
    public func handle(method: String, uri: String, body: [UInt8] = []) -> Response {
        let (path, query) = split(uri)
        guard let route = ControlRoute(rawValue: path) else { return .error(404, "no such resource: \(path)") }
        guard route.method == method else { return .error(405, "\(method) is not allowed on \(path) (use \(route.method))") }
        if route == .snapshotProgress {
            // Answered while a snapshot holds the session (and after a save has stopped the VM).
            return .json(200, session.snapshotProgress)
        }
        if route == .migration {
            // Answered during and after a migration (the source stops once it is over).
            return .json(200, session.migrationProgress)
        }
        if route == .console {
            var response = Response(status: 200, body: console.recent(), contentType: "application/octet-stream")
            response.followConsole = query["follow"] == "1"
            return response
        }
        guard let machine = session.machine else { return .error(409, "the VM is being restarted; try again") }
        switch route {
        case .info:
            return .json(200, VMInfo(state: machine.runState.rawValue, vcpus: machine.config.cpus,
                                     memoryBytes: machine.config.memorySize, boot: machine.bootDescription,
                                     cmdline: machine.effectiveCmdline, hostProfile: machine.profile.kind.rawValue,
                                     outcome: machine.outcome?.description, powerButtonEnabled: machine.powerButtonEnabled,
                                     powerButtonPending: machine.powerButtonPending, restoredFrom: machine.restoredFrom,
                                     migratedFrom: machine.migratedFrom))
        case .stats:
            // Reasons first: each exit is counted in the total before its reason, so the total read
            // after them is never below what they add up to.
            let reasons = machine.exitReasons
            return .json(200, Self.stats(exits: machine.exitCount, exitReasons: reasons, devices: machine.deviceStatistics))
        case .vcpus:
            do { return .json(200, try session.vcpuReports()) } catch { return .error(409, "\(error)") }
        case .pause:
            guard machine.runState == .running || machine.runState == .paused else {
                return .error(409, "cannot pause a VM that is \(machine.runState.rawValue)")
            }
            do { try session.pause() } catch { return .error(500, "\(error)") }
            return .noContent
        case .resume:
            guard machine.runState != .stopped else { return .error(409, "cannot resume a stopped VM") }
            do { try session.resume() } catch { return .error(409, "\(error)") }
            return .noContent
        case .snapshot:
            let request: SnapshotRequest
            do { request = try ContractJSON.decode(SnapshotRequest.self, from: body) } catch {
                return .error(400, "expected {\"path\": \"FILE\", \"then\": \"keep\" or \"stop\"}")
            }
            guard request.path.hasPrefix("/") else { return .error(400, "the snapshot path must be absolute: \(request.path)") }
            do {
                return .json(200, try session.snapshot(request))
            } catch let error as SessionError {
                return .error(409, error.description)
            } catch {
                return .error(500, "snapshot failed: \(error)")
            }
        case .migrate:
            let request: MigrationRequest
            do { request = try ContractJSON.decode(MigrationRequest.self, from: body) } catch {
                return .error(400, "expected {\"destination\": \"tcp:HOST:PORT\" or \"unix:PATH\"} (and optionally max_downtime_ms, bandwidth_mibps, auto_converge, max_rounds)")
            }
            do {
                return .json(202, try session.migrate(request))
            } catch let error as SessionError {
                if case .busy = error { return .error(409, error.description) }
                return .error(400, error.description)
            } catch {
                return .error(400, "\(error)")
            }
        case .migratePostcopy:
            do { return .json(200, try session.switchMigrationToPostcopy()) } catch { return .error(409, "\(error)") }
        case .migrateCancel:
            do { return .json(200, try session.cancelMigration()) } catch { return .error(409, "\(error)") }
        case .consoleInput:
            guard machine.runState == .running || machine.runState == .paused else {
                return .error(409, "cannot type into a VM that is \(machine.runState.rawValue)")
            }
            return .json(200, ConsoleInputResult(accepted: machine.typeConsoleInput(body)))
        case .stop:
            session.requestStop()
            return .noContent
        case .shutdown:
            guard machine.runState == .running else {
                return .error(409, "cannot shut down a VM that is \(machine.runState.rawValue) (resume it first)")
            }
            // Like pressing the button on a PC: the guest decides; the caller watches the state.
            let listening = machine.powerButtonEnabled
            machine.pressPowerButton()
            return .json(202, PowerButtonResult(pressed: true, guestListening: listening))
        case .console, .snapshotProgress, .migration:
            return .error(500, "unreachable")
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
    static func stats(exits: UInt64, exitReasons: [ExitReason: UInt64], devices: DeviceStatistics) -> VMStats {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let pages = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        return VMStats(exits: exits,
                       exitReasons: exitReasons.top(listedExitReasons).map { ExitCount(reason: $0.reason.description, count: $0.count) },
                       cpuUserSeconds: Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6,
                       cpuSystemSeconds: Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6,
                       rssBytes: pages * UInt64(sysconf(Int32(_SC_PAGESIZE))), devices: devices)
    }
}
