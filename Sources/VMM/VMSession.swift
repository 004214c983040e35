import Boot
import Devices
import Foundation
import GuestMemory
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Something the session serves while it runs (the control API's socket) and closes at the end.
public protocol SessionEndpoint: AnyObject, Sendable {
    func stop()
}

/// One VM, for the whole life of a `vireo run` process: the launch specification, the host
/// resources, the current `Machine` (a new one after each guest reset when the policy restarts),
/// snapshots, the endpoints serving it and the status file written at the end. The CLI and the
/// control API drive it; neither owns any of this.
public final class VMSession: @unchecked Sendable {
    /// The machine as launched (for a restore: as recorded in the snapshot, with this launch's
    /// host-side paths).
    public let spec: LaunchSpec
    public let profile: HostProfile
    /// COM1 (and hvc0) output: the terminal or nothing, the serial log, and the ring the control
    /// API serves.
    public let console: ConsoleLog
    /// Called on the running thread with each new machine before it starts (boot number from 1).
    public var onMachine: ((Machine, Int) -> Void)?
    /// Called on the running thread when a machine has ended, with how it ended.
    public var onMachineEnded: ((Machine, MachineExit) -> Void)?
    /// How the last machine ended.
    public private(set) var lastOutcome: MachineExit?
    /// One-line notes (device warnings).
    public let log: @Sendable (String) -> Void

    /// For a restore: from opening the snapshot to a machine ready to run (RAM mapped or copied,
    /// every device and vCPU loaded), in milliseconds.
    public private(set) var restoreMilliseconds: Double?
    /// The part of it spent opening and checking the snapshot file (header, checksums, state).
    public private(set) var snapshotCheckMilliseconds: Double?
    private var snapshotOpenNanoseconds: UInt64 = 0
    private let system: KVMSystem
    private let resources: MachineResources
    private let payloadCache: (any BzImagePayloadCache)?
    private var restoring: SnapshotFile.Opened?
    /// For a restore: guest RAM from the snapshot and a KVM VM with it registered, made while the
    /// state section was read and decoded.
    private var restoringVM: Background<RestoredRAM>?
    private struct RestoredRAM: Sendable { var memory: GuestMemory; var vm: VirtualMachine }
    /// The firmware log file (--firmware-log), open for the process's life like the serial log.
    private var firmwareLogDescriptor: Int32?
    /// A machine received by migration, until it runs (then the source is told).
    private var incoming: IncomingMigration?
    /// Where this VM was received from by migration, if it was.
    public private(set) var migratedFrom: String?
    /// The destination's steps from the end of the stream to the guest running (for the log).
    private var incomingMarks: [(String, UInt64)] = []
    private func markIncoming(_ what: String) {
        if !incomingMarks.isEmpty { incomingMarks.append((what, DispatchTime.now().uptimeNanoseconds)) }
    }
    /// The outgoing migration, current or last.
    private let migration = Guarded<OutgoingMigration?>(nil)
    private let current = Guarded<Machine?>(nil)
    /// Serializes what changes the machine's run state from outside (pause, resume, snapshot).
    let operations = Mutex(())
    private let endpoints = Guarded<[any SessionEndpoint]>([])
    private let progress = Guarded(SnapshotProgress(phase: .none))
    /// Why the session is ending when the guest did not decide it: a signal, or a save.
    private let stopCause = Guarded<StopCause?>(nil)
    private enum StopCause: Equatable { case requested, signal(Int32), saved(String), migrated(String) }

    /// Resolves everything a machine needs before any is built: the host profile, the snapshot
    /// (validated, when restoring), the devices' host side (disks, TAPs).
    /// With `launch.incoming`, blocks until a migration source has sent the whole machine
    /// (`onListening` is called once the address is bound, with the TCP port really used).
    public init(spec launch: LaunchSpec, system: KVMSystem, terminal: (any SerialOutput)?,
                payloadCache: (any BzImagePayloadCache)? = nil, onListening: (String) -> Void = { _ in },
                log: @escaping @Sendable (String) -> Void) throws {
        guard launch.version <= LaunchSpec.currentVersion else {
            throw ConfigError.unreadableFile(kind: "launch specification", path: "version \(launch.version)",
                                             reason: "newer than this VMM (\(LaunchSpec.currentVersion))")
        }
        self.system = system
        self.log = log
        self.payloadCache = payloadCache
        var spec = launch
        var marks: [(String, UInt64)] = []
        var probedProfile: HostProfile?
        if let restore = launch.restore {
            // The host profile probe runs a guest of its own: it is done before the restored
            // VM is made on the thread below, never beside it. (While the two overlapped, one L1
            // of the nested test host lost the restored guest to a triple fault twice in a row;
            // the next L1 passed, so the cause is not proven, but nothing needs them together.)
            if launch.hostProfile == .auto { probedProfile = try Self.resolveProfile(.auto, system: system) }
            let openStarted = DispatchTime.now().uptimeNanoseconds
            let header = try SnapshotFile.openHeader(restore.path)
            // Mapping (or copying) RAM and registering it with a new VM, on another thread, need
            // only the header: they overlap reading and decoding the state section.
            let prepared = Background(name: "vireo-restore") {
                let memory = try header.memory(restore.memory)
                return RestoredRAM(memory: memory, vm: try Machine.prepareVM(system: system, memory: memory))
            }
            let opened: SnapshotFile.Opened
            do {
                opened = try header.readState()
                snapshotOpenNanoseconds = DispatchTime.now().uptimeNanoseconds - openStarted
                spec = try Self.restoredSpec(opened.payload.machine, launch: launch)
            } catch {
                _ = try? prepared.wait()
                header.close()
                throw error
            }
            restoring = opened
            restoringVM = prepared
        } else if let incomingAddress = launch.incoming {
            let address = try MigrationAddress(parsing: incomingAddress)
            // What can be done before the source connects is done now, not while its guest is stopped.
            if launch.hostProfile == .auto { probedProfile = try Self.resolveProfile(.auto, system: system) }
            let received = try IncomingMigration.receive(on: address, system: system, listening: { port in
                if case let .tcp(host, requested) = address, requested == 0, let port {
                    onListening(MigrationAddress.tcp(host: host, port: port).description)
                } else {
                    onListening(address.description)
                }
            }, diskTargets: { recorded in
                // Mirrored disks are written here: only at paths this launch names, never at
                // paths the (possibly hostile) source chose.
                guard launch.devices.disks.count == recorded.devices.disks.count else {
                    throw MigrationError.busy("copy_storage writes the VM's \(recorded.devices.disks.count) disk(s) here: give the destination its own --disk path=... for each (it will not write where the source says)")
                }
                return try Self.restoredSpec(recorded, launch: launch).devices.disks
            }, log: log)
            do {
                spec = try Self.restoredSpec(received.payload.machine, launch: launch)
            } catch {
                received.reportFailure("\(error)")
                throw error
            }
            spec.incoming = launch.incoming
            incoming = received
            migratedFrom = received.peer
            marks = [("stream received", DispatchTime.now().uptimeNanoseconds)]
        }
        // Whatever fails from here on, a migration source must hear it (and keeps the guest).
        let failIncoming = { [incoming] (error: any Error) in incoming?.reportFailure("the destination cannot build the VM: \(error)") }
        do {
            if spec.hostProfile == .auto, let probedProfile { profile = probedProfile } else {
                profile = try Self.resolveProfile(spec.hostProfile, system: system)
            }
            if !marks.isEmpty { marks.append(("host profile", DispatchTime.now().uptimeNanoseconds)) }
        } catch {
            failIncoming(error)
            throw error
        }

        // The serial and firmware logs: appended to, open for the process's life.
        var sinks: [any SerialOutput] = terminal.map { [$0] } ?? []
        do {
            if let path = spec.serialLog {
                let fd = try Self.openAppending(path, kind: "serial log")
                sinks.append(spec.serialLogLimit.map { RotatingFileOutput(path: path, fd: fd, limit: $0) } ?? FileDescriptorOutput(fd: fd))
            }
            firmwareLogDescriptor = try spec.firmwareLog.map { try Self.openAppending($0, kind: "firmware log") }
        } catch {
            _ = try? restoringVM?.wait()
            restoring?.close()
            failIncoming(error)
            throw error
        }
        console = ConsoleLog(forwardingTo: TeeOutput(sinks: sinks))
        do {
            resources = try MachineResources(devices: spec.devices)
            for note in resources.notes { log(note) }
            if !marks.isEmpty { marks.append(("disks and TAPs opened", DispatchTime.now().uptimeNanoseconds)) }
        } catch {
            _ = try? restoringVM?.wait()
            restoring?.close()
            failIncoming(error)
            throw error
        }
        spec.devices = resources.devices
        self.spec = spec
        incomingMarks = marks
    }

    deinit { abandonRestore() }

    /// A restore that will not build its machine: the RAM thread is done before the file closes.
    private func abandonRestore() {
        _ = try? restoringVM?.wait()
        restoringVM = nil
        restoring?.close()
        restoring = nil
    }

    /// The machine a restore builds is the snapshot's; this launch contributes where its control
    /// socket, logs and status go, and may point the same devices at other host paths.
    static func restoredSpec(_ recorded: LaunchSpec, launch: LaunchSpec) throws -> LaunchSpec {
        var spec = recorded
        spec.apiSocket = launch.apiSocket
        spec.serialLog = launch.serialLog
        spec.serialLogLimit = launch.serialLogLimit
        spec.consoleToStdout = launch.consoleToStdout
        spec.firmwareLog = launch.firmwareLog
        // The variable store a restore resumes with: this launch's, else the one the VM had.
        if let efivars = launch.efivars { spec.efivars = efivars }
        spec.statusFile = launch.statusFile
        spec.restore = launch.restore
        spec.incoming = nil
        spec.kernelCache = launch.kernelCache
        if launch.hostProfile != .auto { spec.hostProfile = launch.hostProfile }
        let given = launch.devices
        if given.deviceCount > 0 {
            guard given.disks.count == recorded.devices.disks.count, given.networks.count == recorded.devices.networks.count,
                  given.virtioConsole == recorded.devices.virtioConsole, given.entropy == recorded.devices.entropy else {
                throw MachineStateError.mismatch("the snapshot's devices are \(describe(recorded.devices)); this launch gives \(describe(given))")
            }
            for index in given.disks.indices {
                spec.devices.disks[index].path = given.disks[index].path
                spec.devices.disks[index].format = given.disks[index].format ?? recorded.devices.disks[index].format
            }
            for index in given.networks.indices {
                spec.devices.networks[index].attachment = given.networks[index].attachment
            }
        }
        return spec
    }

    private static func describe(_ devices: DeviceOptions) -> String {
        "\(devices.disks.count) disk(s), \(devices.networks.count) NIC(s), virtio console \(devices.virtioConsole ? "on" : "off"), rng \(devices.entropy ? "on" : "off")"
    }

    private static func openAppending(_ path: String, kind: String) throws(ConfigError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .unwritableFile(kind: kind, path: path, reason: String(cString: strerror(errno))) }
        return fd
    }

    static func resolveProfile(_ choice: HostProfileChoice, system: KVMSystem) throws -> HostProfile {
        switch choice {
        case .native: return HostProfile.native
        case .emulatedKernelMode: return HostProfile.emulatedKernelMode
        case .auto: return HostProfile.detect(kernelModeProbe: try? KernelModeProbe.run(system: system))
        }
    }

    /// The machine running now (nil before the first boot and between a reset and the next boot;
    /// the last one once the session has ended).
    public var machine: Machine? { current.read { $0 } }

    /// Serves `endpoint` until the session ends.
    public func serve(_ endpoint: any SessionEndpoint) {
        endpoints.update { $0.append(endpoint) }
    }

    /// Boots (or restores) and runs the VM until it ends for good: through guest resets when the
    /// policy restarts, until power-off, a stop, a save or a failure. Writes the status file and
    /// releases the host resources on the way out. Returns the process exit status.
    public func run() -> Int32 {
        defer {
            for endpoint in endpoints.read({ $0 }) { endpoint.stop() }
            resources.release(log: log)
        }
        var cmos: CMOSRTCState?
        var boots = 0
        while true {
            boots += 1
            let machine: Machine
            do {
                machine = try buildMachine(cmos: cmos)
            } catch {
                incoming?.reportFailure("the destination cannot build the VM: \(error)")
                incoming = nil
                lastOutcome = .failed("\(error)")
                return finish(.failed("\(error)"))
            }
            current.update { $0 = machine }
            onMachine?(machine, boots)
            if stopCause.read({ $0 != nil }) { machine.requestStop() }
            let outcome: MachineExit
            do {
                try machine.start()
                // A migrated guest runs here now: the source may let go of it.
                var postcopy: IncomingMigration?
                if let received = incoming {
                    incoming = nil
                    if received.isPostcopy {
                        postcopy = received
                        received.onPostcopyFailure { [log] why in
                            log(why)
                            machine.fail(why)
                        }
                    }
                    received.reportRunning()
                    markIncoming("machine started")
                    var previous = incomingMarks.first?.1 ?? 0
                    log("switch-over here: " + incomingMarks.dropFirst().map { what, at in
                        defer { previous = at }
                        return String(format: "%@ %.1f", what, Double(at - previous) / 1e6)
                    }.joined(separator: ", ") + " (ms)")
                    incomingMarks = []
                }
                outcome = machine.waitForExit() ?? .stopped
                postcopy?.finish()
            } catch {
                incoming?.reportFailure("the destination cannot start the VM: \(error)")
                incoming = nil
                outcome = .failed("\(error)")
            }
            lastOutcome = outcome
            onMachineEnded?(machine, outcome)
            if outcome == .reset && spec.onReboot == .restart && stopCause.read({ $0 == nil }) {
                // No machine until the next one is built; the last one stays for status queries.
                current.update { $0 = nil }
                cmos = machine.rtc.state
                continue
            }
            return finish(outcome)
        }
    }

    /// The first machine restores the snapshot (once); every other one boots the kernel.
    private func buildMachine(cmos: CMOSRTCState?) throws -> Machine {
        if let received = incoming {
            var config = try VMConfig(kernel: [], kernelPath: spec.kernel ?? "", initrd: nil, initrdPath: spec.initrd,
                                      cmdline: spec.cmdline, cpus: spec.cpus, memorySize: spec.memoryBytes,
                                      devices: spec.devices)
            try loadFirmware(into: &config)
            defer { markIncoming("machine built") }
            return try Machine(config: config, resources: resources, system: system, profile: profile, serialOutput: console,
                               origin: .incoming(received.payload.state, memory: received.memory, cmdline: received.payload.effectiveCmdline,
                                                 peer: received.peer, paused: received.payload.paused, vm: received.preparedVM),
                               log: log)
        }
        if let opened = restoring {
            restoring = nil
            defer { opened.close() }
            var config = try VMConfig(kernel: [], kernelPath: spec.kernel ?? "", initrd: nil, initrdPath: spec.initrd,
                                      cmdline: spec.cmdline, cpus: spec.cpus, memorySize: spec.memoryBytes,
                                      devices: spec.devices)
            try loadFirmware(into: &config)
            let buildStarted = DispatchTime.now().uptimeNanoseconds
            do {
                let prepared = restoringVM
                restoringVM = nil
                guard let ram = try prepared?.wait() else { throw SessionError.cannotRestore(path: opened.path, reason: "no RAM prepared") }
                let machine = try Machine(config: config, resources: resources, system: system, profile: profile, serialOutput: console,
                                          origin: .snapshot(opened.payload.state, memory: ram.memory, cmdline: opened.payload.effectiveCmdline,
                                                            source: opened.path, paused: opened.payload.paused, vm: ram.vm),
                                          log: log)
                restoreMilliseconds = Double(DispatchTime.now().uptimeNanoseconds - buildStarted + snapshotOpenNanoseconds) / 1e6
                snapshotCheckMilliseconds = Double(snapshotOpenNanoseconds) / 1e6
                return machine
            } catch {
                throw SessionError.cannotRestore(path: opened.path, reason: "\(error)")
            }
        }
        if let choice = spec.firmware {
            guard spec.kernel == nil else { throw FirmwareError.kernelToo }
            var config = try VMConfig(kernel: [], kernelPath: "", cpus: spec.cpus, memorySize: spec.memoryBytes,
                                      devices: spec.devices)
            try loadFirmware(into: &config, choice: choice)
            return try Machine(config: config, resources: resources, system: system, profile: profile, serialOutput: console,
                               origin: .boot(rngSeed: [], restoringCMOS: cmos), log: log)
        }
        guard let kernelPath = spec.kernel else {
            throw ConfigError.unreadableFile(kind: "kernel", path: "(none)", reason: "a VM that boots needs --kernel or --firmware")
        }
        if spec.efivars != nil { throw FirmwareError.variablesNeedUEFI(path: kernelPath) }
        let kernel = try readWholeFile(kernelPath, kind: "kernel", limit: max(spec.memoryBytes, 64 << 20))
        let initrd = try spec.initrd.map { try readWholeFile($0, kind: "initrd", limit: spec.memoryBytes) }
        var config = try VMConfig(kernel: kernel, kernelPath: kernelPath, initrd: initrd, initrdPath: spec.initrd,
                                  cmdline: spec.cmdline, cpus: spec.cpus, memorySize: spec.memoryBytes,
                                  bootProtocol: BootProtocol(rawValue: spec.bootProtocol.rawValue) ?? .auto,
                                  devices: spec.devices)
        config.payloadCache = spec.kernelCache ? payloadCache : nil
        return try Machine(config: config, resources: resources, system: system, profile: profile, serialOutput: console,
                           origin: .boot(rngSeed: hostRandomBytes(32), restoringCMOS: cmos), log: log)
    }

    /// Records how the session ended and returns the process status for it.
    private func finish(_ outcome: MachineExit) -> Int32 {
        let status: RunStatus
        switch stopCause.read({ $0 }) {
        case let .signal(signal)?:
            status = RunStatus(outcome: .signal, detail: "signal \(signal)", exitStatus: 128 + signal)
        case let .saved(path)? where outcome == .stopped:
            status = RunStatus(outcome: .saved, detail: "saved to \(path)", exitStatus: 0)
        case let .migrated(destination)? where outcome == .stopped:
            status = RunStatus(outcome: .migrated, detail: "migrated to \(destination)", exitStatus: 0, migration: migrationProgress)
        default:
            status = RunStatus(outcome: RunStatus.Outcome(outcome), detail: outcome.description, exitStatus: outcome.processStatus)
        }
        if let path = spec.statusFile {
            do { try status.write(to: path) } catch { log("cannot write status file \(path): \(error)") }
        }
        return status.exitStatus
    }

    /// How the run ended, for callers that print it.
    public var endedBySignal: Int32? {
        if case let .signal(signal)? = stopCause.read({ $0 }) { return signal }
        return nil
    }

    // MARK: Requests from outside (control API, signals, the terminal)

    /// Ends the session (a signal, Ctrl-A X, `PUT /vm/stop`): the current machine stops and no
    /// new one boots.
    public func requestStop(signal: Int32? = nil) {
        // Remembered, so that a machine still being built (or rebooting) stops as soon as it exists.
        stopCause.update { cause in
            if let signal, cause == nil || cause == .requested { cause = .signal(signal) }
            else if cause == nil { cause = .requested }
        }
        machine?.requestStop()
    }

    /// Parks every vCPU.
    public func pause() throws {
        try operations.withLock { _ in
            guard let machine else { throw SessionError.noMachine }
            try machine.pause()
        }
    }

    /// Each vCPU's thread and architectural state (a moment's pause while it is read).
    public func vcpuReports() throws -> [VCPUReport] {
        try operations.withLock { _ in
            guard let machine else { throw SessionError.noMachine }
            return machine.vcpuReports()
        }
    }

    /// Lets the vCPUs run again.
    public func resume() throws {
        try operations.withLock { _ in
            guard let machine else { throw SessionError.noMachine }
            machine.resume()
        }
    }

    /// How far the current (or last) snapshot has come; never waits for one in progress.
    public var snapshotProgress: SnapshotProgress { progress.read { $0 } }

    /// The machine as a snapshot or a migration records it: no host-side paths of this process.
    /// The spec's firmware, its log and (UEFI) its variable store, into `config`.
    private func loadFirmware(into config: inout VMConfig, choice: String? = nil) throws {
        guard let choice = choice ?? spec.firmware else {
            if spec.efivars != nil { throw FirmwareError.variablesNeedUEFI(path: spec.kernel ?? "(a kernel boot)") }
            return
        }
        let firmware = try FirmwareImage.load(choice)
        config.firmware = firmware
        config.firmwareLogDescriptor = firmwareLogDescriptor
        config.firmwareVariables = try FirmwareVariableStore.open(path: spec.efivars, for: firmware)
    }

    var recordedSpec: LaunchSpec {
        var recorded = spec
        recorded.apiSocket = nil; recorded.serialLog = nil; recorded.statusFile = nil; recorded.restore = nil
        recorded.firmwareLog = nil
        recorded.incoming = nil
        return recorded
    }

    // MARK: Live migration (the source side)

    /// How far the current (or last) outgoing migration has come.
    public var migrationProgress: MigrationProgress {
        guard let job = migration.read({ $0 }) else { return MigrationProgress(phase: .none) }
        return job.progress.read { $0 }
    }

    /// Starts migrating the VM to `request.destination` on a thread of its own and returns at
    /// once (progress: `migrationProgress`). When the destination runs the guest, this session
    /// stops with the outcome `migrated`; a failure or cancel before that leaves the VM as it was.
    public func migrate(_ request: MigrationRequest) throws -> MigrationProgress {
        if let problem = request.problem { throw SessionError.badRequest(problem) }
        let address = try MigrationAddress(parsing: request.destination)
        guard let machine, machine.runState == .running || machine.runState == .paused else {
            throw SessionError.badRequest("cannot migrate a VM that is \(machine?.runState.rawValue ?? "restarting")")
        }
        let job = try migration.update { current -> OutgoingMigration in
            if let current, current.progress.read({ $0.isActive }) {
                throw SessionError.busy("a migration to \(current.request.destination) is already under way")
            }
            let job = OutgoingMigration(request: request, address: address, ramBytes: machine.memory.totalSize)
            current = job
            return job
        }
        let recorded = recordedSpec
        let thread = startThread(name: "vireo-migration") { [self] in
            let ending = job.run(machine: machine, recorded: recorded, session: self)
            switch ending {
            case .handedOver:
                log("migrated to \(request.destination); this process stops")
                if let steps = job.switchover { log("switch-over: \(steps)") }
                stopCause.update { $0 = .migrated(request.destination) }
                machine.requestStop()
            case .keptHere:
                log("migration to \(request.destination) ended without a switch-over (\(job.progress.read { $0.error ?? "" })): the VM runs on here")
            case .heldPaused:
                log("migration to \(request.destination): \(job.progress.read { $0.error ?? "" })")
            }
        }
        guard let thread else {
            job.progress.update { $0.phase = .failed; $0.error = "cannot start the migration thread" }
            throw SessionError.busy("cannot start the migration thread")
        }
        pthread_detach(thread)
        return job.progress.read { $0 }
    }

    /// Cuts the connection of the migration under way, as a network failure would (tests).
    func breakMigrationConnection() { migration.read { $0 }?.breakConnection() }

    /// Switches the migration under way to post-copy at its next round boundary.
    public func switchMigrationToPostcopy() throws -> MigrationProgress {
        guard let job = migration.read({ $0 }), job.progress.read({ $0.isActive }) else {
            throw SessionError.busy("no migration is under way")
        }
        guard job.requestPostcopy() else { throw SessionError.busy("the migration is past the point where it could switch to post-copy") }
        return job.progress.read { $0 }
    }

    /// Cancels the migration under way (before its switch-over); the VM stays here.
    public func cancelMigration() throws -> MigrationProgress {
        guard let job = migration.read({ $0 }), job.progress.read({ $0.isActive }) else {
            throw SessionError.busy("no migration is under way")
        }
        guard job.cancel() else {
            throw SessionError.busy("the migration is in post-copy: the guest runs on the destination and needs the pages still here; it cannot be cancelled")
        }
        return job.progress.read { $0 }
    }

    /// Writes a snapshot of the running (or paused) VM to `request.path`. The vCPUs are parked and
    /// the device threads stopped while the state is captured and RAM written; afterwards the VM
    /// is left as it was (running or paused), or stopped for good with `then: stop`.
    public func snapshot(_ request: SnapshotRequest) throws -> SnapshotResult {
        try operations.withLock { _ in
            guard let machine, machine.runState == .running || machine.runState == .paused else {
                throw SessionError.notRunning(machine?.runState.rawValue ?? "restarting")
            }
            if let job = migration.read({ $0 }), job.progress.read({ $0.isActive }) {
                throw SessionError.busy("a migration to \(job.request.destination) is under way; cancel it or wait")
            }
            let wasPaused = machine.runState == .paused
            let started = DispatchTime.now().uptimeNanoseconds
            let progress = self.progress
            progress.update { $0 = SnapshotProgress(phase: .capturing, path: request.path, ramBytesTotal: machine.memory.totalSize) }
            var completed = false
            defer { if !completed { progress.update { $0.phase = .failed } } }
            try machine.pause()
            var resumed = false
            defer {
                // A failed snapshot leaves the VM as it found it.
                if !resumed {
                    try? machine.resumeDevices()
                    if !wasPaused { machine.resume() }
                }
            }
            try machine.quiesceDevices()
            let payload = SnapshotPayload(machine: recordedSpec, effectiveCmdline: machine.effectiveCmdline, paused: wasPaused,
                                          state: try machine.captureState())
            progress.update { $0.phase = .writing }
            let bytes = try SnapshotFile.write(payload, memory: machine.memory, to: request.path) { done, total in
                progress.update { $0.ramBytesDone = done; $0.ramBytesTotal = total }
            }
            completed = true
            progress.update { $0.phase = .completed }
            let state: String
            if request.then == .stop {
                stopCause.update { $0 = .saved(request.path) }
                machine.requestStop()
                resumed = true
                state = "stopped"
            } else {
                try machine.resumeDevices()
                if !wasPaused { machine.resume() }
                resumed = true
                state = wasPaused ? "paused" : "running"
            }
            let paused = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
            return SnapshotResult(path: request.path, bytes: bytes, pausedMilliseconds: paused, state: state)
        }
    }
}

public enum SessionError: Error, Equatable, CustomStringConvertible {
    case noMachine
    case notRunning(String)
    case cannotRestore(path: String, reason: String)
    case badRequest(String)
    case busy(String)

    public var description: String {
        switch self {
        case .noMachine: return "the VM is being restarted; try again"
        case let .notRunning(state): return "cannot snapshot a VM that is \(state)"
        case let .cannotRestore(path, reason): return "cannot restore snapshot \(path): \(reason)"
        case let .badRequest(why): return why
        case let .busy(why): return why
        }
    }
}

extension RunStatus.Outcome {
    init(_ exit: MachineExit) {
        switch exit {
        case .powerOff: self = .poweroff
        case .reset: self = .reset
        case .debugExit: self = .debugExit
        case .stopped: self = .stopped
        case .failed: self = .failed
        }
    }
}
