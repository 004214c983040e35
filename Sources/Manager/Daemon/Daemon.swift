import VMContract
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How `vireo daemon` was asked to run.
public struct DaemonConfiguration: Sendable {
    public var stateDirectory: String
    public var socketPath: String
    /// Optional TCP listener ("HOST:PORT"); requires `token`.
    public var listen: (host: String, port: Int)?
    public var token: String?
    /// The `vireo` executable VMs run as.
    public var executable: String
    /// Where a VM arriving by live migration from a daemon that reached this one over TCP listens
    /// ("HOST:PORT"; port 0: one the kernel picks). Arrivals over the Unix socket (same host) use a
    /// socket in the VM's directory instead.
    public var migrationListen: String
    /// What each API listener allows its clients (connections, request timeout, body size).
    public var apiLimits: APILimits
    /// How fast a VM that keeps ending is restarted (on_poweroff / on_crash = restart).
    public var restartBackoff: RestartBackoff
    /// `--confine-storage`: VMs may use only files in started storage pools (StorageConfinement).
    public var confineStorage: Bool
    /// The directory under each cgroup hierarchy that holds this daemon's VM groups
    /// (`<hierarchy>/<partition>/<vm name>`); two daemons on one host need two.
    public var cgroupPartition: String
    /// A prefix for /proc and the cgroup mounts: "" on a host; tests use a fake tree.
    public var cgroupRoot: String

    public static let defaultMigrationListen = "0.0.0.0:0"

    public init(stateDirectory: String, socketPath: String, listen: (host: String, port: Int)? = nil,
                token: String? = nil, executable: String, migrationListen: String = defaultMigrationListen,
                apiLimits: APILimits = APILimits(), restartBackoff: RestartBackoff = RestartBackoff(),
                confineStorage: Bool = false, cgroupPartition: String = "vireo", cgroupRoot: String = "") {
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath
        self.listen = listen
        self.token = token
        self.executable = executable
        self.migrationListen = migrationListen
        self.apiLimits = apiLimits
        self.restartBackoff = restartBackoff
        self.confineStorage = confineStorage
        self.cgroupPartition = cgroupPartition
        self.cgroupRoot = cgroupRoot
    }
}

/// libvirt restarts a VM whose guest crashed (or powered off) at once, every time: a guest that
/// dies while booting then spins the host. Vireo restarts at once only a VM that ran for at least
/// `window`; each quick end in a row doubles the wait before the next start, from `firstDelay`
/// up to `maximumDelay` (1, 2, 4, ... 300 s), and a VM that runs for `window` starts afresh.
public struct RestartBackoff: Sendable, Equatable {
    public var window: Double
    public var firstDelay: Double
    public var maximumDelay: Double

    public init(window: Double = 60, firstDelay: Double = 1, maximumDelay: Double = 300) {
        self.window = window
        self.firstDelay = firstDelay
        self.maximumDelay = maximumDelay
    }

    /// The wait before restarting a VM that ended `quickEnds` times in a row within `window`
    /// of its start (0: it ran long enough, no wait).
    public func delay(afterQuickEnds quickEnds: Int) -> Double {
        guard quickEnds > 0 else { return 0 }
        return min(maximumDelay, firstDelay * pow(2, Double(min(quickEnds - 1, 30))))
    }
}

/// The management daemon: the VM registry over the state store, one `vireo run` process per
/// running VM, and the REST API. VMs are separate sessions, so they outlive the daemon; a new
/// daemon re-attaches to them.
///
/// @unchecked: `servers` and `lockDescriptor` are set by `start` and `stop` alone (not behind a
/// lock); the controllers, which API threads reach, are behind their Mutex.
public final class Daemon: @unchecked Sendable {
    public let configuration: DaemonConfiguration
    let environment: DaemonEnvironment
    private let controllers = Mutex<[String: VMController]>([:])
    /// Storage pool operations, one at a time (DaemonAPI+Pools.swift).
    let poolQueue = DispatchQueue(label: "vireo.daemon.pools")
    private var servers: [APIServer] = []
    private var lockDescriptor: Int32 = -1

    public init(configuration: DaemonConfiguration, log: @escaping @Sendable (String) -> Void) throws {
        self.configuration = configuration
        let store = try StateStore(stateDirectory: configuration.stateDirectory)
        environment = DaemonEnvironment(store: store, events: EventBus(), stateDirectory: configuration.stateDirectory,
                                        executable: configuration.executable, socketPath: configuration.socketPath,
                                        migrationListen: "tcp:" + configuration.migrationListen,
                                        restartBackoff: configuration.restartBackoff,
                                        confineStorage: configuration.confineStorage,
                                        cgroups: Result { () throws(CgroupError) in
                                            try VMCgroups.host(partition: configuration.cgroupPartition, root: configuration.cgroupRoot)
                                        }, log: log)
    }

    var store: StateStore { environment.store }
    var events: EventBus { environment.events }

