import Foundation
import Testing

/// The virsh-like commands as a user runs them, against a real `vireo daemon` with a real VM
/// (the mb-echo test guest): output shapes, messages and exit statuses.
@Suite(.serialized) struct ManageCommandTests {
    @Test func defineStartInspectAndStopLikeVirsh() throws {
        let daemon = try CLIDaemon()
        let file = daemon.directory + "/web.yaml"
        try "name: web\nmemory: 32M\nvcpus: 1\nos:\n  kernel: \(VireoBinary.guest("mb-echo.elf"))\n  cmdline: acpi\n"
            .write(toFile: file, atomically: true, encoding: .utf8)

        let define = try daemon.vireo(["define", file])
        #expect(define.status == 0)
        #expect(define.stdout == "Domain 'web' defined from \(file)\n\n")

        let listAll = try daemon.vireo(["list", "--all"])
        #expect(listAll.stdout == " Id   Name   State\n-----------------------\n -    web    shut off\n\n")
        #expect(try daemon.vireo(["list"]).stdout == " Id   Name   State\n--------------------\n\n")

        let start = try daemon.vireo(["start", "web"])
        #expect(start.status == 0, "\(start.stderr)")
        #expect(start.stdout == "Domain 'web' started\n\n")
        let again = try daemon.vireo(["start", "web"])
        #expect(again.status == 1)
        #expect(again.stderr == "error: Failed to start domain 'web'\nerror: domain 'web' is already active\n")

        let list = try daemon.vireo(["list"]).stdout.split(separator: "\n")
        #expect(list.count == 3)
        let row = list.last.map { $0.split(separator: " ") } ?? []
        #expect(row.count == 3 && Int(row[0]) != nil && row[1] == "web" && row[2] == "running")

        let info = try daemon.vireo(["dominfo", "web"]).stdout
        for line in ["Name:           web", "OS Type:        hvm", "State:          running", "CPU(s):         1",
                     "Max memory:     32768 KiB", "Used memory:    32768 KiB", "Persistent:     yes", "Autostart:      disable"] {
            #expect(info.contains(line + "\n"), "\(line)")
        }
        #expect(info.contains("Id:             \(row.first ?? "?")\n"))
        #expect(try daemon.vireo(["domstate", "web", "--reason"]).stdout == "running (booted)\n\n")
        #expect(try daemon.vireo(["domstate", "web"]).stdout == "running\n\n")

        let stats = try daemon.vireo(["domstats", "web"]).stdout
        for key in ["Domain: 'web'", "  state.state=1", "  state.reason=1", "  cpu.time=", "  cpu.user=", "  cpu.system=",
                    "  balloon.current=32768", "  balloon.maximum=32768", "  balloon.rss=", "  vcpu.current=1", "  vcpu.maximum=1"] {
            #expect(stats.contains(key), "\(key)")
        }
        let xml = try daemon.vireo(["dumpxml", "web"])
        #expect(xml.status == 0 && xml.stdout.contains("<name>web</name>") && xml.stdout.contains("<memory unit='KiB'>32768</memory>"))

        // Console: recent output on attach, keystrokes to the guest, Ctrl-] to leave.
        let console = try daemon.vireo(["console", "web"], input: [("hello\n", 0), ("\u{1d}", 1.5)])
        #expect(console.status == 0)
        #expect(console.stdout.contains("echo: ready"))
        #expect(console.stdout.contains("HELLO"))
        #expect(console.stderr.hasPrefix("Connected to domain 'web'\nEscape character is ^] (Ctrl + ])\n"))

        #expect(try daemon.vireo(["suspend", "web"]).stdout == "Domain 'web' suspended\n\n")
        #expect(try daemon.vireo(["domstate", "web", "--reason"]).stdout == "paused (user)\n\n")
        #expect(try daemon.vireo(["resume", "web"]).stdout == "Domain 'web' resumed\n\n")

        let shutdown = try daemon.vireo(["shutdown", "web"])
        #expect(shutdown.status == 0 && shutdown.stdout == "Domain 'web' is being shutdown\n\n")
        #expect(daemon.waitFor(["domstate", "web", "--reason"], output: "shut off (shutdown)\n\n"))

        #expect(try daemon.vireo(["start", "web"]).status == 0)
        #expect(try daemon.vireo(["destroy", "web"]).stdout == "Domain 'web' destroyed\n\n")
        #expect(try daemon.vireo(["domstate", "web", "--reason"]).stdout == "shut off (destroyed)\n\n")
        let destroyAgain = try daemon.vireo(["destroy", "web"])
        #expect(destroyAgain.status == 1 && destroyAgain.stderr.contains("domain 'web' is not running"))

        #expect(try daemon.vireo(["autostart", "web"]).stdout == "Domain 'web' marked as autostarted\n\n")
        #expect(try daemon.vireo(["dominfo", "web"]).stdout.contains("Autostart:      enable\n"))
        #expect(try daemon.vireo(["autostart", "web", "--disable"]).stdout == "Domain 'web' unmarked as autostarted\n\n")

        #expect(try daemon.vireo(["undefine", "web"]).stdout == "Domain 'web' has been undefined\n\n")
        let gone = try daemon.vireo(["dominfo", "web"])
        #expect(gone.status == 1)
        #expect(gone.stderr == "error: failed to get domain 'web'\n")
    }

