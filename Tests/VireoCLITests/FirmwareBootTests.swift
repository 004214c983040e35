import Foundation
import Testing

/// `vireo run --firmware`: Debian's SeaBIOS boots a disk's MBR from virtio-blk, with its own and
/// the boot sector's text on the serial console. Needs the seabios package (scripts/setup.sh
/// installs it).
@Suite(.serialized) struct FirmwareBootTests {
    static let seabios = "/usr/share/seabios/bios-256k.bin"

    static func temporaryPath(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("vireo-fw-\(getpid())-\(name)").path
    }

    @Test func seaBIOSBootsTheMBROfAVirtioDisk() throws {
        try #require(FileManager.default.fileExists(atPath: Self.seabios), "Debian's seabios package is missing: run scripts/setup.sh")
        let firmwareLog = Self.temporaryPath("debugcon.log")
        defer { try? FileManager.default.removeItem(atPath: firmwareLog) }
        let result = try VireoBinary.run(["run", "--firmware", "bios", "--memory", "64M", "--firmware-log", firmwareLog,
                                          "--disk", "path=\(VireoBinary.guest("mbr-hello.img")),format=raw,readonly=on"],
                                         timeoutSeconds: 120)
        // The boot sector ends the VM through the debug-exit port: 0x2A after its int 13h read worked.
        #expect(result.status == (0x2A << 1) | 1, "stdout: \(result.stdout)\nstderr: \(result.stderr)")
        let console = result.stdout.replacingOccurrences(of: "\r", with: "")
        let expected = ["SeaBIOS (version", "Booting from Hard Disk...", "mbr-hello: booted by the firmware",
                        "mbr-hello: sector 1 read through int 13h"]
        var rest = Substring(console)
        for line in expected {
            guard let found = rest.range(of: line) else {
                Issue.record("console lacks \"\(line)\" (in this order): \(console)")
                break
            }
            rest = rest[found.upperBound...]
        }
        #expect(!console.contains("Booting from Floppy"), "CMOS says: disks first, no floppy")
        // The firmware's own log (port 0x402): it found our fw_cfg memory map, ACPI tables and the disk.
        let log = (try? String(contentsOfFile: firmwareLog, encoding: .utf8)) ?? ""
        #expect(log.contains("qemu/e820: addr 0x0000000000000000 len 0x0000000004000000 [RAM]"), "\(log)")
        #expect(log.contains("found virtio-blk at 00:01.0"))
        #expect(log.contains("(via xsdt)"), "ACPI tables through etc/table-loader")
    }

