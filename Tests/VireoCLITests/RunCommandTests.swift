import Foundation
import Testing

/// Runs the built `vireo` binary the way a user or script would and checks status and stderr.
enum VireoBinary {
    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }()

    /// The vireo executable sits next to the test bundle in the build directory.
    static var executable: URL {
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return testBinary.deletingLastPathComponent().appendingPathComponent("vireo")
    }

    static func guest(_ name: String) -> String { packageRoot.appendingPathComponent(".build/test-guests/\(name)").path }

    struct Result { var status: Int32; var stdout: String; var stderr: String }

    static func run(_ arguments: [String], timeoutSeconds: Double = 120) throws -> Result {
        try runProcess(executable.path, arguments, timeoutSeconds: timeoutSeconds)
    }

    /// Runs any program (stdin /dev/null), bounded by `timeoutSeconds`, and collects its output.
    static func runProcess(_ path: String, _ arguments: [String], environment: [String: String]? = nil,
                           timeoutSeconds: Double = 120) throws -> Result {
        _ = buildGuests
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let deadline = DispatchTime.now() + timeoutSeconds
        let done = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in done.signal() }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        if done.wait(timeout: deadline) == .timedOut { process.terminate() }
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    static let buildGuests: Void = {
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", packageRoot.appendingPathComponent("TestGuests").path,
                          "OUT=\(packageRoot.appendingPathComponent(".build/test-guests").path)"]
        try? make.run()
        make.waitUntilExit()
    }()
}

@Suite(.serialized) struct RunCommandTests {
    @Test func debugExitValueBecomesProcessStatus() throws {
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--cmdline", "exit=5", "--memory", "32M"])
        #expect(result.status == (5 << 1) | 1)
        #expect(result.stdout.contains("hello: vireo test guest"))
    }

