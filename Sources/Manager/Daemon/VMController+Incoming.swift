import VMContract
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// The destination's side of a migration between daemons (libvirt's Prepare and Finish). The VM is
// defined from the source's definition, a `vireo run --incoming` waits for the stream, and the VM
// is `paused (migrating)` until its VMM answers with the guest running here: then `running
// (migrated)`. The VMM's control socket opens only once the whole machine has arrived, so that
// answer is the arrival. If the process ends before it (the stream broke, the source cancelled,
// the source daemon aborted it), what the migration made goes: the definition it added, or the
// one it replaced is put back.

/// A VM being received by migration: its process, and what to put back if it never arrives.
final class IncomingArrival: Sendable {
    /// What this daemon had under the name before: the same VM (same uuid), shut off — typically
    /// migrated away from here earlier and now coming back.
    struct Previous: Sendable {
        var definition: VMDefinition
        var state: VMRunState
        var reason: VMStateReason
    }

    let process: VMProcess
    /// nil: the migration defined the VM, and a failure undefines it.
    let previous: Previous?
    let keepPaused: Bool
    private let recordedFailure = Mutex<String?>(nil)

    init(process: VMProcess, previous: Previous?, keepPaused: Bool) {
        self.process = process
        self.previous = previous
        self.keepPaused = keepPaused
    }

    /// Why the process ended before the guest ran here (its log may be gone with the VM's directory).
    var failure: String? {
        get { recordedFailure.withLock { $0 } }
        set { recordedFailure.withLock { $0 = newValue } }
    }
}

extension VMController {
    /// How long a `vireo run --incoming` has to say where it listens.
    static let incomingListenTimeout = 15.0
    /// What `vireo run --incoming` prints on stderr once its socket is bound, then the address.
    static let listeningNote = "vireo: waiting for a migration on "

    /// Defines the VM from the source's definition and starts its `vireo run --incoming` on
    /// `tcpAddress` (nil: a Unix socket in the VM's directory); returns where it listens. Refused
    /// before anything starts when another VM has the name (or the uuid) here, or it is active.
    func prepareIncoming(_ body: IncomingMigrationBody, tcpAddress: String?) throws -> IncomingMigrationAnswer {
        let definition = body.definition
        guard process == nil else { throw APIError(409, "domain '\(name)' is already active here") }
        var previous: IncomingArrival.Previous?
        if let existing = try? store.record(named: name) {
            guard existing.uuid == definition.uuid else {
                throw APIError(409, "a different domain named '\(name)' already exists here (uuid \(existing.uuid.uuidString.lowercased()))")
            }
            let state = try store.state(named: name)
            previous = IncomingArrival.Previous(definition: existing.definition, state: state.state, reason: state.reason)
        }
        let paths = self.paths
        guard tcpAddress != nil || paths.migrationSocket.utf8.count <= 107 else {
            throw APIError(500, "cannot receive domain '\(name)': socket path \(paths.migrationSocket) is longer than 107 bytes; use a shorter --state-dir")
        }
        // The same uuid under another name is refused here, as by define.
        try environment.checkStorage(definition, resolve: true)
        try store.define(definition)
        environment.events.publish(.defined, name: name)
        let failed = "cannot receive domain '\(name)'"
        VMLaunch.rotate(paths.processLog, above: VMLaunch.processLogLimit)   // (spawn would; before the offset is taken)
        let logStart = fileSize(paths.processLog)
        let arrival: IncomingArrival
        do {
            let address = tcpAddress ?? "unix:" + paths.migrationSocket
            let running = try spawn(VMLaunch.spec(for: definition, paths: paths, incoming: address), definition: definition, failed: failed)
            arrival = IncomingArrival(process: running, previous: previous, keepPaused: body.keepPaused)
            replaceIncoming(incoming, with: arrival)
            try adopt(running, state: .paused, reason: .migrating)
        } catch {
            replaceIncoming(incoming, with: nil)
            putBack(previous)
            throw error
        }
        environment.events.publish(.started, name: name, reason: .migrating)
        let running = arrival.process
        let deadline = Date().addingTimeInterval(Self.incomingListenTimeout)
        while Date() < deadline {
            // The address it really listens on (with the port the kernel chose for port 0).
            if let listening = Self.listeningAddress(in: paths.processLog, from: logStart) {
                watchArrival(arrival)
                return IncomingMigrationAnswer(name: name, address: listening)
            }
            if running.waitForExit(seconds: 0.05) {
                throw APIError(500, "\(failed): \(arrival.failure ?? "vireo run exited")")
            }
        }
        try? kill(running, intent: .destroy)
        throw APIError(500, "\(failed): vireo run --incoming did not listen within \(Int(Self.incomingListenTimeout))s")
    }

