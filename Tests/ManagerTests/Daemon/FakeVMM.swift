import VMContract
import Foundation
import Testing
@testable import Manager

/// A daemon whose VMs are fake `vireo run`s, so lifecycle paths run without KVM. The daemon spawns
/// a shell script with the real command line (`run --launch-spec FILE`); the script stays up until
/// the control socket tells it to exit (or fails at once, like a VMM that cannot resume a
/// snapshot, when the launch restores a file whose path says "corrupt"). Each VM's control socket
/// is a `ScriptedControlSocket` that answers as the VMM does, with VMContract types.
final class FakeVMMDaemon {
    let server: InProcessDaemon
    private var sockets: [ScriptedControlSocket] = []

    init() throws {
        let scripts = "/tmp/vf-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: scripts, withIntermediateDirectories: true)
        let executable = scripts + "/fake-vireo"
        try Self.script.write(toFile: executable, atomically: true, encoding: .utf8)
        chmod(executable, 0o755)
        server = try InProcessDaemon(executable: executable, cleanUp: [scripts])
    }

    var client: HTTPClient { server.unix }
    var store: StateStore { server.daemon.store }
    var stateDirectory: String { server.directory + "/state" }
    func vmDirectory(_ name: String) -> String { stateDirectory + "/vms/" + name }

    static let script = """
        #!/bin/sh
        # A fake `vireo run --launch-spec FILE` for the daemon tests.
        [ "$1 $2" = "run --launch-spec" ] || { echo "fake vireo: unexpected arguments: $*" >&2; exit 2; }
        dir=$(dirname "$3")
        rm -f "$dir/fake-exit"
        if grep -q '"restore"' "$3" && grep -q corrupt "$3"; then
          echo "vireo: cannot restore the snapshot: not a Vireo snapshot (bad magic)" >&2
          exit 1
        fi
        touch "$dir/fake-alive"
        i=0
        while [ ! -e "$dir/fake-exit" ] && [ -d "$dir" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
        rm -f "$dir/fake-alive"
        exit 0
        """

    /// Defines `name` (the fake kernel is never read) and serves its control socket.
    @discardableResult
    func define(_ name: String, extraYAML: String = "", failSnapshot: Bool = false) throws -> FakeControl {
        let yaml = "name: \(name)\nmemory: 32M\nos:\n  kernel: /fake/vmlinux\n" + extraYAML
        let response = try client.request("POST", "/v1/vms", body: Array(yaml.utf8))
        guard response.status == 201 else { throw APIError(response.status, response.text) }
        let directory = vmDirectory(name)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let control = FakeControl(directory: directory, failSnapshot: failSnapshot)
        sockets.append(try ScriptedControlSocket(path: directory + "/control.sock") { control.answer($0) })
        return control
    }

    func state(_ name: String) throws -> VMStateBody {
        try decodeJSON(VMStateBody.self, try client.request("GET", "/v1/vms/\(name)/state"))
    }

    func post(_ path: String, _ body: SnapshotFileBody? = nil) throws -> HTTPResponse {
        try client.request("POST", path, body: try body.map { Array(try JSONEncoder().encode($0)) } ?? [])
    }

    /// The launch specification the daemon wrote for the VM's last start.
    func launchSpec(_ name: String) throws -> LaunchSpec {
        let bytes = try #require(readSmallFileBytes(vmDirectory(name) + "/launch.json", limit: LaunchSpec.maximumEncodedBytes))
        return try ContractJSON.decode(LaunchSpec.self, from: bytes)
    }

    deinit {
        // Every fake VMM still up exits (and would once its directory went away with the daemon's).
        for socket in sockets { socket.close() }
        if let names = try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/vms") {
            for name in names { _ = FileManager.default.createFile(atPath: vmDirectory(name) + "/fake-exit", contents: nil) }
        }
    }
}

