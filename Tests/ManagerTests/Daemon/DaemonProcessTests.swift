import VMContract
import Foundation
import Testing
@testable import Manager

/// The pieces that decide what a VM process's end means, and how a process is recognised again.
@Suite struct DaemonProcessTests {
    @Test func statLineIsParsedFromTheLastParenthesis() {
        // A command name may contain ") " itself; fields count from the last ')'.
        let line = "4242 (vireo) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 987654 1000 50 0 0"
        let snapshot = ProcessSnapshot.parse(stat: line, pid: 4242)
        #expect(snapshot?.state == "S")
        #expect(snapshot?.userTicks == 250 && snapshot?.systemTicks == 75)
        #expect(snapshot?.startTicks == 987654)
        #expect(ProcessSnapshot.parse(stat: "4242 (vireo) S 1 2", pid: 4242) == nil)
        #expect(ProcessSnapshot.parse(stat: "garbage", pid: 1) == nil)
    }

    @Test func ownProcessIsRecognisedOnlyWithItsStartTime() throws {
        let me = try #require(ProcessSnapshot.read(pid: getpid()))
        #expect(me.isRunning)
        #expect(ProcessSnapshot.isSameProcessRunning(pid: getpid(), startTicks: me.startTicks))
        #expect(!ProcessSnapshot.isSameProcessRunning(pid: getpid(), startTicks: me.startTicks + 1))
        #expect(ProcessSnapshot.residentBytes(pid: getpid()).map { $0 > 0 } == true)
        #expect(ProcessSnapshot.read(pid: -1) == nil)
    }

    @Test func exitsAreClassifiedLikeLibvirt() {
        let poweroff = RunStatus(outcome: .poweroff, detail: "", exitStatus: 0)
        let failed = RunStatus(outcome: .failed, detail: "triple fault", exitStatus: 1)
        let stopped = RunStatus(outcome: .stopped, detail: "", exitStatus: 0)
        #expect(ExitClassifier.reason(intent: .none, status: poweroff, waitStatus: 0) == .shutdown)
        #expect(ExitClassifier.reason(intent: .destroy, status: stopped, waitStatus: 0) == .destroyed)
        #expect(ExitClassifier.reason(intent: .none, status: failed, waitStatus: 1 << 8) == .crashed)
        #expect(ExitClassifier.reason(intent: .shutdown, status: stopped, waitStatus: 0) == .shutdown)
        // Without a status file: killed by a signal is a crash, a nonzero exit a failure.
        #expect(ExitClassifier.reason(intent: .none, status: nil, waitStatus: 9) == .crashed)
        #expect(ExitClassifier.reason(intent: .none, status: nil, waitStatus: 1 << 8) == .failed)
        #expect(ExitClassifier.reason(intent: .none, status: nil, waitStatus: nil) == .unknown)
        // A save: the VMM's status says so; without one, a clean exit after asking, or any end
        // once the VMM confirmed the file, is a save too. A failure while saving is a crash.
        let saved = RunStatus(outcome: .saved, detail: "saved to /f", exitStatus: 0)
        #expect(ExitClassifier.reason(intent: .none, status: saved, waitStatus: 0) == .saved)
        #expect(ExitClassifier.reason(intent: .save("/f"), status: nil, waitStatus: 0) == .saved)
        #expect(ExitClassifier.reason(intent: .saved("/f"), status: nil, waitStatus: 9) == .saved)
        #expect(ExitClassifier.reason(intent: .save("/f"), status: failed, waitStatus: 1 << 8) == .crashed)
        #expect(ExitClassifier.reason(intent: .save("/f"), status: nil, waitStatus: 9) == .crashed)
    }

    @Test func statusFileRoundTripsAndJunkIsIgnored() throws {
        let path = NSTemporaryDirectory() + "vireo-status-\(UUID().uuidString).json"
        defer { unlink(path) }
        let status = RunStatus(outcome: .debugExit, detail: "guest wrote 3", exitStatus: 7)
        try status.write(to: path)
        #expect(RunStatus.read(from: path) == status)
        #expect(readSmallFile(path)?.contains(#""outcome":"debug-exit""#) == true)
        try Data("{\"outcome\": \"exploded\"}".utf8).write(to: URL(fileURLWithPath: path))
        #expect(RunStatus.read(from: path) == nil)
    }

