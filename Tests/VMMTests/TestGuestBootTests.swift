import Boot
import Devices
import Foundation
import KVM
import Testing
@testable import VMM

/// Boots the tiny test guests through the library and asserts on what they print and how they end.
extension KVMGuestSuites { @Suite struct TestGuestBootTests {
    @Test func multibootGuestSeesCmdlineMemoryModuleAndExitsWithStatus() throws {
        let guest = try BootedGuest("mb-hello.elf", cmdline: "exit=3", memory: 64 << 20,
                                    initrd: Array("first line of module\nsecond\n".utf8))
        let outcome = guest.finish()
        #expect(outcome == .debugExit(value: 3))
        #expect(outcome?.processStatus == 7)
        let text = guest.serial.text
        #expect(text.contains("hello: vireo test guest"))
        #expect(text.contains("hello: cmdline=mb-hello.elf exit=3"))
        #expect(text.contains("hello: mem_upper=\((64 << 10) - 1024) KiB"))
        #expect(text.contains("hello: modules=1"))
        #expect(text.contains("first=first line of module"))
        #expect(text.contains("hello: fw_cfg signature=QEMU cpus=1"))
        // Host-profile flags are for Linux kernels only.
        #expect(!text.contains("noxsave"))
    }

    @Test(arguments: [2, 4])
    func allVCPUsComeUpThroughINITSIPI(cpus: Int) throws {
        let guest = try BootedGuest("mb-smp.elf", cpus: cpus)
        let outcome = guest.finish()
        let text = guest.serial.text
        #expect(outcome == .debugExit(value: 0), "guest output:\n\(text)")
        #expect(text.contains("smp: mp table says \(cpus) cpus"))
        for apic in 1..<cpus { #expect(text.contains("smp: cpu \(apic) up")) }
        #expect(text.contains("smp: all \(cpus) cpus up"))
    }

    @Test func serialInputReachesGuestByPolling() throws {
        let guest = try BootedGuest("mb-echo.elf")
        #expect(guest.serial.waitFor("echo: ready"))
        #expect(guest.type("vireo, a kvm stack"))
        #expect(guest.serial.waitFor("VIREO, A KVM STACK"))
        #expect(guest.type("q"))
        #expect(guest.finish() == .debugExit(value: 0))
        #expect(guest.serial.text.contains("echo: bye"))
    }

    @Test func serialInputRaisesIRQ4ThroughTheIOAPIC() throws {
        let guest = try BootedGuest("mb-echo.elf", cmdline: "irq")
        #expect(guest.serial.waitFor("echo: irq mode"))
        #expect(guest.serial.waitFor("echo: ready"))
        #expect(guest.type("abc"))
        #expect(guest.serial.waitFor("ABC"))
        #expect(guest.type("q"))
        #expect(guest.finish() == .debugExit(value: 0))
        #expect(guest.serial.text.contains("echo: interrupts="))
        #expect(!guest.serial.text.contains("echo: interrupts=0"))
    }

    @Test func serialInputBeyondTheFIFOIsRefusedNotBuffered() throws {
        // The guest never reads in this mode's first phase; the FIFO must bound what is accepted.
        let guest = try BootedGuest("mb-hello.elf", cmdline: "exit=0")
        let accepted = guest.machine.sendSerialInput([UInt8](repeating: 0x41, count: 10_000))
        // 1 byte with FIFOs off, 16 with them on: never more than the chip holds.
        #expect(accepted >= 1 && accepted <= 16)
        _ = guest.finish()
    }

    @Test func resetEndsTheMachine() throws {
        let guest = try BootedGuest("mb-reset.elf")
        #expect(guest.finish() == .reset)
        #expect(guest.serial.text.contains("reset: boot #1"))
    }

    /// A triple fault resets the machine like any reset, but the guest says nothing first: the
    /// VMM says where it was (what an operator needs when a guest reboots out of the blue).
    @Test func aTripleFaultResetsAndIsReportedWithTheRegisters() throws {
        let notes = Guarded<[String]>([])
        let guest = try BootedGuest("mb-reset.elf", cmdline: "triple", log: { line in notes.update { $0.append(line) } })
        #expect(guest.finish() == .reset)
        #expect(guest.serial.text.contains("reset: resetting by a triple fault"))
        let report = try #require(notes.read { $0.first { $0.contains("triple fault") } }, "notes: \(notes.read { $0 })")
        #expect(report.hasPrefix("vCPU 0: triple fault (KVM_EXIT_SHUTDOWN): "), "\(report)")
        // The empty IDT the guest loaded is in the report, unless KVM reset the vCPU first (AMD's
        // SVM does), which the report must then say instead of passing reset values off as state.
        #expect(report.contains("RIP 0x") && report.contains("IDT 0x0/0x0") || report.contains("registers already at their reset values"),
                "\(report)")
    }

    @Test func resetThroughTheI8042IsNotReportedAsATripleFault() throws {
        let notes = Guarded<[String]>([])
        let guest = try BootedGuest("mb-reset.elf", log: { line in notes.update { $0.append(line) } })
        #expect(guest.finish() == .reset)
        #expect(!notes.read { $0.contains { $0.contains("triple fault") } })
    }

