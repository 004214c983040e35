import Foundation
import Testing

/// `vireo migrate` and `vireo domjobinfo` as a user runs them: two real `vireo daemon`s on one
/// host, a real guest (mb-user, counting ticks on its serial port) moved from one to the other and
/// back by real `vireo run` processes; and what the command refuses.
@Suite(.serialized) struct MigrateCommandTests {
    @Test func aGuestMovesBetweenTwoDaemonsAndBackLikeVirshMigrate() throws {
        let a = try CLIDaemon(), b = try CLIDaemon()
        let file = a.directory + "/mv.yaml"
        try "name: mv\nmemory: 32M\nos:\n  kernel: \(VireoBinary.guest("mb-user.elf"))\n  cmdline: ticks=1000000 spin=50000000\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try a.vireo(["define", file]).status == 0)
        #expect(try a.vireo(["start", "mv"]).status == 0)
        #expect(a.waitForTicks("mv", atLeast: 3), "\(a.console("mv"))")
        let uuid = try a.uuid("mv")
        #expect(try a.vireo(["domjobinfo", "mv"]).stdout == "Job type:         None\n\n")

        let there = try a.vireo(["migrate", "mv", "--to", "unix://" + b.socket, "--live", "--max-downtime", "100ms"])
        #expect(there.status == 0, "\(there.stderr)")
        #expect(there.stdout.hasPrefix("Domain 'mv' migrated to unix://\(b.socket)"))
        #expect(there.stdout.hasSuffix("\n\n"))
        #expect(try a.vireo(["domstate", "mv", "--reason"]).stdout == "shut off (migrated)\n\n")
        #expect(try b.vireo(["domstate", "mv", "--reason"]).stdout == "running (migrated)\n\n")
        #expect(try b.uuid("mv") == uuid)
        #expect(try a.vireo(["domstats", "mv"]).stdout.contains("  state.reason=4\n"))
        #expect(try b.vireo(["domstats", "mv"]).stdout.contains("  state.reason=2\n"))
        #expect(try b.vireo(["dumpxml", "mv"]).stdout.contains("<uuid>\(uuid)</uuid>"))

        let job = try a.vireo(["domjobinfo", "mv", "--completed"])
        #expect(job.status == 0)
        for line in ["Job type:         Completed", "Operation:        Outgoing migration", "Data remaining:   0.000 B",
                     "Data total:       32.000 MiB", "Memory total:     32.000 MiB", "Page size:        4096         bytes"] {
            #expect(job.stdout.contains(line + "\n"), "\(line) in \(job.stdout)")
        }
        #expect(job.stdout.contains("Time elapsed:     ") && job.stdout.contains("Iteration:        "))
        #expect(try a.vireo(["domjobinfo", "mv"]).stdout == "Job type:         None\n\n")

        // The guest counts on over there: what a printed, then what b prints, is one unbroken count.
        let before = a.console("mv")
        #expect(b.waitForTicks("mv", atLeast: ticks(in: before).last.map { $0 + 3 } ?? 3), "\(b.console("mv"))")
        let transcript = ticks(in: before + (b.console("mv")))
        #expect(transcript.first == 1)
        #expect(zip(transcript, transcript.dropFirst()).allSatisfy { $1 == $0 + 1 }, "\(transcript)")

        // And back, giving the definition up over there.
        let back = try b.vireo(["migrate", "mv", "--to", "unix://" + a.socket, "--live", "--undefine-source"])
        #expect(back.status == 0, "\(back.stderr)")
        #expect(try a.vireo(["domstate", "mv", "--reason"]).stdout == "running (migrated)\n\n")
        let gone = try b.vireo(["dominfo", "mv"])
        #expect(gone.status == 1 && gone.stderr == "error: failed to get domain 'mv'\n")
        #expect(try b.vireo(["domjobinfo", "mv", "--completed"]).stdout.hasPrefix("Job type:         Completed\n"))
        #expect(a.waitForTicks("mv", atLeast: (transcript.last ?? 0) + 3))
        #expect(try a.vireo(["destroy", "mv"]).status == 0)
    }

