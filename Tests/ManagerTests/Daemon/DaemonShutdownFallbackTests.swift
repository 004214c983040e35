import Foundation
import Testing
@testable import Manager

/// A VMM without the ACPI power button answers PUT /vm/shutdown with 501: the daemon must pass
/// that on as a clear error that names the way out (destroy), and must not mark a shutdown.
/// The "VMM" here is a `sleep` process plus a scripted control socket, so no KVM is needed.
@Suite struct DaemonShutdownFallbackTests {
    @Test func shutdownWithoutPowerButtonSaysToUseDestroy() throws {
        let directory = "/tmp/vds-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try StateStore(stateDirectory: directory + "/state")
        try store.define(VMDefinition(name: "old", memory: 32 << 20, os: OSBoot(kernel: "/k")))
        let environment = DaemonEnvironment(store: store, events: EventBus(), stateDirectory: directory + "/state",
                                            executable: "/nonexistent", socketPath: directory + "/api.sock",
                                            migrationListen: "tcp:0.0.0.0:0", restartBackoff: RestartBackoff(), log: { _ in })
        let socket = directory + "/control.sock"
        let server = try ScriptedControlSocket(path: socket, status: 501,
                                               body: #"{"error": "graceful shutdown needs the ACPI power button"}"#)
        let vm = Process()
        vm.executableURL = URL(fileURLWithPath: "/bin/sleep")
        vm.arguments = ["60"]
        try vm.run()
        defer { kill(vm.processIdentifier, SIGKILL); vm.waitUntilExit() }
        let ticks = try #require(ProcessSnapshot.read(pid: vm.processIdentifier)).startTicks
        let controller = VMController(name: "old", environment: environment)
        try controller.adopt(VMProcess(identity: ProcessIdentity(pid: vm.processIdentifier, startTicks: ticks,
                                                                 controlSocket: socket, statusFile: directory + "/status.json"),
                                       isChild: false), state: .running, reason: .booted)

        #expect(throws: APIError(501, "graceful shutdown of domain 'old' is not supported by this VMM yet (no ACPI power button); use 'vireo destroy old' to stop it")) {
            try controller.queue.sync { try controller.shutdown() }
        }
        #expect(server.requests == ["PUT /vm/shutdown"])
        #expect(controller.process?.intent == StopIntent.none)
        #expect(try store.state(named: "old").state == .running)
        server.close()
    }
}
