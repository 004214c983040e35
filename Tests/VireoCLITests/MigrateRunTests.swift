import Foundation
import Testing

/// Live migration between real `vireo run` processes, driven the way a user does it: a
/// destination started with `--incoming`, `curl -X PUT .../vm/migrate` on the source's socket.
@Suite(.serialized) struct MigrateRunTests {
    final class VM {
        let process = Process()
        let output: String
        let api: String

        init(_ arguments: [String], directory: String, name: String) throws {
            output = directory + "/\(name).out"
            api = directory + "/\(name).api"
            FileManager.default.createFile(atPath: output, contents: nil)
            FileManager.default.createFile(atPath: output + ".err", contents: nil)
            process.executableURL = VireoBinary.executable
            process.arguments = ["run", "--api-socket", api] + arguments
            process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: output))
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: output + ".err"))
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }

        var text: String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        var errors: String { (try? String(contentsOfFile: output + ".err", encoding: .utf8)) ?? "" }
        var tickLines: Int { text.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("user: tick ") }.count }

        func waitFor(_ condition: () -> Bool, seconds: Double = 60) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if condition() { return true }
                usleep(20_000)
            }
            return condition()
        }

        /// The exit status once the process has ended (killed after `seconds`).
        func waitForExit(seconds: Double = 60) -> Int32? {
            guard waitFor({ !process.isRunning }, seconds: seconds) else {
                process.terminate()
                process.waitUntilExit()
                return nil
            }
            return process.terminationStatus
        }

        func call(_ method: String, _ path: String, _ body: String? = nil) throws -> String {
            var arguments = ["-s", "--max-time", "30", "--unix-socket", api, "-X", method]
            if let body { arguments += ["-d", body] }
            return try VireoBinary.runProcess("/usr/bin/curl", arguments + ["http://vm" + path]).stdout
        }
    }

    /// The counting guest (rewriting 8 MiB per tick and checking each page) moves between four
    /// `vireo run` processes and back: each source exits 0, each destination counts on from
    /// where the source stopped, and the output of all of them is one unbroken count.
    @Test func countingGuestMovesBetweenVireoRunProcesses() throws {
        _ = VireoBinary.buildGuests
        let directory = NSTemporaryDirectory() + "vireo-migrate-run-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }

        var current = try VM(["--kernel", VireoBinary.guest("mb-user.elf"), "--memory", "64M",
                              "--cmdline", "ticks=1000000 spin=50000000 fill=4 churn=8"], directory: directory, name: "vm0")
        var all = [current]
        defer { for vm in all where vm.process.isRunning { vm.process.terminate() } }
        #expect(current.waitFor { current.tickLines >= 3 }, "\(current.text.suffix(200)) \(current.errors)")
        for round in 1...4 {
            let socket = directory + "/in\(round).sock"
            let next = try VM(["--incoming", "unix:" + socket], directory: directory, name: "vm\(round)")
            all.append(next)
            #expect(next.waitFor { FileManager.default.fileExists(atPath: socket) }, "\(next.errors)")
            // Said just after the socket is bound: the reader may not have it yet when the file exists.
            #expect(next.waitFor { next.errors.contains("waiting for a migration on unix:\(socket)") }, "\(next.errors)")
            let answer = try current.call("PUT", "/vm/migrate", "{\"destination\":\"unix:\(socket)\"}")
            #expect(answer.contains("\"phase\":\"setup\""), "\(answer)")
            #expect(current.waitForExit() == 0, "round \(round): \(current.errors)")
            #expect(next.waitFor { next.tickLines >= 3 }, "round \(round): \(next.text.suffix(200)) \(next.errors)")
            let info = try next.call("GET", "/vm")
            #expect(info.contains("\"migrated_from\""), "\(info)")
            current = next
        }
        _ = try current.call("PUT", "/vm/stop")
        #expect(current.waitForExit() == 0)
        let transcript = all.map(\.text).joined()
        let numbers = transcript.split(whereSeparator: \.isNewline).compactMap { $0.hasPrefix("user: tick ") ? Int($0.dropFirst("user: tick ".count)) : nil }
        #expect(numbers.first == 1)
        #expect(numbers.count >= 15)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 },
                "count broke: \(zip(numbers, numbers.dropFirst()).filter { $1 != $0 + 1 }.prefix(5))")
        #expect(!transcript.contains("corrupt"))
    }

    /// The destination process is killed (SIGKILL) in the middle of RAM: the source reports the
    /// failure, its guest counts on, and a migration to a new destination then goes through.
    @Test func killingTheDestinationMidMigrationLeavesTheGuestRunning() throws {
        _ = VireoBinary.buildGuests
        let directory = NSTemporaryDirectory() + "vireo-migrate-kill-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = try VM(["--kernel", VireoBinary.guest("mb-user.elf"), "--memory", "64M",
                             "--cmdline", "ticks=1000000 spin=50000000 fill=16 churn=8"], directory: directory, name: "src")
        var all = [source]
        defer { for vm in all where vm.process.isRunning { vm.process.terminate() } }
        #expect(source.waitFor { source.tickLines >= 2 })
        let doomed = try VM(["--incoming", "unix:\(directory)/doomed.sock"], directory: directory, name: "doomed")
        all.append(doomed)
        #expect(doomed.waitFor { FileManager.default.fileExists(atPath: directory + "/doomed.sock") })
        // 4 MiB/s: the ~24 MiB of RAM in use take seconds, so the kill lands mid-stream.
        let answer = try source.call("PUT", "/vm/migrate", "{\"destination\":\"unix:\(directory)/doomed.sock\",\"bandwidth_mibps\":4}")
        #expect(answer.contains("\"phase\":\"setup\""), "\(answer)")
        #expect(source.waitFor { (try? source.call("GET", "/vm/migration"))?.contains("\"phase\":\"precopy\"") == true })
        usleep(500_000)
        kill(doomed.process.processIdentifier, SIGKILL)
        doomed.process.waitUntilExit()
        var progress = ""
        #expect(source.waitFor {
            progress = (try? source.call("GET", "/vm/migration")) ?? ""
            return progress.contains("\"phase\":\"failed\"")
        }, "\(progress)")
        #expect(source.process.isRunning)
        let ticks = source.tickLines
        #expect(source.waitFor { source.tickLines >= ticks + 2 }, "the guest stopped counting after the failed migration")
        let next = try VM(["--incoming", "unix:\(directory)/next.sock"], directory: directory, name: "next")
        all.append(next)
        #expect(next.waitFor { FileManager.default.fileExists(atPath: directory + "/next.sock") })
        _ = try source.call("PUT", "/vm/migrate", "{\"destination\":\"unix:\(directory)/next.sock\"}")
        #expect(source.waitForExit() == 0)
        #expect(next.waitFor { next.tickLines >= 2 })
        _ = try next.call("PUT", "/vm/stop")
        #expect(next.waitForExit() == 0)
        let transcript = source.text + next.text
        let numbers = transcript.split(whereSeparator: \.isNewline).compactMap { $0.hasPrefix("user: tick ") ? Int($0.dropFirst("user: tick ".count)) : nil }
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 })
        #expect(!transcript.contains("corrupt"))
    }

    /// A destination fed garbage instead of a migration stream exits 1 with one line.
    @Test func aDestinationFedGarbageExitsWithOneLine() throws {
        let directory = NSTemporaryDirectory() + "vireo-migrate-garbage-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/in.sock"
        let destination = try VM(["--incoming", "unix:" + socket], directory: directory, name: "dst")
        defer { if destination.process.isRunning { destination.process.terminate() } }
        #expect(destination.waitFor { FileManager.default.fileExists(atPath: socket) })
        // An HTTP request is as good as any garbage.
        _ = try VireoBinary.runProcess("/usr/bin/curl", ["-s", "--max-time", "5", "--unix-socket", socket, "http://vm/vm"])
        #expect(destination.waitForExit(seconds: 30) == 1)
        let lines = destination.errors.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("vireo: error:") }
        #expect(lines == ["vireo: error: corrupt migration stream: bad frame tag before the machine's description"], "\(destination.errors)")
    }
}
