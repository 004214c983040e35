import VMContract
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// virsh migrate between daemons (libvirt's peer-to-peer migration), the source's side. This
// daemon asks the destination daemon to prepare the VM (it defines it from this definition and
// starts a `vireo run --incoming`, answering where that listens), asks its own VMM to migrate
// there (`PUT /vm/migrate`), and follows the VMM's progress (`GET /vm/migration`) on a thread of
// its own, so the VM's queue stays free for destroy and reads. The VM shows `running` during
// pre-copy and `paused (migrating)` once stopped for the switch-over (or for the whole of a
// non-live migration); once the destination runs the guest, this process exits and the VM here
// is `shut off (migrated)`. A failure or cancel before that leaves it as it was, and the
// destination removes what it made.

/// One migration of a VM to another daemon, as `GET /v1/vms/{name}/migration` reports it: the
/// VMM's figures as last read, in the daemon's phases (setup also covers preparing the
/// destination; completed only once the destination runs the guest and this side let go of it).
final class MigrationJob: Sendable {
    let body: MigrateBody

    private struct State {
        var progress: MigrationProgress
        var cancelRequested = false
    }

    private let state: Mutex<State>
    private let started = DispatchTime.now().uptimeNanoseconds

    init(body: MigrateBody) {
        self.body = body
        state = Mutex(State(progress: MigrationProgress(phase: .setup, destination: body.destination)))
    }

    var progress: MigrationProgress { state.withLock { $0.progress } }
    var isActive: Bool { progress.isActive }

    var cancelRequested: Bool { state.withLock { $0.cancelRequested } }
    func requestCancel() { state.withLock { $0.cancelRequested = true } }

    /// The VMM's figures, in `phase` (default: the VMM's own), timed from the daemon's request.
    func record(_ vmm: MigrationProgress, phase: MigrationProgress.Phase? = nil) {
        state.withLock { state in
            var progress = vmm
            progress.destination = body.destination
            progress.phase = phase ?? vmm.phase
            progress.elapsedMilliseconds = elapsedMilliseconds
            state.progress = progress
        }
    }

    func end(_ phase: MigrationProgress.Phase, error: String?) {
        state.withLock { state in
            state.progress.phase = phase
            state.progress.error = error
            state.progress.elapsedMilliseconds = elapsedMilliseconds
        }
    }

    private var elapsedMilliseconds: Double { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6 }
}

/// What the thread following a migration needs to finish it.
private struct MigrationContext: Sendable {
    let job: MigrationJob
    let running: VMProcess
    let destination: HTTPClient
    /// The VM's state before the migration, put back if it fails.
    let before: VMStateRecord
    /// This daemon paused the guest (non-live) and must resume it if the migration fails.
    let pausedHere: Bool
}

extension VMController {
    /// How long the destination has to report the guest running once the VMM has handed it over.
    static let arrivalTimeout = 30.0
    /// How long a cancel waits for the migration to end.
    static let cancelTimeout = 60.0

    /// Lifecycle operations other than destroy wait for no migration: they are refused.
    func refuseDuringMigration() throws {
        if let job = migration, job.isActive {
            throw APIError(409, "domain '\(name)' is being migrated to \(job.body.destination); cancel it first with 'vireo migrate --cancel \(name)'")
        }
        if incoming != nil {
            throw APIError(409, "domain '\(name)' is arriving by migration and does not run here yet (destroy aborts the migration)")
        }
    }