    @Test func portAndMMIOAccessesFromUserModeReachBusDevices() throws {
        let port = RecordingDevice(readValue: 0xC0DE_0000)
        let mmio = RecordingDevice(readValue: 0x5EED_0000)
        let guest = try BootedGuest("mb-user.elf", cmdline: "iters=1000") { machine in
            try machine.pioBus.insert(port, base: 0xE0, length: 4)
            try machine.mmioBus.insert(mmio, base: 0xE800_0000, length: 8)
        }
        let outcome = guest.finish()
        let text = guest.serial.text
        #expect(outcome == .debugExit(value: 0), "guest output:\n\(text)")
        #expect(port.writeCount == 1000)
        #expect(text.contains("user: pio read 0xc0de0000"))
        #expect(mmio.writes.read { $0.first.map { $0.offset == 0 && $0.value == 0x1122_3344 } } == true)
        #expect(text.contains("user: mmio read 0x5eed0004"))
        #expect(text.contains("user: done 1000 iterations at cpl3"))
    }

    @Test func pauseStopsTheGuestAndResumeContinuesIt() throws {
        let guest = try BootedGuest("mb-user.elf", cmdline: "ticks=12")
        #expect(guest.serial.waitFor("tick 2"))
        try guest.machine.pause()
        #expect(guest.machine.isPaused)
        // Capturing needs the device threads stopped too.
        #expect(throws: MachineError.devicesRunning) { try guest.machine.captureState() }
        try guest.machine.quiesceDevices()
        // The whole machine's state is plain Codable data that survives a round trip.
        let state = try guest.machine.captureState()
        #expect(state.vcpus.count == 1)
        #expect(state.platform.irqchips.count == 3)
        let encoded = try JSONEncoder().encode(state)
        #expect(try JSONDecoder().decode(MachineState.self, from: encoded) == state)
        // Paused is stable: a second capture sees the same vCPU registers.
        #expect(try guest.machine.captureState().vcpus.map(\.registers) == state.vcpus.map(\.registers))
        let frozen = guest.serial.count
        // While paused nothing may run: give a running guest ample time to print its next tick.
        #expect(!guest.serial.waitFor("tick 5", timeoutSeconds: 1.0))
        #expect(guest.serial.count == frozen)
        try guest.machine.resumeDevices()
        guest.machine.resume()
        #expect(guest.serial.waitFor("tick 12"))
        #expect(guest.finish() == .debugExit(value: 0))
    }

    @Test func linux64EntryGetsBootParamsSetupDataAndInitrd() throws {
        let guest = try BootedGuest("linux64-probe.elf", cmdline: "console=ttyS0 probe", memory: 128 << 20,
                                    initrd: Array("initrd-line\n".utf8))
        let outcome = guest.finish()
        let text = guest.serial.text
        #expect(outcome == .debugExit(value: 0), "guest output:\n\(text)")
        #expect(text.contains("probe: linux64"))
        #expect(text.contains("probe: cmdline=console=ttyS0 probe"))
        #expect(text.contains("probe: rng seed bytes=32"))
        #expect(text.contains("first=initrd-line"))
        #expect(guest.machine.bootPlan?.format == .elfLinux64)
        // Linux kernels get the host profile's workaround flags after the user's.
        for flag in guest.machine.profile.linuxGuestFlags { #expect(text.contains(flag.flag)) }
    }

    /// Above ~3 GiB, RAM moves above 4 GiB around the MMIO hole; the guest's e820 must agree.
    @Test func largeMemorySplitsAroundTheMMIOHole() throws {
        let guest = try BootedGuest("linux64-probe.elf", memory: 4 << 30)
        let outcome = guest.finish()
        let text = guest.serial.text
        #expect(outcome == .debugExit(value: 0), "guest output:\n\(text)")
        #expect(guest.machine.memory.regions.map(\.start.raw) == [0, 0x1_0000_0000])
        #expect(guest.machine.memory.regions.map(\.size) == [0xC000_0000, 0x4000_0000])
        // 639 KiB + (3 GiB - 1 MiB) + 1 GiB of RAM in 3 RAM entries, plus the reserved BIOS area and
        // the PCI ECAM window (reserved so Linux trusts the MCFG).
        #expect(text.contains("probe: e820 entries=5 ram=4095"))
    }

    @Test func pvhEntryGetsStartInfo() throws {
        let guest = try BootedGuest("pvh-probe.elf", cmdline: "pvh-args")
        let outcome = guest.finish()
        let text = guest.serial.text
        #expect(outcome == .debugExit(value: 0), "guest output:\n\(text)")
        #expect(text.contains("pvh: magic ok"))
        #expect(text.contains("pvh: cmdline=pvh-args"))
        #expect(guest.machine.bootPlan?.format == .elfPVH)
    }

    @Test(arguments: [("gzip", Compression.gzip), ("xz", .xz), ("lzma", .lzma), ("lz4", .lz4), ("zstd", .zstd)])
    func bzImagePayloadIsDecompressedOnTheHost(name: String, compression: Compression) throws {
        let guest = try BootedGuest("probe-\(name).bzImage", cmdline: "bz", memory: 128 << 20)
        let outcome = guest.finish()
        #expect(outcome == .debugExit(value: 0), "guest output:\n\(guest.serial.text)")
        #expect(guest.serial.text.contains("probe: linux64"))
        #expect(guest.machine.bootPlan?.format == .bzImageDecompressed(compression))
    }

    @Test(arguments: ["bzip2", "corrupt"])
    func bzImageFallsBackToItsOwn64BitEntry(name: String) throws {
        let guest = try BootedGuest("probe-\(name).bzImage", memory: 128 << 20)
        let outcome = guest.finish()
        #expect(outcome == .debugExit(value: 7), "guest output:\n\(guest.serial.text)")
        #expect(guest.serial.text.contains("bzimage: fallback 64-bit entry"))
        #expect(guest.machine.bootPlan?.format == .bzImageNative)
    }
}
}
