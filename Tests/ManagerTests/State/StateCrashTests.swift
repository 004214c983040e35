import Foundation
import GRDB
import Testing
@testable import Manager
#if canImport(Glibc)
import Glibc
#endif

/// `kill -9` of a process writing the state never corrupts it and never tears a transaction:
/// a child re-executed from this test binary writes until SIGKILLed at a random instant.
@Suite struct StateCrashTests {
    static let directoryVariable = "VIREO_STATE_CRASH_DIR"
    static let logVariable = "VIREO_STATE_CRASH_LOG"
    static let names = ["alpha", "beta", "gamma", "delta"]

    /// The child side: each step writes one counter into a definition and a state row in one
    /// transaction, then appends the counter to a log, so the parent knows what was committed.
    @Test(.enabled(if: ProcessInfo.processInfo.environment[directoryVariable] != nil))
    func stateChildWritesUntilKilled() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let directory = environment[Self.directoryVariable], let log = environment[Self.logVariable] else { return }
        let store = try StateStore(stateDirectory: directory)
        let logFD = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard logFD >= 0 else { return }
        var counter = try Self.highestCounter(store) + 1
        while true {
            let name = Self.names[counter % Self.names.count]
            try store.write { db in
                let uuid = (try? store.record(named: name, in: db).uuid) ?? UUID()
                _ = try store.define(sampleDefinition(name, uuid: uuid, generation: counter, autostart: counter % 3 == 0), in: db)
                try store.setState(name: name, state: counter % 2 == 0 ? .running : .paused, reason: counter % 2 == 0 ? .booted : .user,
                                   pid: Int32(counter), socket: "/run/vireo/\(counter).sock", in: db)
            }
            // The public one-transaction paths too: autostart (row + JSON) and undefine/define.
            try store.setAutostart(name: name, on: counter % 5 == 0)
            if counter % 7 == 0 {
                // A kill between these two leaves "scratch" behind; the next child redefines it.
                let uuid = (try? store.record(named: "scratch").uuid) ?? UUID()
                try store.define(sampleDefinition("scratch", uuid: uuid, generation: counter))
                try store.undefine(name: "scratch")
            }
            let line = "\(counter)\n"
            _ = line.withCString { write(logFD, $0, strlen($0)) }
            counter += 1
        }
    }

    static func highestCounter(_ store: StateStore) throws -> Int {
        try store.allStates().compactMap(\.pid).map(Int.init).max() ?? 0
    }

    func spawnChild(directory: String, log: String, output: String) throws -> Process {
        let process = Process()
        // This very test binary, wherever it was started from (argv[0] may be relative).
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["--testing-library", "swift-testing", "--filter", "StateCrashTests/stateChildWritesUntilKilled"]
        var environment = ProcessInfo.processInfo.environment
        environment[Self.directoryVariable] = directory
        environment[Self.logVariable] = log
        process.environment = environment
        // Kept so a child that stopped on its own can say why.
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let handle = FileHandle(forWritingAtPath: output) ?? FileHandle.nullDevice
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    /// What the child's test run reported, from its first recorded issue.
    func childIssue(_ output: String) -> String {
        guard let text = try? String(contentsOfFile: output, encoding: .utf8) else { return "no output" }
        guard let start = text.range(of: "recorded an issue")?.lowerBound else { return String(text.suffix(300)) }
        return String(text[start...].prefix(600))
    }

    /// The last counter the child logged: every counter up to it was committed before logging.
    func lastLogged(_ log: String) -> Int {
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").last.flatMap { Int($0) } ?? 0
    }

    @Test func killedWritersLeaveAConsistentStore() throws {
        let dir = try StateTempDir()
        let log = dir.path + "/committed.log"
        var random = StateTestRandom(state: 0x5eed)
        var killsMidWork = 0
        for iteration in 0..<15 {
            let before = lastLogged(log)
            // The child counts on from what is stored, which may be one past the log.
            let storedBefore = try StateCrashTests.highestCounter(try StateStore(stateDirectory: dir.stateDirectory))
            let output = dir.path + "/child-\(iteration).out"
            let child = try spawnChild(directory: dir.stateDirectory, log: log, output: output)
            usleep(UInt32(150_000 + random.below(250_000)))
            kill(child.processIdentifier, SIGKILL)
            child.waitUntilExit()
            #expect(child.terminationReason == .uncaughtSignal, "child \(iteration) stopped on its own: \(childIssue(output))")
            let logged = lastLogged(log)
            if logged > before { killsMidWork += 1 }

            let store = try StateStore(stateDirectory: dir.stateDirectory)
            #expect(try store.read { try String.fetchAll($0, sql: "PRAGMA integrity_check") } == ["ok"], "iteration \(iteration)")
            #expect(try store.read { try Row.fetchAll($0, sql: "PRAGMA foreign_key_check") }.isEmpty, "iteration \(iteration)")
            let records = try store.all()  // throws if any stored definition no longer decodes
            let states = try store.allStates()
            #expect(!records.contains { $0.name == "scratch" } || states.contains { $0.name == "scratch" && $0.pid == nil })
            for record in records where record.name != "scratch" {
                let state = try #require(states.first { $0.uuid == record.uuid })
                let counter = try #require(generation(of: record.definition))
                // Written in one transaction, so they agree whatever instant the kill hit.
                #expect(state.pid == Int32(counter), "iteration \(iteration): \(record.name) definition \(counter), state \(String(describing: state.pid))")
                #expect(state.controlSocket == "/run/vireo/\(counter).sock")
                #expect(state.state == (counter % 2 == 0 ? .running : .paused))
                // The autostart column and the stored JSON are written together as well.
                let json = try store.read { try String.fetchOne($0, sql: "SELECT definition FROM vm WHERE uuid = ?", arguments: [record.uuid.storedText]) }
                let stored = try JSONDecoder().decode(VMDefinition.self, from: Data((json ?? "").utf8))
                #expect(stored.autostart == record.autostart, "iteration \(iteration): \(record.name)")
            }
            // Nothing committed was lost: the newest counter is the last one committed and logged,
            // or the one committed just before the kill and not yet logged.
            let highest = try StateCrashTests.highestCounter(store)
            let committed = max(logged, storedBefore)
            #expect(highest == committed || highest == committed + 1, "iteration \(iteration): store \(highest), log \(logged), before \(storedBefore)")
        }
        // The children really worked between kills, so the kills landed during writes.
        #expect(killsMidWork >= 10, "only \(killsMidWork) of 15 children committed anything")
        #expect(lastLogged(log) > 100)
    }
}