    /// A disk without a boot sector: the firmware says so on the console and waits; the VMM stays
    /// in control (a signal stops it cleanly).
    @Test func aDiskWithoutBootSectorLeavesTheFirmwareWaiting() throws {
        try #require(FileManager.default.fileExists(atPath: Self.seabios), "Debian's seabios package is missing: run scripts/setup.sh")
        let disk = Self.temporaryPath("blank.img"), serial = Self.temporaryPath("serial.log"), status = Self.temporaryPath("status.json")
        defer { for path in [disk, serial, status] { try? FileManager.default.removeItem(atPath: path) } }
        #expect(FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20)))
        let process = Process()
        process.executableURL = VireoBinary.executable
        process.arguments = ["run", "--firmware", "bios", "--memory", "64M", "--disk", "path=\(disk),format=raw",
                             "--serial-log", serial, "--status-file", status]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(90)
        var text = ""
        while Date() < deadline, process.isRunning {
            text = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
            if text.contains("No bootable device") { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(text.contains("No bootable device"), "console: \(text)")
        #expect(process.isRunning, "the VMM must keep running while the firmware waits")
        process.terminate()
        process.waitUntilExit()
        #expect(process.terminationStatus == 128 + SIGTERM)
        let recorded = (try? String(contentsOfFile: status, encoding: .utf8)) ?? ""
        #expect(recorded.contains("\"outcome\":\"signal\""), "\(recorded)")
    }

    @Test(arguments: [
        (["--firmware", "/nonexistent/bios.bin"], "cannot read firmware '/nonexistent/bios.bin'"),
        (["--firmware", "bios", "--kernel", "/x"], "--kernel, --firmware, --restore and --incoming exclude each other"),
        (["--firmware", "bios", "--cmdline", "quiet"], "with --firmware the disk's boot loader chooses them"),
        (["--firmware", "bios", "--efivars", "/tmp/v.fd"], "--efivars goes with UEFI firmware (--firmware uefi, or an OVMF build); '/usr/share/seabios/bios-256k.bin' is not one"),
        (["--kernel", "/nonexistent/k", "--efivars", "/tmp/v.fd"], "--efivars goes with UEFI firmware"),
    ])
    func badFirmwareRequestsAreOneLineErrors(arguments: [String], message: String) throws {
        let result = try VireoBinary.run(["run", "--memory", "64M"] + arguments, timeoutSeconds: 30)
        #expect(result.status != 0)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.split(whereSeparator: \.isNewline).count == 1, "\(result.stderr)")
    }

    /// The machine a UEFI firmware gets, checked by a stand-in firmware (TestGuests' uefi-probe.fd,
    /// which runs in seconds where Debian's OVMF cannot: it needs guest kernel mode at native
    /// speed, see tests/e2e/uefi-boot.sh): an i440FX with the PIIX4 PM function, and a variable
    /// store that behaves as flash to OVMF's probe and keeps what is programmed into it in the
    /// --efivars file, across runs.
    @Test func uefiMachineHasTheChipsetAndFlashOVMFNeeds() throws {
        let vars = Self.temporaryPath("probe-vars.fd")
        defer { try? FileManager.default.removeItem(atPath: vars) }
        var store = [UInt8](repeating: 0xFF, count: 8192)
        for index in 0..<16 { store[index] = 0 }
        store.replaceSubrange(40..<44, with: Array("_FVH".utf8))
        #expect(FileManager.default.createFile(atPath: vars, contents: Data(store)))
        for run in 1...2 {
            let result = try VireoBinary.run(["run", "--memory", "64M", "--firmware", VireoBinary.guest("uefi-probe.fd"),
                                              "--efivars", vars], timeoutSeconds: 60)
            #expect(result.status == (0x2A << 1) | 1, "run \(run): stdout: \(result.stdout)\nstderr: \(result.stderr)")
            #expect(!result.stdout.contains("FAILED"), "\(result.stdout)")
            for step in ["host bridge is an i440FX", "00:01.3 is a PIIX4 PM function", "the PM timer at PMBA+8 counts",
                         "flash: 0x70 then a read gives status 0", "flash: block 1 programmed"] {
                #expect(result.stdout.contains("uefi-probe: \(step) ok"), "\(result.stdout)")
            }
            let after = [UInt8](try Data(contentsOf: URL(fileURLWithPath: vars)))
            #expect(after.count == 8192)
            #expect(Array(after[0x1000..<0x100A]) == Array("VIREO-EFI".utf8) + [0xFF], "programmed bytes reach the file")
            #expect(Array(after[0..<0x1000]) == Array(store[0..<0x1000]), "block 0 untouched")
        }
    }

    /// Variable stores that cannot be one: one-line errors, nothing created or changed.
    @Test func badVariableStoresAreOneLineErrors() throws {
        let probe = VireoBinary.guest("uefi-probe.fd")
        let fifo = Self.temporaryPath("vars.fifo"), odd = Self.temporaryPath("odd.fd"), plain = Self.temporaryPath("plain.fd")
        let missing = Self.temporaryPath("missing.fd")
        defer { for path in [fifo, odd, plain, missing] { try? FileManager.default.removeItem(atPath: path) } }
        #expect(mkfifo(fifo, 0o600) == 0)
        #expect(FileManager.default.createFile(atPath: odd, contents: Data(count: 5000)))
        #expect(FileManager.default.createFile(atPath: plain, contents: Data(count: 8192)))
        let cases: [(String, String)] = [
            (fifo, "UEFI variable store '\(fifo)': not a regular file"),
            (odd, "UEFI variable store '\(odd)': 5000 bytes: a store is a whole number of 4 KiB blocks"),
            (plain, "UEFI variable store '\(plain)': holds no firmware volume header (not an OVMF VARS file)"),
            (missing, "UEFI variable store '\(missing)': does not exist, and firmware '\(probe)' names no empty store to copy"),
        ]
        for (path, message) in cases {
            let result = try VireoBinary.run(["run", "--memory", "64M", "--firmware", probe, "--efivars", path], timeoutSeconds: 30)
            #expect(result.status == 1)
            #expect(result.stderr.contains(message), "\(result.stderr)")
            #expect(result.stderr.split(whereSeparator: \.isNewline).count == 1, "\(result.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: missing))
        #expect(FileManager.default.contents(atPath: plain) == Data(count: 8192))
    }

    /// `--firmware uefi` makes the VM's store from Debian's empty one the first time.
    @Test func uefiMakesTheVariableStoreFromDebiansTemplate() throws {
        let template = "/usr/share/OVMF/OVMF_VARS_4M.fd"
        try #require(FileManager.default.fileExists(atPath: template), "Debian's ovmf package is missing: run scripts/setup.sh")
        let vars = Self.temporaryPath("uefi-vars.fd")
        defer { try? FileManager.default.removeItem(atPath: vars) }
        // Guest kernel mode may be emulated here (OVMF then stops at an instruction the emulator
        // lacks) or native (OVMF runs until killed): either way the store exists from the start.
        let process = Process()
        process.executableURL = VireoBinary.executable
        process.arguments = ["run", "--firmware", "uefi", "--efivars", vars, "--memory", "256M"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, process.isRunning, !FileManager.default.fileExists(atPath: vars) { Thread.sleep(forTimeInterval: 0.05) }
        Thread.sleep(forTimeInterval: 0.5)
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        let made = FileManager.default.contents(atPath: vars)
        #expect(made?.count == 540672)
        var info = stat()
        #expect(stat(vars, &info) == 0 && info.st_mode & 0o777 == 0o600, "the store is the VM's: mode 0600")
        // A store of another firmware build's size is refused.
        #expect(truncate(vars, 8192) == 0)
        let wrong = try VireoBinary.run(["run", "--memory", "64M", "--firmware", "uefi", "--efivars", vars], timeoutSeconds: 30)
        #expect(wrong.stderr.contains("8192 bytes, where this firmware's store (\(template)) has 540672: it belongs to another firmware build"), "\(wrong.stderr)")
    }

    @Test func firmwareWithoutAResetVectorJumpIsRefused() throws {
        let path = Self.temporaryPath("zeros.bin")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 128 << 10)))
        let result = try VireoBinary.run(["run", "--memory", "64M", "--firmware", path], timeoutSeconds: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("firmware '\(path)' is not a PC firmware image: its last 16 bytes, where the CPU starts, hold no jump (00 00"), "\(result.stderr)")
        #expect(result.stderr.split(whereSeparator: \.isNewline).count == 1)
    }

    @Test func firmwareLargerThanItsWindowIsRefused() throws {
        let path = Self.temporaryPath("huge.bin")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: 17 << 20)
        try handle.close()
        let result = try VireoBinary.run(["run", "--memory", "64M", "--firmware", path], timeoutSeconds: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("is \(17 << 20) bytes: a firmware image (with its variable store) is a whole number of 4 KiB pages, at least 64 KiB and at most 16 MiB"), "\(result.stderr)")
    }