    /// Starts migrating the VM (on its queue): the destination is prepared and the VMM's
    /// migration started before this returns; a thread follows it to its end.
    func migrate(_ body: MigrateBody) throws -> MigrationProgress {
        guard let running = process else { throw APIError(409, "domain '\(name)' is not running") }
        try refuseDuringMigration()
        guard let endpoint = Endpoint(daemonURI: body.destination) else {
            throw APIError(400, "destination: '\(sanitized(String(body.destination.prefix(256))))' is not unix:///path/to/daemon.sock or http://host:port",
                           field: "destination")
        }
        if case .unix(let path) = endpoint, let target = canonicalPath(path), target == canonicalPath(environment.socketPath) {
            throw APIError(400, "destination: \(body.destination) is this daemon", field: "destination")
        }
        if let problem = body.vmmRequest(to: "unix:/").problem { throw APIError(400, problem) }
        let record = try store.record(named: name)
        let before = try store.state(named: name)
        let job = MigrationJob(body: body)
        migration = job
        let destination = HTTPClient(endpoint: endpoint, token: body.destinationToken, timeoutSeconds: 60)
        var prepared = false
        var pausedHere = false
        do {
            let answer = try prepareDestination(destination, definition: record.definition, keepPaused: before.state == .paused)
            prepared = true
            try checkCancelled(job)
            if !body.live && before.state != .paused {
                try pauseForMigration(running)
                pausedHere = true
            }
            try checkCancelled(job)
            let request = body.vmmRequest(to: answer.connectAddress(reachedVia: endpoint))
            let response = try controlCall(running, .migrate, body: try ContractJSON.encode(request))
            guard response.status == 202 else {
                throw APIError(response.status == 409 ? 409 : 502, "domain '\(name)': the VMM refused the migration: \(response.errorMessage)")
            }
            if let started = try? ContractJSON.decode(MigrationProgress.self, from: response.body) { job.record(started) }
        } catch {
            let failure = APIError.from(error)
            if prepared { abortDestination(destination) }
            if pausedHere { putBackRunState(running, before: before, resume: true) }
            job.end(job.cancelRequested ? .cancelled : .failed, error: failure.message)
            throw failure
        }
        environment.log("VM '\(name)': migrating to \(body.destination)\(body.live ? " (live)" : "")")
        let context = MigrationContext(job: job, running: running, destination: destination, before: before, pausedHere: pausedHere)
        let thread = Thread { [self] in follow(context) }
        thread.name = "vireo-migrate-\(name)"
        thread.start()
        return job.progress
    }

    /// `POST /v1/vms/{name}/migrate/cancel` (not on the queue: the migration may hold it):
    /// answers once the migration has ended, cancelled.
    func cancelMigration() throws -> MigrationProgress {
        guard let job = migration, job.isActive else { throw APIError(409, "no migration of domain '\(name)' is under way") }
        job.requestCancel()
        let deadline = Date().addingTimeInterval(Self.cancelTimeout)
        while job.isActive && Date() < deadline { usleep(20_000) }
        let progress = job.progress
        switch progress.phase {
        case .cancelled, .failed: return progress
        case .completed: throw APIError(409, "too late: domain '\(name)' already runs on \(job.body.destination)")
        default: throw APIError(500, "the migration of domain '\(name)' did not end within \(Int(Self.cancelTimeout))s of the cancel")
        }
    }

    private func checkCancelled(_ job: MigrationJob) throws {
        if job.cancelRequested { throw APIError(409, "the migration of domain '\(name)' was cancelled") }
    }

    /// libvirt's Prepare: the destination defines the VM and starts its `vireo run --incoming`.
    private func prepareDestination(_ destination: HTTPClient, definition: VMDefinition, keepPaused: Bool) throws -> IncomingMigrationAnswer {
        let body = try JSONEncoder().encode(IncomingMigrationBody(definition: definition, keepPaused: keepPaused))
        let response: HTTPResponse
        do {
            response = try destination.request("POST", "/v1/migrations/incoming", body: Array(body), contentType: "application/json")
        } catch {
            throw APIError(502, "cannot reach the destination daemon: \(error)")
        }
        guard response.status == 201, let answer = try? JSONDecoder().decode(IncomingMigrationAnswer.self, from: Data(response.body)) else {
            let status = response.status == 400 || response.status == 409 ? response.status : 502
            throw APIError(status, "the destination refused domain '\(name)': \(response.errorMessage)")
        }
        return answer
    }