    /// Re-attaches to surviving VMs, starts autostart VMs, then listens.
    public func start() throws {
        // Before touching any VM: a second daemon on the same socket must not re-attach to (or
        // autostart) the first one's VMs.
        try lockStateDirectory()
        try APIServer.claim(unixSocket: configuration.socketPath)
        if configuration.listen != nil, configuration.token?.isEmpty ?? true {
            throw APIError(400, "--listen needs --token-file")
        }
        switch environment.cgroups {
        case .success(let cgroups):
            let place = switch cgroups.layout {
            case .v2(let mount, _): "\(mount)/\(cgroups.partition)/<vm>"
            case .v1: "<hierarchy>/\(cgroups.partition)/<vm> in each hierarchy"
            }
            environment.log("VM cgroups: v\(cgroups.layout.version), \(place)")
        case .failure(let error):
            environment.log("\(error); VMs run without their own cgroup, and those whose definitions set cputune, memtune or blkiotune do not start")
        }
        reattach()
        autostartPools()
        autostart()
        let unix = APIServer(daemon: self, requiredToken: nil, limits: configuration.apiLimits)
        try unix.listen(unixSocket: configuration.socketPath)
        servers.append(unix)
        if let listen = configuration.listen {
            guard let token = configuration.token, !token.isEmpty else { throw APIError(400, "--listen needs --token-file") }
            let tcp = APIServer(daemon: self, requiredToken: token, limits: configuration.apiLimits)
            try tcp.listen(host: listen.host, port: listen.port)
            servers.append(tcp)
        }
    }

    /// Stops listening. VMs keep running: they are not the daemon's to end.
    public func stop() {
        for server in servers { server.close() }
        servers = []
        if lockDescriptor >= 0 { close(lockDescriptor) }
        lockDescriptor = -1
    }

    /// One daemon per state dir: two would both start and reap the same VMs. The lock dies with
    /// the process (kill -9 included), and is O_CLOEXEC so no VM inherits it.
    private func lockStateDirectory() throws {
        let path = configuration.stateDirectory + "/daemon.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw APIError(500, "cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw APIError(500, "another vireo daemon is using the state directory \(configuration.stateDirectory)")
        }
        lockDescriptor = fd
    }

    /// Connections open on each listener now (Unix socket first), for tests.
    var openConnections: [Int] { servers.map(\.openConnections) }

    /// The TCP port actually bound (for port 0 in tests).
    public var tcpPort: Int? { servers.compactMap(\.boundPort).first }

    /// The controller of a defined VM (created on first use, then kept, so one VM name always
    /// has one queue even across undefine and define).
    func controller(_ name: String) throws -> VMController {
        _ = try store.state(named: name)
        return controllerEvenIfUndefined(name)
    }

    /// The controller of `name` if one was made since the daemon started (the VM may be gone).
    func controllerIfCreated(_ name: String) -> VMController? {
        controllers.withLock { $0[name] }
    }

    func controllerEvenIfUndefined(_ name: String) -> VMController {
        controllers.withLock { controllers in
            if let existing = controllers[name] { return existing }
            let created = VMController(name: name, environment: environment)
            controllers[name] = created
            return created
        }
    }

    /// For every VM recorded with a process: the same process (pid and start time) still runs and
    /// its control socket answers → re-attach; otherwise record how it ended.
    func reattach() {
        guard let states = try? store.allStates() else {
            environment.log("cannot read VM states; nothing re-attached")
            return
        }
        for state in states where state.state.isActive {
            let controller = controllerEvenIfUndefined(state.name)
            let identity = try? store.processIdentity(name: state.name)
            guard let identity, ProcessSnapshot.isSameProcessRunning(pid: identity.pid, startTicks: identity.startTicks) else {
                // Its group goes too (and an OOM kill in it is what ended it).
                let status = identity.flatMap { controller.releaseCgroup(statusFile: $0.statusFile, waitStatus: nil) }
                var reason = ExitClassifier.reason(intent: .none, status: status, waitStatus: nil)
                if reason == .unknown { reason = .crashed }
                try? store.setInactive(name: state.name, state: .shutoff, reason: reason)
                environment.log("VM '\(state.name)' ended while the daemon was away: \(reason.rawValue)")
                events.publish(.stopped, name: state.name, reason: reason)
                continue
            }
            let running = VMProcess(identity: identity, isChild: false)
            guard let vmState = Self.vmmState(running) else {
                // Ours (same start time) but deaf: it cannot be managed, so it is ended, not leaked.
                environment.log("VM '\(state.name)' (pid \(identity.pid)) does not answer on \(identity.controlSocket); killing it")
                running.kill()
                try? store.setInactive(name: state.name, state: .shutoff, reason: .crashed)
                events.publish(.stopped, name: state.name, reason: .crashed)
                continue
            }
            let paused = vmState == "paused"
            do {
                try controller.adopt(running, state: paused ? .paused : .running, reason: paused ? .user : state.reason)
                environment.log("re-attached to VM '\(state.name)' (pid \(identity.pid), \(vmState))")
            } catch {
                environment.log("VM '\(state.name)': cannot re-attach: \(error)")
            }
        }
    }

    /// The VMM's own run state ("running", "paused"), retried briefly: a busy VMM may be slow.
    private static func vmmState(_ running: VMProcess) -> String? {
        for _ in 0..<10 {
            if let info = running.control.answer(VMInfo.self, to: .info) { return info.state }
            usleep(200_000)
        }
        return nil
    }

    private func autostart() {
        guard let names = try? store.autostartNames() else { return }
        for name in names {
            // Its guest runs on another daemon now: starting it here would run it twice.
            if let state = try? store.state(named: name), state.state == .shutoff, state.reason == .migrated {
                environment.log("VM '\(name)' was migrated to another daemon; not autostarted")
                continue
            }
            let controller = controllerEvenIfUndefined(name)
            controller.enqueue({ () throws -> Bool in
                guard controller.process == nil else { return false }
                _ = try controller.start()
                return true
            }, completion: { [environment] result in
                switch result {
                case .success(true): environment.log("autostarted VM '\(name)'")
                case .success: break
                case .failure(let error): environment.log("autostart of VM '\(name)' failed: \(error.message)")
                }
            })
        }
    }
}