/// What one fake VM's control socket answers, and the snapshot requests it received.
final class FakeControl: @unchecked Sendable {
    let directory: String
    let failSnapshot: Bool
    private let lock = NSLock()
    private var snapshots: [SnapshotRequest] = []

    init(directory: String, failSnapshot: Bool) {
        self.directory = directory
        self.failSnapshot = failSnapshot
    }

    var snapshotRequests: [SnapshotRequest] { lock.lock(); defer { lock.unlock() }; return snapshots }

    /// What `GET /vm/snapshot/progress` reports.
    static let progress = SnapshotProgress(phase: .writing, path: "/saves/vm1.save", ramBytesDone: 1 << 30, ramBytesTotal: 4 << 30)

    /// The disk counters `GET /vm/stats` reports.
    static let disk = DeviceStatistics.Disk(path: "/images/a.img", readRequests: 3, readBytes: 1536, writeRequests: 2,
                                            writeBytes: 1024, flushRequests: 1, errors: 0)

    func answer(_ request: ScriptedRequest) -> String {
        // A VMM that is not up has no socket: the caller sees the connection fail.
        guard FileManager.default.fileExists(atPath: directory + "/fake-alive") else { return "" }
        switch (request.method, request.path) {
        case (ControlRoute.info.method, ControlRoute.info.path):
            return json(200, VMInfo(state: "running", vcpus: 1, memoryBytes: 32 << 20, boot: "fake", cmdline: "", hostProfile: "native",
                                    outcome: nil, powerButtonEnabled: false, powerButtonPending: false, restoredFrom: nil))
        case (ControlRoute.stats.method, ControlRoute.stats.path):
            return json(200, VMContract.VMStats(exits: 1, exitReasons: [], cpuUserSeconds: 0, cpuSystemSeconds: 0, rssBytes: 0,
                                     devices: DeviceStatistics(disks: [Self.disk])))
        case (ControlRoute.pause.method, ControlRoute.pause.path), (ControlRoute.resume.method, ControlRoute.resume.path):
            return ScriptedControlSocket.http(204, "")
        case (ControlRoute.shutdown.method, ControlRoute.shutdown.path):
            return json(202, PowerButtonResult(pressed: true, guestListening: false))
        case (ControlRoute.stop.method, ControlRoute.stop.path):
            exit(RunStatus(outcome: .stopped, detail: "stopped by the host", exitStatus: 0))
            return ScriptedControlSocket.http(204, "")
        case (ControlRoute.snapshot.method, ControlRoute.snapshot.path):
            guard let snapshot = try? ContractJSON.decode(SnapshotRequest.self, from: request.body) else {
                return json(400, ControlError(error: "expected {\"path\": \"FILE\", \"then\": \"keep\" or \"stop\"}"))
            }
            lock.lock(); snapshots.append(snapshot); lock.unlock()
            if failSnapshot { return json(500, ControlError(error: "snapshot failed: No space left on device")) }
            _ = FileManager.default.createFile(atPath: snapshot.path, contents: Data("fake snapshot".utf8))
            if snapshot.then == .stop { exit(RunStatus(outcome: .saved, detail: "saved to \(snapshot.path)", exitStatus: 0)) }
            return json(200, SnapshotResult(path: snapshot.path, bytes: 13, pausedMilliseconds: 1,
                                            state: snapshot.then == .stop ? "stopped" : "running"))
        case (ControlRoute.snapshotProgress.method, ControlRoute.snapshotProgress.path):
            return json(200, Self.progress)
        default:
            return json(404, ControlError(error: "no such resource: \(request.path)"))
        }
    }

    /// As the VMM ends: the status file first, then the process goes.
    private func exit(_ status: RunStatus) {
        try? status.write(to: directory + "/status.json")
        _ = FileManager.default.createFile(atPath: directory + "/fake-exit", contents: nil)
    }

    private func json(_ status: Int, _ value: some Encodable) -> String {
        ScriptedControlSocket.http(status, String(decoding: (try? ContractJSON.encode(value)) ?? [], as: UTF8.self))
    }
}