    /// `DELETE /v1/migrations/incoming/{name}`: the source gave up (its VMM failed or was
    /// cancelled, perhaps before it ever connected): the waiting process is ended, and with it
    /// what the migration made.
    func abortIncoming() throws -> ActionResult {
        guard let arrival = incoming, let running = process, arrival.process === running else {
            throw APIError(409, "no migration into domain '\(name)' is pending here")
        }
        try kill(running, intent: .destroy)
        return ActionResult(message: "Incoming migration of domain '\(name)' aborted", state: VMRunState.shutoff.rawValue,
                            reason: VMStateReason.failed.rawValue)
    }

    /// Runs on the exit watcher when an arriving VM's process ended before the guest ran here.
    func incomingFailed(_ arrival: IncomingArrival, status: RunStatus?) {
        let logged = lastLines(of: paths.processLog, count: 2)
        let why = status?.detail ?? (logged.isEmpty ? "vireo run exited" : logged)
        arrival.failure = why
        putBack(arrival.previous)
        environment.log("VM '\(name)': the incoming migration ended before the guest ran here (\(why)); "
                        + (arrival.previous == nil ? "its definition was removed" : "the previous definition is back"))
        environment.events.publish(.stopped, name: name, reason: .failed)
        if arrival.previous == nil { environment.events.publish(.undefined, name: name) }
    }

    /// Undoes the migration's define: the definition it replaced is put back, or the VM it added
    /// is removed with its directory.
    private func putBack(_ previous: IncomingArrival.Previous?) {
        do {
            if let previous {
                try store.define(previous.definition)
                try store.setInactive(name: name, state: previous.state.isActive ? .shutoff : previous.state, reason: previous.reason)
            } else {
                try store.setInactive(name: name, state: .shutoff, reason: .failed)
                try store.undefine(name: name)
                try? FileManager.default.removeItem(atPath: paths.directory)
            }
        } catch {
            environment.log("VM '\(name)': cannot undo the incoming migration's definition: \(error)")
        }
    }

    /// Watches for the arrival: the VMM's control API answers once the guest has been built here.
    private func watchArrival(_ arrival: IncomingArrival) {
        let thread = Thread { [self] in
            let control = arrival.process.control(timeoutSeconds: 2)
            while incoming === arrival && !arrival.process.hasExited {
                if let info = control.answer(VMInfo.self, to: .info), info.state == "running" || info.state == "paused" {
                    queue.async { self.arrived(arrival, vmmState: info.state) }
                    return
                }
                usleep(50_000)
            }
        }
        thread.name = "vireo-arrival-\(name)"
        thread.start()
    }

    /// The guest runs here: running (migrated). A guest the source daemon paused for a non-live
    /// migration is resumed; one its user had paused stays paused.
    private func arrived(_ arrival: IncomingArrival, vmmState: String) {
        guard replaceIncoming(arrival, with: nil) else { return }
        let running = arrival.process
        running.hasAnswered = true
        var state: VMRunState = vmmState == "paused" ? .paused : .running
        if state == .paused && !arrival.keepPaused {
            if let response = try? controlCall(running, .resume), (200..<300).contains(response.status) {
                state = .running
            } else {
                environment.log("VM '\(name)' arrived paused and could not be resumed")
            }
        }
        let reason: VMStateReason = state == .running ? .migrated : (arrival.keepPaused ? .user : .migrating)
        do {
            try store.setActive(name: name, state: state, reason: reason, process: running.identity)
        } catch {
            environment.log("VM '\(name)': cannot record its arrival: \(error)")
        }
        environment.log("VM '\(name)' arrived by migration (pid \(running.identity.pid)): \(state.displayName) (\(reason.rawValue))")
        if state == .running { environment.events.publish(.resumed, name: name, reason: .migrated) }
    }

    /// The address after `listeningNote` on a whole line of the log, written after byte `offset`.
    static func listeningAddress(in log: String, from offset: Int) -> String? {
        guard let bytes = readBytes(log, from: offset, limit: 64 << 10) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let range = text.range(of: listeningNote) else { return nil }
        let rest = text[range.upperBound...]
        let line = rest.prefix { !$0.isNewline }
        guard line.endIndex < rest.endIndex else { return nil }
        let address = line.trimmingCharacters(in: .whitespaces)
        return address.isEmpty ? nil : address
    }
}
