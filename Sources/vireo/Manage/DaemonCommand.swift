import ArgumentParser
import Foundation
import Manager
#if canImport(Glibc)
import Glibc
#endif

struct DaemonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "daemon",
        abstract: "Run the management daemon: VM registry, one vireo run process per VM, REST API.",
        discussion: """
        The REST API (docs/api/openapi.yaml) listens on a Unix socket (mode 0600) and, with --listen, \
        also on TCP, where every request needs "Authorization: Bearer <token>". VMs are separate \
        processes in their own sessions: they keep running when the daemon stops or is killed, and \
        the next daemon re-attaches to them. SIGTERM/SIGINT stop the daemon only.
        """)

    @Option(name: .customLong("state-dir"), help: "Where definitions, state and per-VM files live.")
    var stateDirectory = "/var/lib/vireo"

    @Option(help: "The API's Unix socket (default: $VIREO_SOCKET, else /run/vireo.sock).")
    var socket: String?

    @Option(help: "Also listen on TCP, HOST:PORT (needs --token-file).")
    var listen: String?

    @Option(name: .customLong("token-file"), help: "File holding the bearer token TCP clients must send (mode 0600).")
    var tokenFile: String?

    @Option(name: .customLong("migration-listen"),
            help: ArgumentHelp("Where a VM migrated here by a daemon on another host listens for its memory and state: HOST:PORT (port 0: any free one; default 0.0.0.0:0).",
                               valueName: "host:port"))
    var migrationListen: String = DaemonConfiguration.defaultMigrationListen

    @Option(name: .customLong("max-connections"), help: "API connections open at once, per listener; more are answered 503.")
    var maxConnections: Int = APILimits().maxConnections

    @Option(name: .customLong("request-timeout"), help: "Seconds a client has to send each whole request; slower connections are closed.")
    var requestTimeout: Double = APILimits().requestTimeoutSeconds

    @Flag(name: .customLong("confine-storage"),
          help: "Every file a VM definition names (kernel, initrd, firmware file, NVRAM, disks and their backing files) must lie in a started storage pool (pool-define-as, pool-start).")
    var confineStorage = false

    @Option(name: .customLong("cgroup-partition"),
            help: ArgumentHelp("The directory in each cgroup hierarchy that holds this daemon's VM groups (<hierarchy>/<partition>/<vm name>); a second daemon on the host needs its own.",
                               valueName: "name"))
    var cgroupPartition = "vireo"

    func validate() throws {
        do { try VMCgroups.checkPartition(cgroupPartition) } catch {
            throw ValidationError("\(error)")
        }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard requestTimeout > 0, requestTimeout.isFinite else { throw ValidationError("--request-timeout must be a positive number of seconds") }
    }

    func run() throws {
        try manage {
            var tcp: (host: String, port: Int)?
            var token: String?
            if let listen {
                guard let tokenFile else { throw ManageFailure(["--listen needs --token-file: the TCP API is never open without a token"]) }
                token = try readToken(tokenFile)
                guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
                      (0...65535).contains(port), colon != listen.startIndex else {
                    throw ManageFailure(["--listen '\(listen)' is not HOST:PORT"])
                }
                var host = String(listen[..<colon])
                if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                tcp = (host, port)
            } else if tokenFile != nil {
                throw ManageFailure(["--token-file only applies with --listen"])
            }
            guard let colon = migrationListen.lastIndex(of: ":"), UInt16(migrationListen[migrationListen.index(after: colon)...]) != nil else {
                throw ManageFailure(["--migration-listen '\(migrationListen)' is not HOST:PORT"])
            }
            let socketPath = socket ?? ProcessInfo.processInfo.environment["VIREO_SOCKET"] ?? ConnectionOptions.defaultSocket
            let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]

            // Blocked before any thread exists, so only sigwait below sees them.
            var signals = sigset_t()
            sigemptyset(&signals)
            for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, signal) }
            pthread_sigmask(SIG_BLOCK, &signals, nil)

            let daemon: Daemon
            do {
                daemon = try Daemon(configuration: DaemonConfiguration(
                    stateDirectory: stateDirectory, socketPath: socketPath, listen: tcp, token: token, executable: executable,
                    migrationListen: migrationListen,
                    apiLimits: APILimits(maxConnections: maxConnections, requestTimeoutSeconds: requestTimeout),
                    confineStorage: confineStorage, cgroupPartition: cgroupPartition),
                    log: { writeStandardError("vireo daemon: \($0)\n") })
                try daemon.start()
            } catch {
                throw ManageFailure(["\(error)"])
            }
            var listening = "listening on unix://\(socketPath)"
            if let tcp, let port = daemon.tcpPort { listening += " and http://\(tcp.host):\(port)" }
            writeStandardError("vireo daemon: \(listening) (state in \(stateDirectory))\n")
            var received: Int32 = 0
            while sigwait(&signals, &received) == 0 {
                if received == SIGHUP { continue }
                break
            }
            writeStandardError("vireo daemon: stopping on signal \(received); VMs keep running\n")
            daemon.stop()
        }
    }
}
