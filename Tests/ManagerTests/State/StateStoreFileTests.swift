import Foundation
import GRDB
import Testing
@testable import Manager

/// The database file itself: creation, refusal of foreign files, migrations, concurrent use.
@Suite struct StateStoreFileTests {
    @Test func createsAPrivateStateDirectoryAndFile() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory + "/nested")
        try store.define(sampleDefinition("vm"))
        let attributes = try FileManager.default.attributesOfItem(atPath: dir.stateDirectory + "/nested")
        #expect((attributes[.posixPermissions] as? Int) == 0o700)
        let file = try FileManager.default.attributesOfItem(atPath: store.path)
        #expect((file[.posixPermissions] as? Int) == 0o600)
        #expect(try store.read { try String.fetchOne($0, sql: "PRAGMA journal_mode") } == "wal")
    }

    @Test func aFileThatIsNotSQLiteIsRefusedAndLeftUnchanged() throws {
        let dir = try StateTempDir()
        try FileManager.default.createDirectory(atPath: dir.stateDirectory, withIntermediateDirectories: true)
        let path = dir.stateDirectory + "/" + StateStore.fileName
        let content = Data(("name: not a database\n" + String(repeating: "x", count: 5000)).utf8)
        try content.write(to: URL(fileURLWithPath: path))
        #expect(throws: StateStoreError.notADatabase(path: path)) { try StateStore(stateDirectory: dir.stateDirectory) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == content)
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
        #expect(!FileManager.default.fileExists(atPath: path + "-shm"))
        let message = StateStoreError.notADatabase(path: path).description
        #expect(message.contains(path) && !message.contains("\n"))
    }

    @Test func aShortForeignFileIsRefusedToo() throws {
        let dir = try StateTempDir()
        try FileManager.default.createDirectory(atPath: dir.stateDirectory, withIntermediateDirectories: true)
        let path = dir.stateDirectory + "/" + StateStore.fileName
        try Data("SQLite".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: StateStoreError.notADatabase(path: path)) { try StateStore(stateDirectory: dir.stateDirectory) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data("SQLite".utf8))
    }

    @Test func reopeningKeepsDataAndAppliesMigrationsOnce() throws {
        let dir = try StateTempDir()
        let definition = sampleDefinition("keep", autostart: true)
        do {
            let store = try StateStore(stateDirectory: dir.stateDirectory)
            try store.define(definition)
            try store.setState(name: "keep", state: .running, reason: .booted, pid: 99, socket: "/run/x.sock")
            #expect(try store.appliedMigrations() == ["v1-vm-and-state", "v2-process-identity", "v3-saved-image", "v4-storage-pools"])
        }
        for _ in 0..<3 {
            let store = try StateStore(stateDirectory: dir.stateDirectory)
            #expect(try store.appliedMigrations() == ["v1-vm-and-state", "v2-process-identity", "v3-saved-image", "v4-storage-pools"])
            #expect(try store.record(named: "keep").definition == definition)
            #expect(try store.state(named: "keep").pid == 99)
            #expect(try store.read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM grdb_migrations") } == 4)
        }
    }

    @Test func aDatabaseFromANewerVireoIsRefused() throws {
        let dir = try StateTempDir()
        do {
            let store = try StateStore(stateDirectory: dir.stateDirectory)
            try store.write { try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')") }
        }
        let path = dir.stateDirectory + "/" + StateStore.fileName
        #expect(throws: StateStoreError.newerSchema(path: path)) { try StateStore(stateDirectory: dir.stateDirectory) }
    }

    @Test func concurrentWritersAndReadersNeitherFailNorLoseUpdates() throws {
        let dir = try StateTempDir()
        let store = try StateStore(stateDirectory: dir.stateDirectory)
        let threads = 8
        let perThread = 50
        for thread in 0..<threads { try store.define(sampleDefinition("vm\(thread)")) }
        try store.define(sampleDefinition("shared"))
        let failures = Failures()
        DispatchQueue.concurrentPerform(iterations: threads * 2) { index in
            let thread = index % threads
            do {
                if index < threads {
                    for call in 1...perThread {
                        let state: VMRunState = call % 2 == 0 ? .paused : .running
                        try store.setState(name: "vm\(thread)", state: state, reason: call % 2 == 0 ? .user : .unpaused,
                                           pid: Int32(call), socket: "/run/vm\(thread).sock")
                        // A read-modify-write of the shared VM: serialized writers lose none of them.
                        try store.write { db in
                            let current = try store.state(named: "shared", in: db)
                            try store.setState(name: "shared", state: .running, reason: .booted,
                                               pid: (current.pid ?? 0) + 1, socket: current.controlSocket, in: db)
                        }
                    }
                } else {
                    for _ in 0..<perThread { _ = try store.all(); _ = try store.allStates() }
                }
            } catch {
                failures.add("\(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all.prefix(3))")
        let states = try store.allStates()
        #expect(states.count == threads + 1)
        for state in states where state.name != "shared" {
            #expect(state.pid == Int32(perThread) && state.state == .paused && state.reason == .user, "\(state.name)")
        }
        #expect(try store.state(named: "shared").pid == Int32(threads * perThread))
    }
}

/// Errors collected from worker threads.
final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func add(_ message: String) { lock.withLock { messages.append(message) } }
    var all: [String] { lock.withLock { messages } }
}