    @Test func saveAndRestoreLikeVirsh() throws {
        let daemon = try CLIDaemon()
        let file = daemon.directory + "/sr.yaml"
        try "name: sr\nmemory: 32M\nos:\n  kernel: \(VireoBinary.guest("mb-echo.elf"))\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", file]).status == 0)

        let notRunning = try daemon.vireo(["save", "sr", daemon.directory + "/sr.save"])
        #expect(notRunning.status == 1)
        #expect(notRunning.stderr == "error: Failed to save domain 'sr'\nerror: domain 'sr' is not running\n")

        #expect(try daemon.vireo(["start", "sr"]).status == 0)
        let console = try daemon.vireo(["console", "sr"], input: [("before\n", 0.5), ("\u{1d}", 1.5)])
        #expect(console.stdout.contains("BEFORE"))

        // A relative file is the caller's: made absolute against its working directory.
        let save = try daemon.vireo(["save", "sr", "sr.save"], directory: daemon.directory)
        #expect(save.status == 0, "\(save.stderr)")
        #expect(save.stdout == "Domain 'sr' saved to \(daemon.directory)/sr.save\n\n")
        #expect(try daemon.vireo(["domstate", "sr", "--reason"]).stdout == "shut off (saved)\n\n")
        #expect(try daemon.vireo(["list", "--all"]).stdout.contains(" -    sr     shut off\n"))
        #expect(try daemon.vireo(["domstats", "sr"]).stdout.contains("  state.reason=5\n"))

        let restore = try daemon.vireo(["restore", "sr.save"], directory: daemon.directory)
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(restore.stdout == "Domain 'sr' restored from \(daemon.directory)/sr.save\n\n")
        #expect(try daemon.vireo(["domstate", "sr", "--reason"]).stdout == "running (restored)\n\n")
        #expect(try daemon.vireo(["domstats", "sr"]).stdout.contains("  state.reason=3\n"))
        // The guest carries on where it was saved: it echoes, without booting (and greeting) again.
        let after = try daemon.vireo(["console", "sr"], input: [("after\n", 0.5), ("\u{1d}", 1.5)])
        #expect(after.stdout.contains("AFTER"))
        #expect(!after.stdout.contains("echo: ready"))

        let again = try daemon.vireo(["restore", daemon.directory + "/sr.save"])
        #expect(again.status == 1)
        #expect(again.stderr == "error: Failed to restore domain from \(daemon.directory)/sr.save\nerror: domain 'sr' is already active\n")
        let stranger = daemon.directory + "/stranger.save"
        #expect(FileManager.default.createFile(atPath: stranger, contents: Data("x".utf8)))
        let unknown = try daemon.vireo(["restore", stranger])
        #expect(unknown.status == 1)
        #expect(unknown.stderr == "error: Failed to restore domain from \(stranger)\nerror: no defined domain was saved to \(stranger)\n")
        #expect(try daemon.vireo(["destroy", "sr"]).status == 0)
    }

    /// virsh managedsave: `shutdown --save` (or `managedsave`), then a plain start resumes the guest.
    @Test func managedSaveLikeVirsh() throws {
        let daemon = try CLIDaemon()
        let file = daemon.directory + "/ms.yaml"
        try "name: ms\nmemory: 32M\nos:\n  kernel: \(VireoBinary.guest("mb-echo.elf"))\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", file]).status == 0)
        let idle = try daemon.vireo(["managedsave", "ms"])
        #expect(idle.status == 1)
        #expect(idle.stderr == "error: Failed to save domain 'ms'\nerror: domain 'ms' is not running\n")

        #expect(try daemon.vireo(["start", "ms"]).status == 0)
        let before = try daemon.vireo(["console", "ms"], input: [("before\n", 0.5), ("\u{1d}", 1.5)])
        #expect(before.stdout.contains("BEFORE"))
        let save = try daemon.vireo(["shutdown", "--save", "ms"])
        #expect(save.status == 0, "\(save.stderr)")
        #expect(save.stdout == "Domain 'ms' state saved by the daemon\n\n")
        #expect(try daemon.vireo(["dominfo", "ms"]).stdout.contains("Managed save:   yes\n"))
        let undefine = try daemon.vireo(["undefine", "ms"])
        #expect(undefine.status == 1)
        #expect(undefine.stderr.hasSuffix("error: domain 'ms' has a managed save image; 'vireo start ms' resumes it, 'vireo undefine --managed-save ms' removes it with the definition\n"))

        let start = try daemon.vireo(["start", "ms"])
        #expect(start.status == 0, "\(start.stderr)")
        #expect(start.stdout == "Domain 'ms' started from its managed save image\n\n")
        #expect(try daemon.vireo(["domstate", "ms", "--reason"]).stdout == "running (restored)\n\n")
        #expect(try daemon.vireo(["dominfo", "ms"]).stdout.contains("Managed save:   no\n"))
        let after = try daemon.vireo(["console", "ms"], input: [("after\n", 0.5), ("\u{1d}", 1.5)])
        #expect(after.stdout.contains("AFTER"))
        #expect(!after.stdout.contains("echo: ready"))

        // managedsave, then discard it: the next start boots afresh.
        #expect(try daemon.vireo(["managedsave", "ms"]).status == 0)
        let removed = try daemon.vireo(["managedsave-remove", "ms"])
        #expect(removed.stdout == "Removed managed save image for domain 'ms'\n\n")
        #expect(try daemon.vireo(["start", "--force-boot", "ms"]).stdout == "Domain 'ms' started\n\n")
        #expect(try daemon.vireo(["domstate", "ms", "--reason"]).stdout == "running (booted)\n\n")
        #expect(try daemon.vireo(["managedsave", "ms"]).status == 0)
        #expect(try daemon.vireo(["undefine", "--managed-save", "ms"]).status == 0)
        #expect(try daemon.vireo(["list", "--all"]).stdout.contains("ms") == false)
    }

    @Test func badDefinitionsAndConnectionsFailWithOneClearLine() throws {
        let daemon = try CLIDaemon()
        let yaml = daemon.directory + "/bad.yaml"
        try "name: bad\nmemory: lots\nos: {kernel: /k}\n".write(toFile: yaml, atomically: true, encoding: .utf8)
        let result = try daemon.vireo(["define", yaml])
        #expect(result.status == 1)
        #expect(result.stderr == "error: Failed to define domain from \(yaml)\nerror: memory: 'lots' is not a size\n")

        let xml = daemon.directory + "/bad.xml"
        try "<domain type='kvm'><name>x</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os firmware='coreboot'><type>hvm</type></os></domain>"
            .write(toFile: xml, atomically: true, encoding: .utf8)
        let xmlResult = try daemon.vireo(["define", xml])
        #expect(xmlResult.status == 1)
        #expect(xmlResult.stderr.contains("firmware 'coreboot' is not supported (expected bios or efi)"), "\(xmlResult.stderr)")

        // Errors a user can act on: the file, and for XML the parser's line, column and words.
        let broken = daemon.directory + "/broken.xml"
        try "<domain type='kvm'>\n  <name>x</name>\n  <memory>64\n</domain>\n".write(toFile: broken, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", broken]).stderr == "error: Failed to define domain from \(broken)\n"
                + "error: definition: XML syntax error at line 4, column 10: Opening and ending tag mismatch: memory line 3 and domain\n")
        let empty = daemon.directory + "/empty.xml"
        try "".write(toFile: empty, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", empty]).stderr == "error: Failed to define domain from \(empty)\nerror: definition file '\(empty)' is empty\n")
        let missing = daemon.directory + "/missing.yaml"
        #expect(try daemon.vireo(["define", missing]).stderr
                == "error: Failed to define domain from \(missing)\nerror: cannot read definition file '\(missing)': No such file or directory\n")
        #expect(try daemon.vireo(["define", daemon.directory]).stderr
                == "error: Failed to define domain from \(daemon.directory)\nerror: definition file '\(daemon.directory)' is not a regular file\n")
        let badYAML = daemon.directory + "/bad-syntax.yaml"
        try "name: x\nmemory: [64M\n".write(toFile: badYAML, atomically: true, encoding: .utf8)
        let yamlSyntax = try daemon.vireo(["define", badYAML])
        #expect(yamlSyntax.stderr.hasPrefix("error: Failed to define domain from \(badYAML)\nerror: definition: YAML syntax error at line "), "\(yamlSyntax.stderr)")

        // libvirt XML: what Vireo does not do is reported, never silently dropped.
        let libvirt = daemon.directory + "/lv.xml"
        try """
            <domain type='kvm'><name>lv</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
            <os><type>hvm</type><kernel>/k</kernel></os>
            <devices><disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>
            <source file='/d.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>
            """.write(toFile: libvirt, atomically: true, encoding: .utf8)
        let imported = try daemon.vireo(["define", libvirt])
        #expect(imported.status == 0)
        #expect(imported.stdout == "Domain 'lv' defined from \(libvirt)\n\n")
        #expect(imported.stderr == "warning: not imported (unsupported): devices/disk/driver (cache=none)\n")

        let noDaemon = try VireoBinary.run(["list", "--socket", daemon.directory + "/nothing.sock"])
        #expect(noDaemon.status == 1)
        #expect(noDaemon.stderr.hasPrefix("error: failed to connect to the daemon\nerror: cannot connect to unix://"))
        let badURI = try VireoBinary.run(["list", "--connect", "qemu:///system"])
        #expect(badURI.status == 1 && badURI.stderr.contains("invalid connection URI 'qemu:///system'"))
    }

    @Test func editIsValidatedAndAnUnchangedFileIsANoOp() throws {
        let daemon = try CLIDaemon()
        let file = daemon.directory + "/ed.yaml"
        try "name: ed\nmemory: 32M\nos:\n  kernel: /k\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", file]).status == 0)

        let unchanged = try daemon.vireo(["edit", "ed"], environment: ["EDITOR": "true"])
        #expect(unchanged.stdout == "Domain 'ed' XML configuration not changed.\n\n")

        let grow = try daemon.vireo(["edit", "ed"], environment: ["EDITOR": "sed -i s/32MiB/64MiB/"])
        #expect(grow.status == 0, "\(grow.stderr)")
        #expect(grow.stdout == "Domain 'ed' XML configuration edited.\n\n")
        #expect(try daemon.vireo(["dominfo", "ed"]).stdout.contains("Max memory:     65536 KiB"))

        let broken = try daemon.vireo(["edit", "ed"], environment: ["EDITOR": "sed -i s/64MiB/64X/"])
        #expect(broken.status == 1)
        #expect(broken.stderr.contains("error: memory: '64X' is not a size"))
        #expect(try daemon.vireo(["dominfo", "ed"]).stdout.contains("Max memory:     65536 KiB"))
    }

    /// `vireo run --status-file` is how a re-attached daemon learns how a VM it did not spawn ended.
    @Test func runWritesItsStatusFile() throws {
        let file = NSTemporaryDirectory() + "vireo-status-\(UUID().uuidString).json"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--cmdline", "exit=5",
                                          "--memory", "32M", "--status-file", file])
        #expect(result.status == 11)
        let status = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        #expect(status?["outcome"] as? String == "debug-exit")
        #expect(status?["exit_status"] as? Int == 11)
        #expect(status?["detail"] as? String == "guest wrote 5 to the debug-exit port")

        let failed = try VireoBinary.run(["run", "--kernel", "/nonexistent/kernel", "--status-file", file])
        #expect(failed.status == 1)
        let failure = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as? [String: Any]
        #expect(failure?["outcome"] as? String == "failed")
    }

    @Test func tcpNeedsAToken() throws {
        let daemon = try CLIDaemon()
        let noToken = try VireoBinary.run(["daemon", "--state-dir", daemon.directory + "/s2", "--socket", daemon.directory + "/s2.sock",
                                           "--listen", "127.0.0.1:0"])
        #expect(noToken.status == 1)
        #expect(noToken.stderr.contains("--listen needs --token-file"))
        let tokenFile = daemon.directory + "/token"
        #expect(FileManager.default.createFile(atPath: tokenFile, contents: Data("0123456789abcdef0123\n".utf8), attributes: [.posixPermissions: 0o644]))
        let open = try VireoBinary.run(["daemon", "--state-dir", daemon.directory + "/s2", "--socket", daemon.directory + "/s2.sock",
                                        "--listen", "127.0.0.1:0", "--token-file", tokenFile])
        #expect(open.status == 1)
        #expect(open.stderr.contains("readable by other users"))
    }
}

