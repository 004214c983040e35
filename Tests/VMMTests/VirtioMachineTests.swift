import Foundation
import Testing
@testable import VMM

/// The PCI/virtio/ACPI path on KVM with test guests that act as the guest OS: a small virtio-blk
/// driver (mb-virtio) and an ACPI power-button handler (mb-echo acpi).
extension KVMGuestSuites {
@Suite struct VirtioMachineTests {
    /// A 1 MiB raw disk whose sector 0 holds a known line.
    static func makeDisk() throws -> String {
        let path = NSTemporaryDirectory() + "vireo-virtio-\(UUID().uuidString).img"
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        bytes.replaceSubrange(0..<19, with: Array("VIREO SECTOR ZERO\n\0".utf8))
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func guestDriverReadsWritesAndFlushesThroughVirtioBlk() throws {
        let disk = try Self.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let guest = try BootedGuest("mb-virtio.elf", devices: DeviceOptions(disks: [DiskOptions(path: disk, serial: "vireo-test-serial")]))
        let outcome = guest.finish()
        let log = guest.serial.text
        #expect(outcome == .debugExit(value: 0), "\(log)")
        #expect(log.contains("virtio: virtio-blk at 00:1.0"))
        #expect(log.contains("virtio: capacity 2048 sectors"))
        #expect(log.contains("virtio: serial vireo-test-serial"))
        #expect(log.contains("virtio: sector 0 VIREO SECTOR ZERO"))
        #expect(log.contains("virtio: read past the end -> status 1"))
        // The host sees the guest's write in sector 1, and the counters saw every request.
        let written = try Data(contentsOf: URL(fileURLWithPath: disk))[512..<552]
        #expect(String(decoding: written, as: UTF8.self).hasPrefix("written by the guest through virtio-blk"))
        let stats = guest.machine.deviceStatistics.disks.first
        #expect(stats?.writeRequests == 1)
        #expect(stats?.flushRequests == 1)
        #expect(stats?.errors == 1)
    }

    /// Whether this host lets us attach loop devices (root, /dev/loop-control present).
    static let loopDevicesAvailable = getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control")
        && FileManager.default.isExecutableFile(atPath: "/usr/sbin/losetup")

    /// A block device (what an LVM volume is) works like a file: the capacity comes from the
    /// device's end, since its st_size is 0.
    @Test(.enabled(if: loopDevicesAvailable, "needs root and loop devices"))
    func blockDeviceBacksADisk() throws {
        let image = try Self.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: image) }
        let losetup = Process()
        losetup.executableURL = URL(fileURLWithPath: "/usr/sbin/losetup")
        losetup.arguments = ["-f", "--show", image]
        let out = Pipe()
        losetup.standardOutput = out
        try losetup.run()
        losetup.waitUntilExit()
        let device = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try #require(losetup.terminationStatus == 0 && device.hasPrefix("/dev/loop"))
        defer {
            let detach = Process()
            detach.executableURL = URL(fileURLWithPath: "/usr/sbin/losetup")
            detach.arguments = ["-d", device]
            try? detach.run()
            detach.waitUntilExit()
        }
        let guest = try BootedGuest("mb-virtio.elf", devices: DeviceOptions(disks: [DiskOptions(path: device, format: .raw)]))
        #expect(guest.finish() == .debugExit(value: 0), "\(guest.serial.text)")
        #expect(guest.serial.text.contains("virtio: capacity 2048 sectors"))
        #expect(guest.serial.text.contains("virtio: sector 0 VIREO SECTOR ZERO"))
    }

    @Test func loopingChainSetsNeedsResetAndTheVMMCarriesOn() throws {
        let disk = try Self.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let guest = try BootedGuest("mb-virtio.elf", cmdline: "hostile", devices: DeviceOptions(disks: [DiskOptions(path: disk)]))
        let outcome = guest.finish()
        #expect(outcome == .debugExit(value: 0), "\(guest.serial.text)")
        #expect(guest.serial.text.contains("device status 0x"))
    }

    @Test func readOnlyDiskRefusesTheGuestsWrite() throws {
        let disk = try Self.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let guest = try BootedGuest("mb-virtio.elf", devices: DeviceOptions(disks: [DiskOptions(path: disk, readOnly: true)]))
        // The write comes back VIRTIO_BLK_S_IOERR: the guest stops with its "write failed" code.
        #expect(guest.finish() == .debugExit(value: 0x25), "\(guest.serial.text)")
        let sector1 = try Data(contentsOf: URL(fileURLWithPath: disk))[512..<1024]
        #expect(sector1.allSatisfy { $0 == 0 })
    }

    /// A machine with virtio devices captures each function's transport and device state: an
    /// activated device (the guest's driver set DRIVER_OK) carries its queues.
    @Test func stateCaptureCoversVirtioFunctions() throws {
        let disk = try Self.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let guest = try BootedGuest("mb-echo.elf", devices: DeviceOptions(disks: [DiskOptions(path: disk)], entropy: true))
        #expect(guest.serial.waitFor("echo: ready"))
        try guest.machine.pause()
        try guest.machine.quiesceDevices()
        let state = try guest.machine.captureState()
        #expect(state.pci.map(\.name) == ["vblk0", "vrng"])
        // mb-echo has no virtio driver: the functions were never activated.
        #expect(state.pci.allSatisfy { $0.device == nil })
        try guest.machine.resumeDevices()
        guest.machine.resume()
        #expect(guest.type("q"))
        #expect(guest.finish() == .debugExit(value: 0))
    }

    @Test func powerButtonMakesAnACPIGuestPowerOff() throws {
        let guest = try BootedGuest("mb-echo.elf", cmdline: "acpi")
        #expect(guest.serial.waitFor("echo: ready"), "\(guest.serial.text)")
        #expect(guest.machine.powerButtonEnabled)
        guest.machine.pressPowerButton()
        #expect(guest.finish(timeoutSeconds: 60) == .powerOff, "\(guest.serial.text)")
        #expect(guest.serial.text.contains("echo: power button pressed: powering off"))
        #expect(!guest.machine.powerButtonPending)
    }

    @Test func aGuestWithoutACPIIgnoresThePowerButton() throws {
        let guest = try BootedGuest("mb-echo.elf", cmdline: "irq")
        #expect(guest.serial.waitFor("echo: ready"))
        #expect(!guest.machine.powerButtonEnabled)
        guest.machine.pressPowerButton()
        #expect(guest.machine.waitForExit(timeoutSeconds: 2) == nil)
        #expect(guest.type("q"))
        #expect(guest.finish() == .debugExit(value: 0))
    }
}
}