    @Test func serialLogKeepsTheGuestOutput() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-serial-\(getpid()).log").path
        try? FileManager.default.removeItem(atPath: log)
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--memory", "32M", "--serial-log", log])
        #expect(result.status == 1)
        let logged = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(logged.contains("hello: vireo test guest"))
        #expect(logged == result.stdout)
        let bad = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--serial-log", "/nonexistent/dir/log"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("cannot write serial log '/nonexistent/dir/log'"))
    }

    /// --serial-log-max: the log rotates to FILE.1 at the limit; nothing of the output is lost
    /// across the two files, and neither grows past the limit.
    @Test func serialLogRotatesAtItsLimit() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-rotate-\(getpid()).log").path
        try? FileManager.default.removeItem(atPath: log)
        try? FileManager.default.removeItem(atPath: log + ".1")
        defer { try? FileManager.default.removeItem(atPath: log); try? FileManager.default.removeItem(atPath: log + ".1") }
        // mb-hello echoes its command line: ~3 KiB per run. What the file holds already counts,
        // so the second run into the same log rotates it.
        let filler = String(repeating: "x", count: 3000)
        var outputs = ""
        for _ in 0..<2 {
            let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--memory", "32M",
                                              "--cmdline", filler, "--serial-log", log, "--serial-log-max", "4K"])
            #expect(result.status == 1)
            outputs += result.stdout
        }
        let current = (try? Data(contentsOf: URL(fileURLWithPath: log))) ?? Data()
        let previous = (try? Data(contentsOf: URL(fileURLWithPath: log + ".1"))) ?? Data()
        #expect(outputs.utf8.count > 6000)
        #expect(previous.count == 4096 && current.count <= 4096)
        // Nothing lost, nothing twice: the two files are both runs' output, in order.
        #expect(previous + current == Data(outputs.utf8))

        let alone = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--serial-log-max", "8M"])
        #expect(alone.status != 0 && alone.stderr.contains("--serial-log-max goes with --serial-log"))
        let small = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-hello.elf"), "--serial-log", log, "--serial-log-max", "100"])
        #expect(small.status != 0 && small.stderr.contains("--serial-log-max must be at least 4K"))
    }

    /// A set-ID vireo would open what its caller names with its owner's rights: it refuses to run
    /// at all. (Made setuid to nobody, as root can: the effective uid then differs from the real.)
    static var setuidWorksInTemporaryDirectory: Bool {
        var info = statvfs()
        return statvfs(FileManager.default.temporaryDirectory.path, &info) == 0 && info.f_flag & UInt(ST_NOSUID) == 0
    }

    @Test(.enabled(if: getuid() == 0, "needs root to chown a copy of vireo"),
          .enabled(if: setuidWorksInTemporaryDirectory, "the temporary directory is mounted nosuid"))
    func refusesToRunSetuid() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-setuid-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        chmod(directory, 0o755)
        let copy = directory + "/vireo"
        try FileManager.default.copyItem(atPath: VireoBinary.executable.path, toPath: copy)
        #expect(chown(copy, 65534, 65534) == 0)
        #expect(chmod(copy, 0o4755) == 0)
        let result = try VireoBinary.runProcess(copy, ["host-check"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("vireo: refusing to run setuid or setgid (real uid 0, effective uid 65534"), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
        // The same copy without the bit runs.
        #expect(chmod(copy, 0o755) == 0)
        #expect(try VireoBinary.runProcess(copy, ["--help"]).status == 0)
    }

    @Test func guestResetExitsZeroByDefault() throws {
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-reset.elf"), "--memory", "32M"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("reset: boot #1"))
        #expect(!result.stdout.contains("reset: boot #2"))
    }

    @Test func onRebootRestartBootsAgainKeepingCMOS() throws {
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-reset.elf"), "--memory", "32M", "--on-reboot", "restart"])
        #expect(result.stdout.contains("reset: boot #1"))
        #expect(result.stdout.contains("reset: boot #2"))
        #expect(result.status == (2 << 1) | 1)
    }

    @Test func smpGuestWithTwoCPUs() throws {
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-smp.elf"), "--cpus", "2", "--memory", "32M"])
        #expect(result.status == 1, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("smp: all 2 cpus up"))
    }

    /// int3 and fwait at CPL0 reach the guest's handler / complete on every host: natively, or
    /// through the host profile's fixups where KVM emulates kernel mode.
    @Test func breakpointAndFwaitAtCPL0Work() throws {
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-user.elf"), "--cmdline", "breakpoint", "--memory", "32M"])
        #expect(result.status == 1, "stderr: \(result.stderr)")
        #expect(result.stdout.contains("user: breakpoint handled count=1 return after int3"))
        #expect(result.stdout.contains("user: fwait ok"))
    }

    /// Without the fixups, an emulating host's failure must be a clear report (RIP and bytes), never
    /// a hang; a native host simply runs the instruction.
    @Test func emulationFailureIsReportedWithRIPAndBytes() throws {
        let check = try VireoBinary.run(["host-check"])
        let emulated = check.stdout.contains("host profile") && check.stdout.contains("emulated-kernel-mode")
        let result = try VireoBinary.run(["run", "--kernel", VireoBinary.guest("mb-user.elf"), "--cmdline", "breakpoint",
                                          "--memory", "32M", "--host-profile", "native"], timeoutSeconds: 30)
        if emulated {
            #expect(result.status == 1)
            #expect(result.stderr.contains("instruction emulator failed at RIP 0x"))
            #expect(result.stderr.contains("instruction bytes: cc"))
            #expect(!result.stdout.contains("breakpoint handled"))
        } else {
            #expect(result.stdout.contains("user: breakpoint handled count=1"))
        }
    }

    @Test func verboseExplainsHostProfileAndBootPath() throws {
        let result = try VireoBinary.run(["run", "-v", "--kernel", VireoBinary.guest("mb-hello.elf"), "--memory", "32M"])
        #expect(result.stderr.contains("host profile:"))
        #expect(result.stderr.contains("Multiboot"))
    }

    /// Every user error is exactly one line on stderr and a non-zero status.
    @Test(arguments: [
        (["run", "--kernel", "/nonexistent/vmlinuz"], "cannot read kernel '/nonexistent/vmlinuz'"),
        (["run", "--kernel", "/etc/hostname"], "unrecognised"),
        (["run", "--kernel", "GUEST", "--memory", "12X"], "invalid size '12X'"),
        (["run", "--kernel", "GUEST", "--memory", "4M"], "too small"),
        (["run", "--kernel", "GUEST", "--cpus", "0"], "invalid vCPU count 0"),
        (["run", "--kernel", "GUEST", "--memory", "32M", "--initrd", "BIGFILE"], "larger than the guest's memory"),
        (["run"], "give --kernel to boot a kernel, --firmware to boot a disk, --restore to resume a snapshot, --incoming to receive a migration, or --launch-spec"),
        (["run", "--restore", "/nonexistent/vm.snap"], "snapshot /nonexistent/vm.snap: open failed: no such file"),
        (["run", "--restore", "/etc/hostname"], "/etc/hostname is not a Vireo snapshot"),
        (["run", "--restore", "BIGFILE"], "is not a Vireo snapshot"),
        (["run", "--kernel", "GUEST", "--restore", "/etc/hostname"], "--kernel, --firmware, --restore and --incoming exclude each other"),
        (["run", "--incoming", "ftp:somewhere"], "bad migration address 'ftp:somewhere': expected tcp:HOST:PORT or unix:PATH"),
        (["run", "--incoming", "unix:relative.sock"], "a Unix socket needs an absolute path"),
        (["run", "--incoming", "unix:/etc/hostname"], "/etc/hostname exists and is not a socket"),
        (["run", "--kernel", "GUEST", "--incoming", "unix:/tmp/x.sock"], "--kernel, --firmware, --restore and --incoming exclude each other"),
        (["run", "--launch-spec", "/etc/hostname"], "not a valid launch specification"),
        (["run", "--launch-spec", "/nonexistent/vm.json"], "cannot read launch specification '/nonexistent/vm.json'"),
    ])
    func userErrorsAreOneClearLine(arguments: [String], expected: String) throws {
        let big = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-big-initrd")
        if !FileManager.default.fileExists(atPath: big.path) {
            FileManager.default.createFile(atPath: big.path, contents: nil)
            let handle = try FileHandle(forWritingTo: big)
            try handle.truncate(atOffset: 64 << 20)
            try handle.close()
        }
        let args = arguments.map { $0 == "GUEST" ? VireoBinary.guest("mb-hello.elf") : $0 == "BIGFILE" ? big.path : $0 }
        let result = try VireoBinary.run(args)
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(result.stderr)")
        #expect(result.stderr.lowercased().contains(expected.lowercased()), "stderr: \(result.stderr)")
    }

    /// SIGTERM stops the VM in order (vCPU threads joined) and reports the signal in the status.
    @Test func sigtermStopsTheVMCleanly() throws {
        _ = VireoBinary.buildGuests
        let process = Process()
        process.executableURL = VireoBinary.executable
        process.arguments = ["run", "--kernel", VireoBinary.guest("mb-user.elf"), "--cmdline", "ticks=100000", "--memory", "32M"]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Wait until the guest is demonstrably running (its first tick), reading the pipe as it comes.
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("tick 1") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        #expect(String(decoding: seen, as: UTF8.self).contains("tick 1"))
        process.terminate()
        process.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationReason == .exit)
        #expect(process.terminationStatus == 128 + 15)
        #expect(stderr.contains("terminating on signal 15"))
    }

    /// `--api-socket` serves the control API while the VM runs; PUT /vm/stop ends `vireo run` with 0.
    @Test func apiSocketControlsTheRunningVM() throws {
        _ = VireoBinary.buildGuests
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-cli-\(getpid()).sock").path
        let process = Process()
        process.executableURL = VireoBinary.executable
        process.arguments = ["run", "--kernel", VireoBinary.guest("mb-user.elf"), "--cmdline", "ticks=100000",
                             "--memory", "32M", "--api-socket", socket]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The socket exists once the guest has started printing.
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("tick 1") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        func curl(_ args: String...) throws -> String {
            let c = Process()
            c.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            c.arguments = ["-s", "--max-time", "5", "--unix-socket", socket] + args
            let pipe = Pipe()
            c.standardOutput = pipe
            try c.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            c.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        #expect(try curl("http://vm/vm").contains("\"state\":\"running\""))
        #expect(try curl("-X", "PUT", "-o", "/dev/null", "-w", "%{http_code}", "http://vm/vm/stop") == "204")
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file is removed on exit")
    }

    @Test func hostCheckReportsAPIAndProfile() throws {
        let result = try VireoBinary.run(["host-check"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("KVM: API version"))
        #expect(result.stdout.contains("guest kernel mode (CPL0) runs natively"))
        // Both halves of the probe and their ratio, whichever way this host turns out.
        let probeLine = result.stdout.split(separator: "\n").first { $0.contains("runs natively") } ?? ""
        #expect(probeLine.contains("CPL0 ") && probeLine.contains("CPL3 ")
                && probeLine.contains("ratio "),
                "\(probeLine)")
        #expect(result.stdout.contains("Vireo: host profile"))
    }
}
