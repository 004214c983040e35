import Foundation
import GRDB
import Testing
@testable import Manager

@Suite struct StateStoreTests {
    @Test func defineRedefineAndUndefine() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        let original = sampleDefinition("vm1", generation: 1)
        let first = try store.define(original)
        #expect(first.definition == original)
        #expect(first.uuid == original.uuid && first.name == "vm1" && !first.autostart)
        #expect(try store.state(named: "vm1").state == .shutoff)

        var changed = original
        changed.vcpus = 4
        changed.os.cmdline = "console=ttyS0 gen=2"
        let second = try store.define(changed)
        #expect(second.definition == changed)
        #expect(second.createdAt == first.createdAt)
        #expect(second.updatedAt >= first.updatedAt)
        #expect(try store.all().map(\.definition) == [changed])

        try store.undefine(name: "vm1")
        #expect(try store.all().isEmpty)
        #expect(throws: StateStoreError.unknownVM(name: "vm1")) { try store.record(named: "vm1") }
        #expect(throws: StateStoreError.unknownVM(name: "vm1")) { try store.state(named: "vm1") }
        #expect(throws: StateStoreError.unknownVM(name: "vm1")) { try store.undefine(name: "vm1") }
        // The state row went with the VM (foreign key cascade), so nothing is left behind.
        #expect(try store.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM vm_state") } == 0)
    }

    @Test func nameClashAndUUIDReuseAreRefused() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        let first = try store.define(sampleDefinition("web"))
        let clash = sampleDefinition("web")
        #expect(throws: StateStoreError.duplicateName(name: "web", existingUUID: first.uuid)) { try store.define(clash) }
        let rename = sampleDefinition("web2", uuid: first.uuid)
        #expect(throws: StateStoreError.uuidInUse(uuid: first.uuid, existingName: "web")) { try store.define(rename) }
        #expect(try store.all().map(\.uuid) == [first.uuid])
        let message = StateStoreError.duplicateName(name: "web", existingUUID: first.uuid).description
        #expect(message.contains("'web'") && message.contains(first.uuid.uuidString.lowercased()) && !message.contains("\n"))
    }

    @Test func undefineIsRefusedWhileTheVMHasAProcess() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        try store.define(sampleDefinition("busy"))
        try store.setState(name: "busy", state: .running, reason: .booted, pid: 4242, socket: "/run/vireo/busy.sock")
        #expect(throws: StateStoreError.vmActive(name: "busy", state: .running)) { try store.undefine(name: "busy") }
        try store.setState(name: "busy", state: .paused, reason: .user, pid: 4242, socket: "/run/vireo/busy.sock")
        #expect(throws: StateStoreError.vmActive(name: "busy", state: .paused)) { try store.undefine(name: "busy") }
        #expect(try store.record(named: "busy").name == "busy")
        #expect(StateStoreError.vmActive(name: "busy", state: .paused).description == "VM 'busy' is paused; stop it first")
        try store.setState(name: "busy", state: .shutoff, reason: .destroyed)
        try store.undefine(name: "busy")
        #expect(try store.all().isEmpty)
    }

    @Test func autostartIsListedAndKeptInTheDefinition() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        try store.define(sampleDefinition("c", autostart: true))
        try store.define(sampleDefinition("a"))
        try store.define(sampleDefinition("b"))
        #expect(try store.autostartNames() == ["c"])
        try store.setAutostart(name: "a", on: true)
        try store.setAutostart(name: "c", on: false)
        #expect(try store.autostartNames() == ["a"])
        let a = try store.record(named: "a")
        #expect(a.autostart && a.definition.autostart)
        // The JSON itself changed too, not only the column: what dumpxml would show agrees.
        let json = try store.read { try String.fetchOne($0, sql: "SELECT definition FROM vm WHERE name = 'a'") }
        #expect(try JSONDecoder().decode(VMDefinition.self, from: Data((json ?? "").utf8)).autostart)
        #expect(throws: StateStoreError.unknownVM(name: "zz")) { try store.setAutostart(name: "zz", on: true) }
    }

    @Test(arguments: [
        (VMRunState.running, VMStateReason.booted), (.paused, .user), (.shutdown, .user), (.shutoff, .shutdown),
        (.shutoff, .destroyed), (.shutoff, .failed), (.crashed, .crashed), (.crashed, .panicked), (.running, .unpaused),
    ])
    func statesAndReasonsRoundTrip(state: VMRunState, reason: VMStateReason) throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        try store.define(sampleDefinition("vm"))
        let pid: Int32? = state.isActive ? 31337 : nil
        let socket = state.isActive ? "/run/vireo/vm.sock" : nil
        try store.setState(name: "vm", state: state, reason: reason, pid: pid, socket: socket)
        let reopened = try StateStore(stateDirectory: dir.stateDirectory)
        let stored = try reopened.state(named: "vm")
        #expect(stored.state == state && stored.reason == reason)
        #expect(stored.pid == pid && stored.controlSocket == socket)
        #expect(try reopened.allStates().map(\.state) == [state])
    }

    @Test func badSetStateCallsAreTypedErrors() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        #expect(throws: StateStoreError.unknownVM(name: "ghost")) {
            try store.setState(name: "ghost", state: .running, reason: .booted)
        }
        try store.define(sampleDefinition("vm"))
        #expect(throws: StateStoreError.invalidPID(name: "vm", pid: 0)) {
            try store.setState(name: "vm", state: .running, reason: .booted, pid: 0)
        }
        #expect(throws: StateStoreError.invalidPID(name: "vm", pid: -1)) {
            try store.setState(name: "vm", state: .running, reason: .booted, pid: -1)
        }
        #expect(try store.state(named: "vm").state == .shutoff)
    }

    @Test func aFailedTransactionLeavesNothingBehind() throws {
        struct Abort: Error {}
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        #expect(throws: Abort.self) {
            try store.write { db in
                _ = try store.define(sampleDefinition("half"), in: db)
                try store.setState(name: "half", state: .running, reason: .booted, pid: 7, socket: nil, in: db)
                throw Abort()
            }
        }
        #expect(try store.all().isEmpty)
        #expect(try store.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM vm_state") } == 0)
    }

    @Test func corruptRowsNameTheVM() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        try store.define(sampleDefinition("good"))
        try store.define(sampleDefinition("bad"))
        try store.write { try $0.execute(sql: "UPDATE vm SET definition = '{\"name\": \"bad\", \"memory\": 1' WHERE name = 'bad'") }
        #expect(throws: StateStoreError.corruptRow(name: "bad", reason: "definition is not valid JSON")) { try store.all() }
        #expect(try store.record(named: "good").name == "good")
        // Valid JSON that fails the definition's own validation is corrupt too, with the field named.
        try store.write { try $0.execute(sql: "UPDATE vm SET definition = json_set(?, '$.vcpus', 0) WHERE name = 'bad'",
                                         arguments: [try StateStore.encode(sampleDefinition("bad"))]) }
        let error = #expect(throws: StateStoreError.self) { try store.record(named: "bad") }
        #expect(error?.description.contains("'bad'") == true && error?.description.contains("vcpus") == true)
        try store.write { try $0.execute(sql: "UPDATE vm_state SET state = 'flying' WHERE uuid = (SELECT uuid FROM vm WHERE name = 'good')") }
        #expect(throws: StateStoreError.corruptRow(name: "good", reason: "unknown state 'flying'")) { try store.state(named: "good") }
        // A VM whose definition is corrupt can still be removed: undefine does not decode it.
        try store.undefine(name: "bad")
        #expect(throws: StateStoreError.unknownVM(name: "bad")) { try store.record(named: "bad") }
    }
}
