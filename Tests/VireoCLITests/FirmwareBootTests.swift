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
        (["--firmware", "uefi"], "firmware 'uefi' is not supported yet: OVMF does not start on Vireo's machine yet"),
    ])
    func badFirmwareRequestsAreOneLineErrors(arguments: [String], message: String) throws {
        let result = try VireoBinary.run(["run", "--memory", "64M"] + arguments, timeoutSeconds: 30)
        #expect(result.status != 0)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stderr.split(whereSeparator: \.isNewline).count == 1, "\(result.stderr)")
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
        #expect(result.stderr.contains("is \(17 << 20) bytes: a firmware image is a whole number of 4 KiB pages, at least 64 KiB and at most 16 MiB"), "\(result.stderr)")
    }

    @Test func firmwareOfTheWrongSizeIsRefused() throws {
        let path = Self.temporaryPath("tiny.bin")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x90, count: 1000)))
        let result = try VireoBinary.run(["run", "--memory", "64M", "--firmware", path], timeoutSeconds: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("firmware '\(path)' is 1000 bytes: a firmware image is a whole number of 4 KiB pages"), "\(result.stderr)")
    }
}