    @Test func migrateRefusesWhatItCannotDoInOneClearLine() throws {
        let postcopy = try VireoBinary.run(["migrate", "vm1", "--to", "unix:///run/other.sock", "--postcopy"])
        #expect(postcopy.status == 1)
        #expect(postcopy.stderr == "error: --postcopy needs --live (the guest runs on the destination while its pages come over)\n")
        let nowhere = try VireoBinary.run(["migrate", "vm1"])
        #expect(nowhere.stderr == "error: --to is required: the destination daemon, unix:///path/to/its.sock or http://host:port\n")
        let qemu = try VireoBinary.run(["migrate", "vm1", "--to", "qemu+ssh://host/system"])
        #expect(qemu.stderr == "error: invalid destination 'qemu+ssh://host/system' (expected unix:///path/to/daemon.sock or http://host:port)\n")
        let tokenless = try VireoBinary.run(["migrate", "vm1", "--to", "http://10.0.0.2:8450"])
        #expect(tokenless.stderr.hasPrefix("error: --to http://10.0.0.2:8450 needs the destination's bearer token"))
        let downtime = try VireoBinary.run(["migrate", "vm1", "--to", "unix:///run/other.sock", "--max-downtime", "soon"])
        #expect(downtime.stderr == "error: --max-downtime 'soon' is not a time (50ms, 0.3s)\n")

        // A destination that has another VM of that name refuses it before anything moves.
        let a = try CLIDaemon(), b = try CLIDaemon()
        let file = a.directory + "/clash.yaml"
        try "name: clash\nmemory: 32M\nos:\n  kernel: \(VireoBinary.guest("mb-echo.elf"))\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try a.vireo(["define", file]).status == 0)
        #expect(try b.vireo(["define", file]).status == 0)
        #expect(try a.vireo(["start", "clash"]).status == 0)
        let theirs = try b.uuid("clash")
        let clash = try a.vireo(["migrate", "clash", "--to", "unix://" + b.socket, "--live"])
        #expect(clash.status == 1)
        #expect(clash.stderr == "error: Failed to migrate domain 'clash'\nerror: the destination refused domain 'clash': a different domain named 'clash' already exists here (uuid \(theirs))\n")
        #expect(try a.vireo(["domstate", "clash", "--reason"]).stdout == "running (booted)\n\n")
        #expect(try b.vireo(["domstate", "clash", "--reason"]).stdout == "shut off (unknown)\n\n")
        let job = try a.vireo(["domjobinfo", "clash", "--completed"]).stdout
        #expect(job.hasPrefix("Job type:         Failed\n") && job.contains("Error message:    the destination refused domain 'clash'"))

        let idle = try a.vireo(["migrate", "--cancel", "clash"])
        #expect(idle.status == 1)
        #expect(idle.stderr == "error: Failed to cancel the migration of domain 'clash'\nerror: no migration of domain 'clash' is under way\n")
        #expect(try a.vireo(["destroy", "clash"]).status == 0)
    }
}

/// The numbers of the "user: tick N" lines, in order.
private func ticks(in output: String) -> [Int] {
    output.components(separatedBy: "\n").compactMap { line in
        guard let range = line.range(of: "user: tick ") else { return nil }
        return Int(line[range.upperBound...].trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

extension CLIDaemon {
    /// Everything the VM's processes on this daemon wrote to its serial port (its serial log).
    func console(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/state/vms/\(name)/serial.log", encoding: .utf8)) ?? ""
    }

    func waitForTicks(_ name: String, atLeast count: Int, seconds: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (ticks(in: console(name)).last ?? 0) >= count { return true }
            usleep(200_000)
        }
        return false
    }

    func uuid(_ name: String) throws -> String {
        let info = try vireo(["dominfo", name]).stdout
        let line = info.components(separatedBy: "\n").first { $0.hasPrefix("UUID:") } ?? ""
        return line.dropFirst("UUID:".count).trimmingCharacters(in: .whitespaces)
    }
}
