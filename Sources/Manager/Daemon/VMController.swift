import VMContract
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What every VM controller shares: the store, the event stream, where files go, what to run.
struct DaemonEnvironment: Sendable {
    let store: StateStore
    let events: EventBus
    let stateDirectory: String
    /// The `vireo` executable that VMs run as (`vireo run ...`).
    let executable: String
    /// The daemon's own API socket (a migration to it is refused: it would be to itself).
    let socketPath: String
    /// Where a VM arriving by migration over TCP listens: `tcp:HOST:PORT` (port 0: any).
    let migrationListen: String
    let restartBackoff: RestartBackoff
    /// `vireo daemon --confine-storage`.
    var confineStorage = false
    /// The host's cgroups for VM processes, or why there are none (VMController+Cgroup.swift).
    var cgroups: Result<VMCgroups, CgroupError> = .failure(.unavailable(reason: "not configured"))
    let log: @Sendable (String) -> Void

    /// With `--confine-storage`: refuses a definition naming a file outside the started pools
    /// (`resolve`: at start, on resolved paths and with every backing file).
    func checkStorage(_ definition: VMDefinition, resolve: Bool) throws {
        guard confineStorage else { return }
        let pools = try store.pools().filter(\.active).map(\.definition)
        try StorageConfinement.check(definition, pools: pools, resolve: resolve)
    }
}

/// The control plane of one VM. Every lifecycle operation runs on the VM's own serial queue, so
/// concurrent requests on one VM happen one after another (no double start, no lost state),
/// while different VMs proceed in parallel. The process watcher records exits under `state`'s
/// lock, never on the queue, so an operation may wait on the queue for an exit to be recorded.
final class VMController: Sendable {
    let name: String
    let queue: DispatchQueue
    let environment: DaemonEnvironment

    private struct State {
        var process: VMProcess?
        var migration: MigrationJob?
        var incoming: IncomingArrival?
        /// When the current (or last) process was started, and how many times in a row one ended
        /// within the restart window of its start (RestartBackoff).
        var startedAt: Date?
        var quickEnds = 0
        /// The automatic restart waiting for its backoff; any start or undefine meanwhile cancels it.
        var pendingRestart: UUID?
    }

    private let state = Mutex(State())

    /// How long a started VM has to open its control socket before the start counts as failed.
    static let startTimeout = 15.0
    static let stopTimeout = 5.0
    /// A restoring VMM opens and checks the snapshot before its control socket opens.
    static let restoreTimeout = Double(SnapshotFileBody.restoreTimeoutSeconds)

    init(name: String, environment: DaemonEnvironment) {
        self.name = name
        self.environment = environment
        queue = DispatchQueue(label: "vireo.vm.\(name)")
    }

    var process: VMProcess? {
        state.withLock { $0.process }
    }

    /// The current or last migration of this VM to another daemon.
    var migration: MigrationJob? {
        get { state.withLock { $0.migration } }
        set { state.withLock { $0.migration = newValue } }
    }

    /// The VM's process while it is being received by migration (until the guest runs here).
    var incoming: IncomingArrival? {
        state.withLock { $0.incoming }
    }

    /// Makes `arrival` the pending incoming migration, or (nil) ends it; false when `expected`
    /// is not the pending one any more (the process ended, or it arrived, meanwhile).
    @discardableResult
    func replaceIncoming(_ expected: IncomingArrival?, with arrival: IncomingArrival?) -> Bool {
        state.withLock { state in
            guard state.incoming === expected else { return false }
            state.incoming = arrival
            return true
        }
    }

    var paths: VMPaths { VMPaths(stateDirectory: environment.stateDirectory, name: name) }
    var store: StateStore { environment.store }

    /// Runs `operation` on the VM's queue and hands its result to `completion`.
    func enqueue<T: Sendable>(_ operation: @escaping @Sendable () throws -> T,
                              completion: @escaping @Sendable (Result<T, APIError>) -> Void) {
        queue.async {
            do { completion(.success(try operation())) } catch { completion(.failure(APIError.from(error))) }
        }
    }

    // MARK: operations (call on `queue`)

