import Foundation
import Testing
@testable import Manager

/// A real `vireo daemon` process (the built executable) with a fresh state dir, for the tests
/// that boot real VMs (the KVM test guests) and kill the daemon.
final class DaemonProcess: @unchecked Sendable {
    let directory: String
    var stateDirectory: String { directory + "/state" }
    var socket: String { directory + "/api.sock" }
    /// Each test daemon's VM cgroups apart from every other's (VM names repeat across tests).
    var cgroupPartition: String { "vireo-test-" + URL(fileURLWithPath: directory).lastPathComponent }
    private(set) var process: Process?

    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }()

    /// The `vireo` executable SwiftPM built next to the test bundle.
    static var executable: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("vireo").path
    }

    static let guestDirectory = packageRoot.appendingPathComponent(".build/test-guests").path

    /// The echo guest: prints "echo: ready", echoes input uppercased, powers off on 'q'.
    static let echoGuest: String = {
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", packageRoot.appendingPathComponent("TestGuests").path, "OUT=\(guestDirectory)"]
        try? make.run()
        make.waitUntilExit()
        return guestDirectory + "/mb-echo.elf"
    }()

    init() throws {
        directory = "/tmp/vdp-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    var client: HTTPClient { HTTPClient(endpoint: .unix(path: socket), timeoutSeconds: 60) }

    /// Starts the daemon and waits until its socket answers.
    func start() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.executable), "vireo not built at \(Self.executable)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = ["daemon", "--state-dir", stateDirectory, "--socket", socket, "--cgroup-partition", cgroupPartition]
        // Appended across restarts, so a test can read what every daemon it started logged.
        let logPath = directory + "/daemon.log"
        if !FileManager.default.fileExists(atPath: logPath) {
            #expect(FileManager.default.createFile(atPath: logPath, contents: nil))
        }
        let log = FileHandle(forWritingAtPath: logPath)
        log?.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        for _ in 0..<200 {
            if (try? client.request("GET", "/v1/vms"))?.status == 200 { return }
            usleep(50_000)
        }
        throw APIError(500, "daemon did not answer: \(daemonLog)")
    }

    var daemonLog: String { (try? String(contentsOfFile: directory + "/daemon.log", encoding: .utf8)) ?? "" }

    func kill9() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func terminate() {
        guard let process else { return }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
    }

    /// Defines an echo-guest VM.
    func defineEcho(_ name: String, autostart: Bool = false) throws {
        let yaml = """
            name: \(name)
            memory: 32M
            os:
              kernel: \(Self.echoGuest)
            onReboot: destroy
            autostart: \(autostart)
            """
        let response = try client.request("POST", "/v1/vms", body: Array(yaml.utf8))
        #expect(response.status == 201, "\(response.text)")
    }

    func state(_ name: String) throws -> VMStateBody {
        try JSONDecoder().decode(VMStateBody.self, from: Data(try client.request("GET", "/v1/vms/\(name)/state").body))
    }

    func summary(_ name: String) throws -> VMSummary {
        try JSONDecoder().decode(VMSummary.self, from: Data(try client.request("GET", "/v1/vms/\(name)").body))
    }

    /// Polls the console until it contains `text`.
    func waitForConsole(_ name: String, toContain text: String, seconds: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let console = try? client.request("GET", "/v1/vms/\(name)/console"), console.text.contains(text) { return true }
            usleep(50_000)
        }
        return false
    }

    func waitForState(_ name: String, _ state: String, seconds: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? self.state(name))?.state == state { return true }
            usleep(50_000)
        }
        return false
    }

    /// Ends every VM process this test started (by the pids the daemon recorded), then the daemon.
    deinit {
        if let store = try? StateStore(stateDirectory: stateDirectory), let states = try? store.allStates() {
            for state in states {
                if let identity = try? store.processIdentity(name: state.name),
                   ProcessSnapshot.isSameProcessRunning(pid: identity.pid, startTicks: identity.startTicks) {
                    kill(identity.pid, SIGKILL)
                }
            }
        }
        terminate()
        Self.removeCgroups(partition: cgroupPartition)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// VMs killed by the test (or after their daemon was gone) leave their groups: removed here,
    /// with the partition, in every hierarchy.
    static func removeCgroups(partition: String) {
        guard let cgroups = try? VMCgroups.host(partition: partition) else { return }
        let mounts: Set<String> = switch cgroups.layout {
        case .v2(let mount, _): [mount]
        case .v1(let hierarchies): Set(hierarchies.values.map(\.mount))
        }
        for mount in mounts {
            let directory = mount + "/" + partition
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory), isDirectory.boolValue {
                    cgroups.remove(cgroups.group(for: name))
                }
            }
            rmdir(directory)
        }
    }
}

/// Live `vireo run` processes of the VM with this control socket: their command line names the
/// launch specification in the same directory.
func vmProcesses(controlSocket: String) -> [Int32] {
    let launchSpec = URL(fileURLWithPath: controlSocket).deletingLastPathComponent().appendingPathComponent("launch.json").path
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { Int32($0) }.filter { pid in
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.contains(launchSpec) && (ProcessSnapshot.read(pid: pid)?.isRunning ?? false)
    }
}