/// A `vireo daemon` process with a fresh state dir; stopped (and its VMs killed) at the end.
final class CLIDaemon {
    let directory: String
    var socket: String { directory + "/api.sock" }
    private let process = Process()

    init() throws {
        _ = VireoBinary.buildGuests
        directory = "/tmp/vdc-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        process.executableURL = VireoBinary.executable
        // A cgroup partition of its own: VM names repeat across tests that run at once.
        process.arguments = ["daemon", "--state-dir", directory + "/state", "--socket", socket, "--cgroup-partition", cgroupPartition]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socket) { usleep(50_000) }
    }

    struct Result { var status: Int32; var stdout: String; var stderr: String }

    /// Runs `vireo ARGS --socket S` (in `directory`), writing each input piece after its delay (seconds).
    func vireo(_ arguments: [String], input: [(String, Double)] = [], environment: [String: String] = [:],
               directory: String? = nil) throws -> Result {
        let child = Process()
        child.executableURL = VireoBinary.executable
        if let directory { child.currentDirectoryURL = URL(fileURLWithPath: directory) }
        child.arguments = arguments + ["--socket", socket]
        child.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe(), stdin = Pipe()
        child.standardOutput = out
        child.standardError = err
        child.standardInput = input.isEmpty ? FileHandle.nullDevice : stdin
        try child.run()
        if !input.isEmpty {
            for (text, delay) in input {
                usleep(UInt32(delay * 1_000_000))
                stdin.fileHandleForWriting.write(Data(text.utf8))
            }
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        child.waitUntilExit()
        return Result(status: child.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    func waitFor(_ arguments: [String], output: String, seconds: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if (try? vireo(arguments))?.stdout == output { return true }
            usleep(100_000)
        }
        return false
    }

    deinit {
        // Any VM still running belongs to this test: destroy them through the daemon first.
        if let list = try? vireo(["list"]) {
            for line in list.stdout.split(separator: "\n").dropFirst(2) {
                if let name = line.split(separator: " ").dropFirst().first { _ = try? vireo(["destroy", String(name)]) }
            }
        }
        process.terminate()
        process.waitUntilExit()
        // The daemon removed its VMs' groups; the partition is left in each hierarchy (v1) or
        // at the top (v2).
        let hierarchies = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map { "/sys/fs/cgroup/" + $0 }
        for hierarchy in hierarchies + ["/sys/fs/cgroup"] { rmdir(hierarchy + "/" + cgroupPartition) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    var cgroupPartition: String { "vireo-test-" + URL(fileURLWithPath: directory).lastPathComponent }
}