    /// Boots the definition, or resumes the VM's managed save image when it has one (unless
    /// `forceBoot`, which discards the image).
    func start(forceBoot: Bool = false) throws -> ActionResult {
        let record = try store.record(named: name)
        guard process == nil else { throw APIError(409, "domain '\(name)' is already active") }
        if let image = try managedSaveImage() {
            guard forceBoot else { return try startFromManagedSave(record.definition, image: image) }
            try discardManagedSave(image)
        }
        try launch(record.definition)
        environment.events.publish(.started, name: name, reason: .booted)
        return ActionResult(message: "Domain '\(name)' started", state: VMRunState.running.rawValue, reason: VMStateReason.booted.rawValue)
    }

    func destroy() throws -> ActionResult {
        guard let running = process else {
            // A VM waiting to be restarted after it crashed: destroy keeps it down.
            guard cancelPendingRestart() else { throw APIError(409, "domain '\(name)' is not running") }
            let state = try store.state(named: name)
            return ActionResult(message: "Domain '\(name)' destroyed (its automatic restart is cancelled)",
                                state: state.state.rawValue, reason: state.reason.rawValue)
        }
        if incoming?.process === running {
            // Still waiting for its migration: no control API to ask; ending it aborts the migration.
            try kill(running, intent: .destroy)
            return ActionResult(message: "Domain '\(name)' destroyed", state: VMRunState.shutoff.rawValue,
                                reason: VMStateReason.destroyed.rawValue)
        }
        try stop(running, intent: .destroy)
        return ActionResult(message: "Domain '\(name)' destroyed", state: VMRunState.shutoff.rawValue, reason: VMStateReason.destroyed.rawValue)
    }

    /// Presses the guest's ACPI power button through the control API. A VMM without one answers
    /// 501; that is passed on with the way out (destroy), as virsh does when a guest cannot be
    /// asked.
    func shutdown() throws -> ActionResult {
        guard let running = process else { throw APIError(409, "domain '\(name)' is not running") }
        let response = try controlCall(running, .shutdown)
        if response.status == 501 {
            throw APIError(501, "graceful shutdown of domain '\(name)' is not supported by this VMM yet (no ACPI power button); use 'vireo destroy \(name)' to stop it")
        }
        guard (200..<300).contains(response.status) else {
            // 409 from the VMM: not in a state to be asked (paused); anything else is its failure.
            throw APIError(response.status == 409 ? 409 : 502, "domain '\(name)': shutdown failed: \(response.errorMessage)")
        }
        running.intent = .shutdown
        // The VMM says whether the guest enabled power-button events; one that did not (no ACPI
        // driver) will likely ignore the press, and the user should know why nothing happens.
        let pressed = try? ContractJSON.decode(PowerButtonResult.self, from: response.body)
        var message = "Domain '\(name)' is being shutdown"
        if pressed?.guestListening == false {
            message += " (the guest has not enabled ACPI power-button events and may ignore it; 'vireo destroy \(name)' stops it at once)"
        }
        return ActionResult(message: message, state: VMRunState.running.rawValue, reason: VMStateReason.booted.rawValue)
    }

    /// A cold reboot: the process is stopped and a new one boots from the current definition.
    /// (The guest is not asked first; an ACPI reboot needs the power button, as shutdown does.)
    func reboot() throws -> ActionResult {
        guard let running = process else { throw APIError(409, "domain '\(name)' is not running") }
        try stop(running, intent: .reboot)
        do {
            try launch(try store.record(named: name).definition)
        } catch {
            // The old process is gone and no new one runs: record that, not the stale pid.
            if process == nil {
                try? store.setInactive(name: name, state: .shutoff, reason: .failed)
                environment.events.publish(.stopped, name: name, reason: .failed)
            }
            throw error
        }
        environment.events.publish(.rebooted, name: name, reason: .booted)
        return ActionResult(message: "Domain '\(name)' is being rebooted", state: VMRunState.running.rawValue, reason: VMStateReason.booted.rawValue)
    }