    /// The destination ends its waiting process and removes what the migration made; true once
    /// it is sure not to run the guest (the VM is gone there, or shut off).
    @discardableResult
    private func abortDestination(_ destination: HTTPClient) -> Bool {
        do {
            let response = try destination.request("DELETE", "/v1/migrations/incoming/\(name)")
            // 409 or 404: nothing pending any more (its process ended on the broken stream, and
            // the VM went with it, or it arrived after all: the state says which).
            if !(200..<300).contains(response.status) && response.status != 409 && response.status != 404 {
                environment.log("VM '\(name)': the destination did not abort its incoming migration: \(response.errorMessage)")
            }
            // A process that ended by itself may still be being cleaned up there: a moment.
            for _ in 0..<100 {
                let state = try destination.request("GET", "/v1/vms/\(name)/state")
                if state.status == 404 { return true }
                let body = try JSONDecoder().decode(VMStateBody.self, from: Data(state.body))
                if VMRunState(rawValue: body.state)?.isActive == false { return true }
                if body.reason != VMStateReason.migrating.rawValue { return false }
                usleep(50_000)
            }
            return false
        } catch {
            environment.log("VM '\(name)': cannot make sure the destination gave up its incoming migration: \(error)")
            return false
        }
    }

    /// A non-live migration copies a stopped guest: paused (migrating) until it runs there.
    private func pauseForMigration(_ running: VMProcess) throws {
        let response = try controlCall(running, .pause)
        guard (200..<300).contains(response.status) else {
            throw APIError(409, "domain '\(name)': cannot pause it for the migration: \(response.errorMessage)")
        }
        try store.setActive(name: name, state: .paused, reason: .migrating, process: running.identity)
        environment.events.publish(.suspended, name: name, reason: .migrating)
    }

    /// The migration failed: the VM is recorded as it was before (resumed first if this daemon
    /// paused it), unless its process is gone meanwhile.
    private func putBackRunState(_ running: VMProcess, before: VMStateRecord, resume: Bool) {
        if resume, let response = try? controlCall(running, .resume), !(200..<300).contains(response.status) {
            environment.log("VM '\(name)': cannot resume it after the failed migration: \(response.errorMessage)")
        }
        guard process === running else { return }
        try? store.setActive(name: name, state: before.state, reason: before.reason, process: running.identity)
        if before.state == .running { environment.events.publish(.resumed, name: name, reason: before.reason) }
    }

    // MARK: following the VMM's migration (its own thread)

    private func follow(_ context: MigrationContext) {
        let running = context.running, job = context.job
        var cancelSent = false
        var shownStopped = context.pausedHere
        var last: MigrationProgress?
        var ending: MigrationProgress?
        while ending == nil {
            // Sent from here, so a cancel that came while the VMM's migration was being started
            // is not lost.
            if job.cancelRequested && !cancelSent {
                cancelSent = true
                _ = try? controlCall(running, .migrateCancel)
            }
            if running.waitForExit(seconds: 0.05) {
                ending = Self.ending(ofExited: running, last: last)
                break
            }
            guard let progress = running.control.answer(MigrationProgress.self, to: .migration) else { continue }
            last = progress
            switch progress.phase {
            case .completed, .failed, .cancelled:
                ending = progress
            case .stopAndCopy:
                job.record(progress)
                if !shownStopped {
                    shownStopped = true
                    queue.sync { showStoppedForSwitchOver(running) }
                }
            case .none, .setup, .precopy, .postcopy:
                job.record(progress)
            }
        }
        guard let ending else { return }
        queue.sync { finish(context, ending: ending, shownStopped: shownStopped) }
    }

    /// A VMM that exited before its progress said how the migration ended: its status file does.
    private static func ending(ofExited running: VMProcess, last: MigrationProgress?) -> MigrationProgress {
        var progress = last ?? MigrationProgress(phase: .setup)
        let status = RunStatus.read(from: running.identity.statusFile)
        if status?.outcome == .migrated {
            // The VMM's own last word, downtime included, when it wrote one.
            if let final = status?.migration { progress = final }
            progress.phase = .completed
        } else {
            progress.phase = .failed
            progress.error = "the VMM ended during the migration (\(status?.detail ?? "no status"))"
        }
        return progress
    }