    @Test func launchSpecCarriesTheDefinition() throws {
        var definition = VMDefinition(name: "web", memory: 64 << 20, vcpus: 2,
                                      os: OSBoot(kernel: "/k", initrd: "/i", cmdline: "console=ttyS0 a=\"b c\""),
                                      disks: [Disk(source: "/d.qcow2", format: .qcow2, target: "vda", readonly: true, serial: "S1"),
                                              Disk(source: "/e.img", target: "vdb")],
                                      interfaces: [NetworkInterface(type: .tap, source: "tap0", mac: MACAddress("52:54:00:00:00:01")!),
                                                   NetworkInterface(type: .bridge, source: "br0", mac: MACAddress("52:54:00:00:00:02")!),
                                                   NetworkInterface(type: .network, source: "vnet", mac: MACAddress("52:54:00:00:00:03")!)])
        definition.onReboot = .destroy
        let paths = VMPaths(stateDirectory: "/s", name: "web")
        let spec = try VMLaunch.spec(for: definition, paths: paths)
        #expect(spec.kernel == "/k" && spec.initrd == "/i" && spec.restore == nil)
        #expect(spec.cmdline == "console=ttyS0 a=\"b c\"")
        #expect(spec.cpus == 2 && spec.memoryBytes == 64 << 20)
        #expect(spec.onReboot == .exit)
        #expect(spec.apiSocket == "/s/vms/web/control.sock")
        #expect(spec.serialLog == "/s/vms/web/serial.log")
        // The guest's output goes to the serial log alone, which rotates: a guest cannot fill the disk.
        #expect(spec.serialLogLimit == VMLaunch.serialLogLimit && spec.consoleToStdout == false)
        #expect(spec.statusFile == "/s/vms/web/status.json")
        #expect(spec.devices.disks == [DiskOptions(path: "/d.qcow2", readOnly: true, format: .qcow2, serial: "S1"),
                                       DiskOptions(path: "/e.img", readOnly: false, format: .raw, serial: nil)])
        #expect(spec.devices.networks == [NetworkOptions(attachment: .tap("tap0"), mac: [0x52, 0x54, 0, 0, 0, 1]),
                                          NetworkOptions(attachment: .bridge("br0"), mac: [0x52, 0x54, 0, 0, 0, 2]),
                                          NetworkOptions(attachment: .bridge("vnet"), mac: [0x52, 0x54, 0, 0, 0, 3])])
        #expect(!spec.devices.virtioConsole && !spec.devices.entropy)
        definition.onReboot = .restart
        #expect(try VMLaunch.spec(for: definition, paths: paths).onReboot == .restart)

        // A restore names the snapshot instead of the kernel, and keeps the definition's devices.
        let restore = try VMLaunch.spec(for: definition, paths: paths, restore: RestoreSource(path: "/saves/web"))
        #expect(restore.kernel == nil && restore.initrd == nil)
        #expect(restore.restore == RestoreSource(path: "/saves/web", memory: .mapped))
        #expect(restore.devices == spec.devices && restore.apiSocket == spec.apiSocket)
    }

    @Test func launchSpecFileIsPrivateAndParsesBack() throws {
        let directory = StateTempDirForDaemon()
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        let definition = VMDefinition(name: "f", memory: 32 << 20, os: OSBoot(kernel: "/k"),
                                      disks: [Disk(source: "/d,with=comma.img", target: "vda")])
        let spec = try VMLaunch.spec(for: definition, paths: VMPaths(stateDirectory: directory.path, name: "f"))
        let file = directory.path + "/launch.json"
        try VMLaunch.write(spec, to: file)
        // Replaced whole on the next launch, never appended to or left half-written.
        try VMLaunch.write(spec, to: file)
        let bytes = try #require(readSmallFileBytes(file, limit: LaunchSpec.maximumEncodedBytes))
        #expect(try ContractJSON.decode(LaunchSpec.self, from: bytes) == spec)
        // A path with commas survives as a value: no option string is built and parsed back.
        #expect(try ContractJSON.decode(LaunchSpec.self, from: bytes).devices.disks.first?.path == "/d,with=comma.img")
        let mode = try #require(FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int)
        #expect(mode == 0o600)
        #expect(!FileManager.default.fileExists(atPath: file + ".tmp"))
        #expect(VMLaunch.arguments(specFile: file) == ["run", "--launch-spec", file])
        #expect(throws: LaunchSpecError.self) { try VMLaunch.write(spec, to: directory.path + "/missing/launch.json") }
    }

    @Test func processIdentityIsStoredWithTheState() throws {
        let directory = StateTempDirForDaemon()
        let store = try StateStore(stateDirectory: directory.path)
        try store.define(VMDefinition(name: "p", memory: 32 << 20, os: OSBoot(kernel: "/k")))
        #expect(try store.processIdentity(name: "p") == nil)
        let identity = ProcessIdentity(pid: 1234, startTicks: 99, controlSocket: "/c.sock", statusFile: "/s.json")
        try store.setActive(name: "p", state: .running, reason: .booted, process: identity)
        #expect(try store.processIdentity(name: "p") == identity)
        #expect(try store.state(named: "p").pid == 1234)
        try store.setInactive(name: "p", state: .shutoff, reason: .destroyed)
        #expect(try store.processIdentity(name: "p") == nil)
        #expect(try store.state(named: "p").reason == .destroyed)
        #expect(try store.appliedMigrations().contains("v2-process-identity"))
    }
}

final class StateTempDirForDaemon {
    let path = NSTemporaryDirectory() + "vireo-daemon-state-" + UUID().uuidString
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

import GRDB

@Suite struct ProcessIdentityMigrationTests {
    /// A state dir written before the process columns existed is upgraded in place: its VMs and
    /// states are kept, and a VM recorded as running without a start time has no usable identity
    /// (so a restarted daemon marks it shut off instead of trusting a bare pid).
    @Test func aVersionOneDatabaseIsUpgradedKeepingItsData() throws {
        let directory = StateTempDirForDaemon()
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        do {
            let pool = try DatabasePool(path: directory.path + "/" + StateStore.fileName)
            try StateSchema.migrator.migrate(pool, upTo: "v1-vm-and-state")
            let definition = VMDefinition(name: "old", memory: 32 << 20, os: OSBoot(kernel: "/k"))
            try pool.write { db in
                try db.execute(sql: "INSERT INTO vm VALUES (?, 'old', ?, 0, ?, ?)",
                               arguments: [definition.uuid.storedText, try StateStore.encode(definition), Date(), Date()])
                try db.execute(sql: "INSERT INTO vm_state (uuid, state, reason, pid, control_socket, updated_at) VALUES (?, 'running', 'booted', 4242, '/c.sock', ?)",
                               arguments: [definition.uuid.storedText, Date()])
            }
        }
        let store = try StateStore(stateDirectory: directory.path)
        #expect(try store.appliedMigrations() == ["v1-vm-and-state", "v2-process-identity", "v3-saved-image", "v4-storage-pools"])
        #expect(try store.state(named: "old").state == .running)
        #expect(try store.state(named: "old").pid == 4242)
        #expect(try store.processIdentity(name: "old") == nil)
    }
}