    func suspend() throws -> ActionResult {
        try changeRunState(verb: "suspend", route: .pause, to: .paused, reason: .user, event: .suspended,
                           message: "Domain '\(name)' suspended")
    }

    func resume() throws -> ActionResult {
        try changeRunState(verb: "resume", route: .resume, to: .running, reason: .unpaused, event: .resumed,
                           message: "Domain '\(name)' resumed")
    }

    /// Pause and resume: one control-socket call, then the new state recorded and announced.
    private func changeRunState(verb: String, route: ControlRoute, to state: VMRunState, reason: VMStateReason,
                                event: LifecycleEvent.Kind, message: String) throws -> ActionResult {
        guard let running = process else { throw APIError(409, "domain '\(name)' is not running") }
        let response = try controlCall(running, route)
        guard (200..<300).contains(response.status) else {
            throw APIError(409, "domain '\(name)': \(verb) failed: \(response.errorMessage)")
        }
        try store.setActive(name: name, state: state, reason: reason, process: running.identity)
        environment.events.publish(event, name: name, reason: reason)
        return ActionResult(message: message, state: state.rawValue, reason: reason.rawValue)
    }

    /// Removes the definition and the VM's directory; a managed save image (the VM's saved
    /// state) goes only when asked, as virsh's `undefine --managed-save`.
    func undefine(removingManagedSave: Bool = false) throws {
        guard process == nil else { throw APIError(409, "domain '\(name)' is active; destroy it first") }
        if !removingManagedSave, try managedSaveImage() != nil {
            throw APIError(409, "domain '\(name)' has a managed save image; 'vireo start \(name)' resumes it, 'vireo undefine --managed-save \(name)' removes it with the definition")
        }
        _ = cancelPendingRestart()
        try store.undefine(name: name)
        // Logs, sockets and the status file; disk images are the user's and are never touched.
        try? FileManager.default.removeItem(atPath: paths.directory)
        environment.events.publish(.undefined, name: name)
    }

    // MARK: process handling