    private func showStoppedForSwitchOver(_ running: VMProcess) {
        guard process === running else { return }
        try? store.setActive(name: name, state: .paused, reason: .migrating, process: running.identity)
        environment.events.publish(.suspended, name: name, reason: .migrating)
    }

    /// On the VM's queue, once the VMM's migration has ended.
    private func finish(_ context: MigrationContext, ending: MigrationProgress, shownStopped: Bool) {
        let running = context.running, job = context.job
        switch ending.phase {
        case .completed:
            handOver(context, final: ending)
        case .failed where ending.downtimeMilliseconds != nil && !running.hasExited:
            // Everything was sent but the destination's answer was lost: the VMM holds the guest
            // paused. The destination daemon knows whether it runs it there; only once it is sure
            // not to may the guest run on here.
            if waitForArrival(context.destination, seconds: 10) {
                environment.log("VM '\(name)': the destination runs the guest although its answer was lost; stopping it here")
                try? stop(running, intent: .migrated)
                handOver(context, final: ending)
            } else if abortDestination(context.destination) {
                putBackRunState(running, before: context.before, resume: true)
                job.record(ending)
            } else {
                showStoppedForSwitchOver(running)
                var held = ending
                held.error = (ending.error ?? "") + "; the destination daemon could not confirm it does not run the guest: it stays paused (migrating) here"
                job.record(held)
            }
        default:
            abortDestination(context.destination)
            if !running.hasExited && (shownStopped || context.pausedHere) {
                putBackRunState(running, before: context.before, resume: context.pausedHere)
            }
            job.record(ending)
            environment.log("VM '\(name)': migration to \(context.job.body.destination) \(ending.phase.rawValue): \(ending.error ?? "")")
        }
    }

    /// The destination runs the guest: this VMM exits (recorded shut off (migrated)), and the
    /// definition goes with --undefine-source.
    private func handOver(_ context: MigrationContext, final: MigrationProgress) {
        let running = context.running, job = context.job
        running.intent = .migrated
        job.record(final, phase: .stopAndCopy)
        let confirmed = waitForArrival(context.destination, seconds: Self.arrivalTimeout)
        if !running.waitForExit(seconds: Self.stopTimeout) {
            environment.log("VM '\(name)' (pid \(running.identity.pid)) migrated but did not exit in \(Int(Self.stopTimeout))s; killing it")
            try? kill(running, intent: .migrated)
        }
        if job.body.undefineSource {
            do { try undefine() } catch { environment.log("VM '\(name)': migrated, but cannot undefine it here: \(error)") }
        }
        job.record(final, phase: .completed)
        if !confirmed {
            job.end(.completed, error: "the VMM handed the guest over, but the destination did not report it running within \(Int(Self.arrivalTimeout))s")
        }
        environment.log("VM '\(name)' migrated to \(job.body.destination)"
                        + (final.downtimeMilliseconds.map { String(format: " (downtime %.1f ms)", $0) } ?? ""))
    }

    /// Whether the destination reports the VM as arrived (running, or paused by its user), polled
    /// until `seconds` have passed or it says the VM is not there or not active.
    private func waitForArrival(_ destination: HTTPClient, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let response = try? destination.request("GET", "/v1/vms/\(name)/state") {
                if response.status == 404 { return false }
                if response.status == 200, let state = try? JSONDecoder().decode(VMStateBody.self, from: Data(response.body)) {
                    if state.reason != VMStateReason.migrating.rawValue && (state.state == "running" || state.state == "paused") { return true }
                    if VMRunState(rawValue: state.state)?.isActive != true { return false }
                }
            }
            usleep(50_000)
        }
        return false
    }
}