    @Test func firmwareOfTheWrongSizeIsRefused() throws {
        let path = Self.temporaryPath("tiny.bin")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x90, count: 1000)))
        let result = try VireoBinary.run(["run", "--memory", "64M", "--firmware", path], timeoutSeconds: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("firmware '\(path)' is 1000 bytes: a firmware image (with its variable store) is a whole number of 4 KiB pages"), "\(result.stderr)")
    }
}

/// The daemon hands a UEFI VM its variable store: the one its definition names (libvirt's
/// `<nvram>`), else `nvram.fd` in the VM's own directory, made from Debian's empty store.
@Suite(.serialized) struct DaemonUEFIVariableStoreTests {
    @Test func aDefinedStoreGetsWhatTheFirmwareProgramsAndADefaultOneIsMade() throws {
        let daemon = try CLIDaemon()
        let store = daemon.directory + "/probe-vars.fd"
        var bytes = [UInt8](repeating: 0xFF, count: 8192)
        for index in 0..<16 { bytes[index] = 0 }
        bytes.replaceSubrange(40..<44, with: Array("_FVH".utf8))
        #expect(FileManager.default.createFile(atPath: store, contents: Data(bytes)))
        // The stand-in firmware programs "VIREO-EFI" into block 1 of its store, then ends the VM.
        let probe = daemon.directory + "/probe.yaml"
        try """
            name: probe
            memory: 64M
            os: {firmware: \(VireoBinary.guest("uefi-probe.fd")), nvram: \(store)}
            """.write(toFile: probe, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", probe]).status == 0)
        #expect(try daemon.vireo(["dumpxml", "probe"]).stdout.contains("<nvram>\(store)</nvram>"))
        let started = try daemon.vireo(["start", "probe"])
        #expect(started.status == 0, "\(started.stderr)")
        var programmed: [UInt8] = []
        for _ in 0..<200 {
            programmed = Array([UInt8](FileManager.default.contents(atPath: store) ?? Data())[0x1000..<0x100A])
            if programmed == Array("VIREO-EFI".utf8) + [0xFF] { break }
            usleep(50_000)
        }
        #expect(programmed == Array("VIREO-EFI".utf8) + [0xFF], "the firmware's writes reach the definition's nvram file")

        // No nvram in the definition: the VM's own, made at start from OVMF_VARS_4M.fd.
        guard FileManager.default.fileExists(atPath: "/usr/share/OVMF/OVMF_VARS_4M.fd") else {
            Issue.record("Debian's ovmf package is missing: run scripts/setup.sh")
            return
        }
        let uefi = daemon.directory + "/uefi.yaml"
        try "name: efi\nmemory: 128M\nos: {firmware: uefi}\n".write(toFile: uefi, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", uefi]).status == 0)
        _ = try daemon.vireo(["start", "efi"])
        let own = daemon.directory + "/state/vms/efi/nvram.fd"
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: own) { usleep(50_000) }
        #expect(FileManager.default.contents(atPath: own) == FileManager.default.contents(atPath: "/usr/share/OVMF/OVMF_VARS_4M.fd")
                || FileManager.default.contents(atPath: own)?.count == 540672, "the VM's store, made from Debian's template")
        _ = try daemon.vireo(["destroy", "efi"])
        #expect(try daemon.vireo(["undefine", "efi"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: own), "the VM's own store goes with it")
        #expect(FileManager.default.fileExists(atPath: store), "a store the definition names is the user's: kept")
    }
}