    /// Starts a `vireo run` for the definition (or, with `restore`, for the VM saved in that file)
    /// and returns once its control API answers.
    func launch(_ definition: VMDefinition, restore: RestoreSource? = nil, reason: VMStateReason = .booted) throws {
        let paths = self.paths
        state.withLock { state in
            state.startedAt = Date()
            state.pendingRestart = nil
        }
        let failed = restore.map { "failed to restore domain '\(name)' from \($0.path)" } ?? "failed to start domain '\(name)'"
        try environment.checkStorage(definition, resolve: true)
        let running = try spawn(VMLaunch.spec(for: definition, paths: paths, restore: restore), definition: definition, failed: failed)
        try adopt(running, state: .running, reason: reason)
        // Started means the VMM answers on its control socket; a VM that fails first is reported
        // with the last lines its process wrote.
        let timeout = restore == nil ? Self.startTimeout : Self.restoreTimeout
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if running.waitForExit(seconds: 0.05) {
                var why = lastLines(of: paths.processLog, count: 2)
                // A VMM the OOM killer ended wrote nothing; the daemon's status says what happened.
                if let status = RunStatus.read(from: paths.statusFile), status.detail.hasPrefix(Self.oomKilled) { why = status.detail }
                throw APIError(500, "\(failed): \(why.isEmpty ? "vireo run exited" : why)")
            }
            if let info = running.control.answer(VMInfo.self, to: .info) {
                // The VMM joins its group before it maps guest RAM, or refuses to run; checked
                // here too, since a limit that does not apply must not pass for one that does.
                if let group = running.cgroup, !group.holds(pid: running.identity.pid) {
                    guard definition.asksForResourceLimits else {
                        environment.log("VM '\(name)' (pid \(running.identity.pid)) is not in its cgroup \(group.path); it runs without one")
                        running.hasAnswered = true
                        return
                    }
                    running.intent = .destroy
                    running.kill()
                    _ = running.waitForExit(seconds: Self.stopTimeout)
                    throw APIError(500, "\(failed): its process is not in its cgroup \(group.path), so its limits would not apply")
                }
                running.hasAnswered = true
                // A VM saved while paused is restored paused (the VMM keeps its vCPUs parked).
                if restore != nil, info.state == "paused" {
                    try store.setActive(name: name, state: .paused, reason: reason, process: running.identity)
                }
                return
            }
        }
        running.intent = .destroy
        running.kill()
        _ = running.waitForExit(seconds: Self.stopTimeout)
        throw APIError(500, "\(failed): its control socket did not answer within \(Int(timeout))s")
    }

    /// Writes `spec` to the VM's directory and starts `vireo run` with it; the process is not
    /// adopted (recorded and watched) yet.
    func spawn(_ spec: LaunchSpec, definition: VMDefinition, failed: String) throws -> VMProcess {
        let paths = self.paths
        var spec = spec
        // sockaddr_un holds 107 bytes of path: refuse here with the reason, not in the VM's log.
        guard paths.controlSocket.utf8.count <= 107 else {
            throw APIError(500, "\(failed): control socket path \(paths.controlSocket) is longer than 107 bytes; use a shorter --state-dir")
        }
        do {
            try FileManager.default.createDirectory(atPath: paths.directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw APIError(500, "cannot create \(paths.directory): \(error.localizedDescription)")
        }
        unlink(paths.statusFile)
        VMLaunch.rotate(paths.processLog, above: VMLaunch.processLogLimit)
        let cgroup = try placeInCgroup(definition, failed: failed)
        spec.cgroupProcs = cgroup?.procsFiles
        let pid: Int32
        do {
            try VMLaunch.write(spec, to: paths.launchSpec)
            pid = try spawnDetached(executable: environment.executable,
                                    arguments: VMLaunch.arguments(specFile: paths.launchSpec), logPath: paths.processLog)
        } catch {
            if let cgroup, case .success(let cgroups) = environment.cgroups { cgroups.remove(cgroup) }
            throw APIError(500, "\(failed): \(error)")
        }
        // The child cannot be reaped before the watcher exists, so its /proc entry is there.
        let ticks = ProcessSnapshot.read(pid: pid)?.startTicks ?? 0
        let identity = ProcessIdentity(pid: pid, startTicks: ticks, controlSocket: paths.controlSocket, statusFile: paths.statusFile)
        return VMProcess(identity: identity, isChild: true, cgroup: cgroup)
    }

    /// Makes `running` the VM's process: records it and starts watching for its end.
    func adopt(_ running: VMProcess, state: VMRunState, reason: VMStateReason) throws {
        self.state.withLock { $0.process = running }
        do {
            try store.setActive(name: name, state: state, reason: reason, process: running.identity)
        } catch {
            running.intent = .destroy
            running.kill()
            throw error
        }
        running.watch { [weak self] waitStatus in self?.recordExit(of: running, waitStatus: waitStatus) }
    }

    /// Runs on the watcher thread when the process is gone.
    private func recordExit(of running: VMProcess, waitStatus: Int32?) {
        // First, while the VM still counts as active: no new start can make the group anew
        // before this one is gone (and its OOM counter read).
        // A VMM its seccomp filter stopped wrote no status file: its report is in its log.
        let status = releaseCgroup(statusFile: running.identity.statusFile, waitStatus: waitStatus)
            ?? RunStatus.seccompViolation(waitStatus: waitStatus, log: paths.processLog)
        let arrival = state.withLock { state -> IncomingArrival? in
            if state.process === running { state.process = nil }
            let arrival = state.incoming?.process === running ? state.incoming : nil
            if arrival != nil { state.incoming = nil }
            return arrival
        }
        let intent = running.intent
        if let arrival {
            // It never ran the guest here: what the migration made goes.
            incomingFailed(arrival, status: status)
            running.markExited()
            return
        }
        var reason = ExitClassifier.reason(intent: intent, status: status, waitStatus: waitStatus)
        if reason == .unknown { reason = .crashed }
        defer { running.markExited() }
        // A reboot starts the next process itself; the VM is never recorded as shut off.
        if intent == .reboot { return }
        // Decided before the VM is recorded shut off, so that a destroy which sees it shut off
        // finds the restart to cancel. A VMM that never came up would fail again at once:
        // restarting it would only loop.
        let restart = running.hasAnswered ? pendingRestart(after: reason) : nil
        do {
            if reason == .saved, let image = intent.savedImage {
                try store.setSaved(name: name, image: image)
            } else {
                try store.setInactive(name: name, state: .shutoff, reason: reason)
            }
        } catch {
            environment.log("VM '\(name)': cannot record its exit: \(error)")
        }
        environment.log("VM '\(name)' (pid \(running.identity.pid)) stopped: \(reason.rawValue)\(status.map { " (\($0.detail))" } ?? "")")
        environment.events.publish(.stopped, name: name, reason: reason)
        if let restart { schedule(restart) }
    }

    /// An automatic restart that is decided and waits for its backoff.
    private struct PendingRestart {
        let token: UUID
        let delay: Double
        let quickEnds: Int
    }

    /// libvirt's on_poweroff / on_crash = restart, with `RestartBackoff` for a VM that keeps
    /// ending soon after it starts: records the restart as pending (nil when none is asked for).
    private func pendingRestart(after reason: VMStateReason) -> PendingRestart? {
        guard let definition = try? store.record(named: name).definition else { return nil }
        let restart = (reason == .shutdown && definition.onPoweroff == .restart)
            || ((reason == .crashed || reason == .failed) && definition.onCrash == .restart)
        guard restart else { return nil }
        let backoff = environment.restartBackoff
        let token = UUID()
        return state.withLock { state in
            let ranFor = state.startedAt.map { Date().timeIntervalSince($0) } ?? .infinity
            state.quickEnds = ranFor < backoff.window ? state.quickEnds + 1 : 0
            state.pendingRestart = token
            return PendingRestart(token: token, delay: backoff.delay(afterQuickEnds: state.quickEnds), quickEnds: state.quickEnds)
        }
    }

    /// Starts the VM once the restart's backoff has passed, unless it was cancelled meanwhile.
    private func schedule(_ restart: PendingRestart) {
        let (token, delay) = (restart.token, restart.delay)
        if delay > 0 {
            environment.log("VM '\(name)' ended \(restart.quickEnds) time(s) in a row within \(Int(environment.restartBackoff.window))s of its start: restarting it in \(delay)s")
        }
        queue.asyncAfter(deadline: .now() + delay) { [self] in
            let current = state.withLock { $0.pendingRestart == token }
            // A start (by the user, or autostart) or an undefine came first.
            guard current else { return }
            do { _ = try start() } catch { environment.log("VM '\(name)': restart failed: \(error)") }
        }
    }

    /// Cancels an automatic restart that waits for its backoff; false when none was waiting.
    func cancelPendingRestart() -> Bool {
        state.withLock { state in
            defer { state.pendingRestart = nil }
            return state.pendingRestart != nil
        }
    }

    /// Asks the VMM to stop, then waits; a VMM that does not stop in time is killed.
    func stop(_ running: VMProcess, intent: StopIntent) throws {
        running.intent = intent
        _ = try? controlCall(running, .stop)
        if running.waitForExit(seconds: Self.stopTimeout) { return }
        environment.log("VM '\(name)' (pid \(running.identity.pid)) did not stop in \(Int(Self.stopTimeout))s; killing it")
        try kill(running, intent: intent)
    }

    /// SIGKILL, then waits until the exit has been recorded.
    func kill(_ running: VMProcess, intent: StopIntent) throws {
        running.intent = intent
        running.kill()
        guard running.waitForExit(seconds: Self.stopTimeout) else {
            throw APIError(500, "domain '\(name)' (pid \(running.identity.pid)) did not exit after SIGKILL")
        }
    }

    func controlCall(_ running: VMProcess, _ route: ControlRoute, body: [UInt8] = [], timeoutSeconds: Int = 5) throws -> HTTPResponse {
        do {
            return try running.control(timeoutSeconds: timeoutSeconds).call(route, body: body)
        } catch {
            throw APIError(502, "domain '\(name)': control socket \(running.identity.controlSocket): \(error)")
        }
    }
}
