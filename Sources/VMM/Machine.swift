import Boot
import Devices
import GuestMemory
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The machine's first-wins exit latch; devices and vCPUs report into it, `run` waits on it.
final class ExitLatch: MachineEventSink, @unchecked Sendable {
    let outcome = Guarded<MachineExit?>(nil)
    /// Mirrors `outcome != nil` for the vCPU exit path, which checks it after every exit.
    private let decided = Atomic<Bool>(false)

    func request(_ exit: MachineExit) {
        outcome.update {
            if $0 == nil { $0 = exit }
            decided.store(true, ordering: .releasing)
        }
    }

    var hasOutcome: Bool { decided.load(ordering: .acquiring) }

    func machineEvent(_ event: MachineEvent) {
        switch event {
        case .reset: request(.reset)
        case .powerOff: request(.powerOff)
        case let .debugExit(value): request(.debugExit(value: value))
        }
    }
}

/// An interrupt line of the in-kernel irqchip (GSI = ISA IRQ number).
struct KVMInterruptLine: InterruptLine {
    let vm: VirtualMachine
    let gsi: UInt32
    func setLevel(_ high: Bool) { try? vm.setIRQLine(gsi, level: high) }
}

/// Where a machine's first instant comes from.
public enum MachineOrigin: @unchecked Sendable {
    /// Power on: load the config's kernel into fresh RAM (CMOS NVRAM may carry over a reset).
    case boot(rngSeed: [UInt8], restoringCMOS: CMOSRTCState? = nil)
    /// Resume a saved machine: `memory` already holds the guest's RAM (mapped from the snapshot
    /// file or copied from it), `state` everything else; `cmdline` is what the guest was booted with.
    /// `paused`: the vCPUs stay parked after `start()` until `resume()`.
    /// `vm`: the KVM VM made (`Machine.prepareVM`, with this memory registered) while the state
    /// was being read, if it was.
    case snapshot(MachineState, memory: GuestMemory, cmdline: String, source: String, paused: Bool = false, vm: VirtualMachine? = nil)
    /// Resume a machine received by live migration from `peer` (RAM and state as for a snapshot).
    /// `vm`: the KVM VM made (`Machine.prepareVM`, with this memory registered) while RAM was arriving, if it was.
    case incoming(MachineState, memory: GuestMemory, cmdline: String, peer: String, paused: Bool = false, vm: VirtualMachine? = nil)
}

/// A PC assembled from a validated `VMConfig` and resolved host resources: KVM VM with in-kernel
/// irqchip and PIT, guest RAM around the MMIO hole, legacy devices on the port bus, virtio-pci
/// functions, one thread per vCPU. The same builder serves a fresh boot and a restore.
public final class Machine: @unchecked Sendable {
    public let config: VMConfig
    public let profile: HostProfile
    /// How the kernel was loaded; nil for a machine restored from a snapshot.
    public let bootPlan: BootPlan?
    /// "bzImage", "multiboot", ... or "snapshot PATH".
    public let bootDescription: String
    /// The kernel command line the guest actually gets (user's + host profile's).
    public let effectiveCmdline: String
    /// The snapshot this machine resumed, if it did.
    public let restoredFrom: String?
    /// The migration source this machine came from, if it did.
    public let migratedFrom: String?
    public let pioBus = Bus()
    public let mmioBus = Bus()
    public let serial: Serial16550
    public let rtc: CMOSRTC
    public let i8042: I8042
    public let debugExit: DebugExit
    public let fwCfg: FwCfg
    /// ACPI fixed hardware: the power button and the S5 (power-off) register.
    public let acpiPM: ACPIPM
    public let memory: GuestMemory
    /// The PCI root complex and the virtio functions on it.
    let pci: PCIPlatform
    /// The firmware ROM at the top of 4 GiB, for a machine that boots through firmware.
    let firmwareROM: FirmwareROM?
    /// A UEFI firmware's variable store, below the ROM.
    let firmwareVariables: FirmwareVariableStore?
    /// The host side (disks, TAPs); released at stop only when this machine opened it itself.
    let resources: MachineResources
    private let ownsResources: Bool

    let vm: VirtualMachine
    private let latch = ExitLatch()
    /// Bumped whenever COM1's or hvc0's receive FIFO gets room again (flow control for host input).
    private let serialInputSpace = Guarded<UInt64>(0)
    private(set) var runners: [VCPURunner] = []
    /// Read by control-API threads, so atomic.
    private let startedFlag = Atomic<Bool>(false)
    private var started: Bool { startedFlag.load(ordering: .acquiring) }
    private let joinState = Guarded(false)
    /// The device threads are stopped for a snapshot.
    private let quiesced = Atomic<Bool>(false)
    /// A restored machine that was paused when saved starts with its vCPUs parked.
    private var startPaused = false
    var devicesQuiesced: Bool { quiesced.load(ordering: .acquiring) }

    /// Addresses KVM needs outside guest RAM on Intel (TSS: 3 pages; identity map: 1 page).
    /// QEMU's choice: below the top 16 MiB, where firmware ROMs go.
    static let tssAddress: UInt64 = 0xFEFF_D000
    static let identityMapAddress: UInt64 = 0xFEFF_C000

    /// Boots `config` on host resources it opens itself (and releases when it stops).
    public convenience init(config: VMConfig, system: KVMSystem, profile: HostProfile, serialOutput: any SerialOutput,
                            restoringCMOS: CMOSRTCState? = nil, rngSeed: [UInt8],
                            onSerialInputSpace: (@Sendable () -> Void)? = nil,
                            log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        let resources = try MachineResources(devices: config.devices)
        do {
            try self.init(config: config, resources: resources, system: system, profile: profile, serialOutput: serialOutput,
                          origin: .boot(rngSeed: rngSeed, restoringCMOS: restoringCMOS), ownsResources: true,
                          onSerialInputSpace: onSerialInputSpace, log: log)
        } catch {
            resources.release()
            throw error
        }
    }

    /// Builds the machine; nothing runs until `start()`.
    /// - Parameters:
    ///   - resources: the opened host side; `config.devices` is ignored in favour of `resources.devices`.
    ///   - serialOutput: where COM1's output goes.
    ///   - origin: a fresh boot or a saved state.
    ///   - ownsResources: release `resources` when this machine stops (else its owner does).
    ///   - onSerialInputSpace: called when COM1's receive FIFO has room again.
    ///   - log: one-line device warnings (a guest driver error, a missing ioeventfd).
    public init(config: VMConfig, resources: MachineResources, system: KVMSystem, profile: HostProfile,
                serialOutput: any SerialOutput, origin: MachineOrigin, ownsResources: Bool = false,
                onSerialInputSpace: (@Sendable () -> Void)? = nil,
                log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        self.config = config
        self.profile = profile
        self.resources = resources
        self.ownsResources = ownsResources
        try system.requireCapabilities()
        let limits = system.vcpuLimits
        guard config.cpus <= limits.maximum else {
            throw ConfigError.invalidCPUCount(config.cpus, maximum: min(limits.maximum, VMConfig.maximumCPUs))
        }
        var saved: MachineState?
        switch origin {
        case .boot:
            memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: config.memorySize))
            restoredFrom = nil
            migratedFrom = nil
        case .snapshot(let state, let restoredMemory, _, _, let paused, _), .incoming(let state, let restoredMemory, _, _, let paused, _):
            startPaused = paused
            guard state.vcpus.count == config.cpus else {
                throw MachineStateError.mismatch("\(state.vcpus.count) vCPU states for \(config.cpus) vCPUs")
            }
            let expected = X86Layout.ramRanges(memorySize: config.memorySize)
            guard restoredMemory.regions.map({ [$0.start.raw, $0.size] }) == expected.map({ [$0.start.raw, $0.size] }) else {
                throw MachineStateError.mismatch("guest RAM layout differs from a \(config.memorySize >> 20) MiB machine's")
            }
            memory = restoredMemory
            saved = state
            if case let .incoming(_, _, _, peer, _, _) = origin {
                restoredFrom = nil
                migratedFrom = peer
            } else if case let .snapshot(_, _, _, source, _, _) = origin {
                restoredFrom = source
                migratedFrom = nil
            } else {
                restoredFrom = nil
                migratedFrom = nil
            }
        }

        switch origin {
        case let .incoming(_, _, _, _, _, prepared?), let .snapshot(_, _, _, _, _, prepared?): vm = prepared
        default: vm = try Self.prepareVM(system: system, memory: memory)
        }
        // The ROM is memory too: registered before the irqchip exists (see `prepareVM`).
        let machineVM = vm
        firmwareROM = try config.firmware.map { try FirmwareROM($0, vm: machineVM, system: system) }
        if let rom = firmwareROM, let variables = config.firmwareVariables {
            firmwareVariables = try FirmwareVariableStore(variables, below: rom.image.romBase, vm: machineVM, system: system,
                                                          restoring: saved?.devices.flash, log: log)
        } else {
            if saved?.devices.flash != nil { throw MachineStateError.mismatch("the snapshot has a UEFI variable store, this machine none") }
            firmwareVariables = nil
        }
        if firmwareVariables != nil, saved != nil, saved?.devices.flash == nil {
            throw MachineStateError.mismatch("this machine has a UEFI variable store, the snapshot none")
        }
        try Self.addIRQChip(to: vm)

        // Legacy PC devices on the port bus, from power-on or from their saved state.
        let inputSpace = serialInputSpace
        let onInput: @Sendable () -> Void = {
            inputSpace.update { $0 &+= 1 }
            onSerialInputSpace?()
        }
        let com1 = KVMInterruptLine(vm: vm, gsi: 4)
        let keyboard = KVMInterruptLine(vm: vm, gsi: 1), aux = KVMInterruptLine(vm: vm, gsi: 12)
        let sci = KVMInterruptLine(vm: vm, gsi: UInt32(X86Layout.acpiSCIInterrupt))
        if let saved {
            let devices = saved.devices
            serial = try Serial16550(restoring: devices.serial, interrupt: com1, output: serialOutput, onInputSpace: onInput)
            i8042 = try I8042(restoring: devices.i8042, events: latch, keyboardInterrupt: keyboard, auxInterrupt: aux)
            rtc = try CMOSRTC(restoring: devices.rtc)
            fwCfg = try FwCfg(restoring: devices.fwCfg)
            acpiPM = try ACPIPM(restoring: devices.acpiPM, events: latch, sci: sci)
        } else {
            serial = Serial16550(interrupt: com1, output: serialOutput, onInputSpace: onInput)
            i8042 = I8042(events: latch, keyboardInterrupt: keyboard, auxInterrupt: aux)
            if case let .boot(_, cmos?) = origin {
                rtc = try CMOSRTC(restoring: cmos)
            } else {
                let below4G = memory.regions.filter { $0.start.raw < X86Layout.mmioHoleEnd }.reduce(0) { $0 + $1.size }
                rtc = CMOSRTC(memoryBelow4G: below4G, memoryAbove4G: memory.totalSize - below4G, cpuCount: config.cpus)
            }
            fwCfg = try FwCfg(ramSize: config.memorySize, cpuCount: UInt16(config.cpus))
            acpiPM = ACPIPM(events: latch, sci: sci)
        }
        debugExit = DebugExit(events: latch)
        try pioBus.insert(serial, base: 0x3F8, length: Serial16550.portCount)
        try pioBus.insert(i8042.dataPort, base: 0x60, length: 1)
        try pioBus.insert(i8042.commandPort, base: 0x64, length: 1)
        try pioBus.insert(rtc, base: 0x70, length: 2)
        try pioBus.insert(debugExit, base: DebugExit.defaultPort, length: DebugExit.portCount)
        try pioBus.insert(fwCfg, base: 0x510, length: 2)
        if let fd = config.firmwareLogDescriptor {
            try pioBus.insert(DebugConsole(fd: fd), base: DebugConsole.defaultPort, length: 1)
        }
        try pioBus.insert(acpiPM, base: UInt64(X86Layout.acpiPM1EventPort), length: ACPIPM.portCount)
        if let variables = firmwareVariables {
            try mmioBus.insert(variables.flash, base: variables.base, length: variables.size)
        }

        // The PCI windows: where the firmware places BARs, or the VMM when there is none.
        let uefi = config.firmware?.kind == .uefi
        let supportedCPUID = try system.supportedCPUID()
        let mmio32: Range<UInt64>, mmio64: Range<UInt64>?
        switch config.firmware?.kind {
        case nil: (mmio32, mmio64) = (X86Layout.pciMMIO32Start..<X86Layout.pciMMIO32End, nil)
        case .bios: (mmio32, mmio64) = (FirmwareBoot.pciMMIO32, nil)
        case .uefi:
            mmio32 = FirmwareBoot.uefiMMIO32(lowMemoryEnd: X86Layout.lowMemoryEnd(of: memory))
            let addressBits = supportedCPUID.first { $0.function == 0x8000_0008 }.map { Int($0.eax & 0xFF) } ?? 36
            mmio64 = FirmwareBoot.uefiMMIO64(memory: memory, physicalAddressBits: addressBits)
            // OVMF's own power-off (ResetSystem's shutdown) writes PM1a_CNT at its compiled-in
            // PIIX4 base, 0xB000, whatever PMBA says: the same registers answer there too.
            try pioBus.insert(acpiPM, base: FirmwareBoot.ovmfPIIX4PMBase, length: ACPIPM.portCount)
        }

        // PCI with the virtio devices; their I/O threads start with the vCPUs.
        pci = try PCIPlatform(vm: vm, memory: memory, resources: resources, pioBus: pioBus, mmioBus: mmioBus,
                              events: latch, consoleOutput: serialOutput,
                              onConsoleInputSpace: { inputSpace.update { $0 &+= 1 } }, restoring: saved?.pci,
                              restoringRoot: saved?.pciRoot, mmio32: mmio32, mmio64: mmio64,
                              chipset: uefi ? .i440fx : .vireo, log: log)

        switch origin {
        case .boot where config.firmware != nil:
            // The CPU starts at the reset vector in the ROM; the firmware finds the boot loader.
            let firmware = config.firmware!
            try FirmwareBoot.prepare(firmware, memory: memory, fwCfg: fwCfg, cpus: config.cpus, pciMMIO32: mmio32, pciMMIO64: mmio64,
                                     bootDevices: pci.bootDevicePaths)
            bootPlan = nil
            bootDescription = "firmware \(firmware.name) (\(firmware.path), \(firmware.bytes.count >> 10) KiB)"
            effectiveCmdline = ""
        case let .boot(rngSeed, _):
            // The host profile's flags go to Linux-protocol kernels only (Multiboot kernels don't know them).
            let request = BootRequest(kernel: config.kernel, kernelName: config.kernelPath, initrd: config.initrd,
                                      initrdName: config.initrdPath ?? "initrd", cmdline: config.cmdline,
                                      vcpuCount: config.cpus, rngSeed: rngSeed, bootProtocol: config.bootProtocol,
                                      payloadCache: config.payloadCache, linuxCmdlineExtras: profile.linuxGuestFlags.map(\.flag),
                                      acpi: ACPIPlatform(vcpuCount: config.cpus))
            let plan = try KernelLoader.load(request, into: memory)
            bootPlan = plan
            bootDescription = plan.format.description
            effectiveCmdline = plan.format == .multiboot ? config.cmdline : request.linuxCmdline
            try fwCfg.addFile(name: "etc/vireo/cmdline", data: Array(effectiveCmdline.utf8))
        case let .snapshot(_, _, cmdline, source, _, _):
            bootPlan = nil
            bootDescription = "snapshot \(source)"
            effectiveCmdline = cmdline
        case let .incoming(_, _, cmdline, peer, _, _):
            bootPlan = nil
            bootDescription = "migration from \(peer)"
            effectiveCmdline = cmdline
        }

        let supported = supportedCPUID.map {
            CPUIDEntry(function: $0.function, index: $0.index, flags: $0.flags, eax: $0.eax, ebx: $0.ebx, ecx: $0.ecx, edx: $0.edx)
        }
        let latch = self.latch
        let context = ExitContext(pioBus: pioBus, mmioBus: mmioBus, profile: profile, memory: memory,
                                  requestExit: { latch.request($0) }, isExiting: { latch.hasOutcome }, log: log)
        for index in 0..<config.cpus {
            let vcpu = try vm.createVCPU(id: index)
            let shaped = CPUIDShaping.shape(supported, vcpuIndex: index, vcpuCount: config.cpus)
            try vcpu.setCPUID(shaped.map {
                KVMCPUIDEntry(function: $0.function, index: $0.index, flags: $0.flags, eax: $0.eax, ebx: $0.ebx, ecx: $0.ecx, edx: $0.edx)
            })
            // No vCPU thread exists yet: this (building) thread is the only one touching the vCPU.
            if let saved {
                try vcpu.restoreState(saved.vcpus[index])
            } else {
                try vcpu.configureLegacyLocalInterrupts()
                if index == 0, let plan = bootPlan { try Self.applyEntryState(plan.entry, to: vcpu) }
            }
            runners.append(VCPURunner(vcpu: vcpu, context: context))
        }
        // The in-kernel irqchip, PIT and clock last, so the LAPICs they deliver to are in place.
        if let saved { try vm.restoreState(saved.platform) }
    }

    /// A KVM VM with `memory` registered: what every machine starts from, made ahead of it by a
    /// restore (while the state is decoded) and a migration destination (while RAM arrives);
    /// registering a large guest's RAM takes milliseconds. The machine adds the firmware ROM and
    /// then the in-kernel irqchip and PIT.
    ///
    /// Memory comes before the irqchip: the first memory slot a VM with an in-kernel irqchip
    /// registers cost 5-10 ms on the development host (whatever its size, 2 MiB to 4 GiB), against
    /// 0.3 ms before it: two thirds of a restore's time. (A C probe of the bare ioctls shows the
    /// same; the KVM API allows either order, only vCPUs must come after the irqchip.)
    public static func prepareVM(system: KVMSystem, memory: GuestMemory) throws -> VirtualMachine {
        let vm = try system.createVM()
        for (slot, region) in memory.regions.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.start.raw, size: region.size,
                                       hostAddress: region.hostAddress)
        }
        return vm
    }

    /// The in-kernel irqchip and PIT, with the addresses they need, once all memory is registered.
    static func addIRQChip(to vm: VirtualMachine) throws {
        try vm.setIdentityMapAddress(Self.identityMapAddress)
        try vm.setTSSAddress(Self.tssAddress)
        try vm.createIRQChip()
        try vm.createPIT()
    }

    static func applyEntryState(_ entry: X86EntryState, to vcpu: VCPU) throws {
        var registers = Registers()
        registers.rip = entry.rip; registers.rsp = entry.rsp; registers.rsi = entry.rsi
        registers.rax = entry.rax; registers.rbx = entry.rbx; registers.rflags = entry.rflags
        try vcpu.setRegisters(registers)
        var special = try vcpu.getSpecialRegisters()
        special.cs = Segment(entry.cs); special.ds = Segment(entry.ds); special.es = Segment(entry.es)
        special.fs = Segment(entry.fs); special.gs = Segment(entry.gs); special.ss = Segment(entry.ss)
        special.gdt = DescriptorTable(base: entry.gdtBase, limit: entry.gdtLimit)
        special.idt = DescriptorTable(base: entry.idtBase, limit: entry.idtLimit)
        special.cr0 = entry.cr0; special.cr3 = entry.cr3; special.cr4 = entry.cr4; special.efer = entry.efer
        try vcpu.setSpecialRegisters(special)
    }

    /// Starts every vCPU thread.
    public func start() throws {
        guard startedFlag.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { return }
        VCPUKicker.installSignalHandler()
        do { try pci.start() } catch { latch.request(.failed("\(error)")) }
        if restoredFrom != nil || migratedFrom != nil { pci.kickRestoredQueues() }
        if startPaused { for runner in runners { runner.request(.pause) } }
        for runner in runners where !runner.start() {
            latch.request(.failed("cannot start a vCPU thread"))
        }
    }

    /// Blocks until the machine exits (or the timeout passes: nil), then stops and joins all vCPUs.
    public func waitForExit(timeoutSeconds: Double? = nil) -> MachineExit? {
        guard let outcome = latch.outcome.wait(until: { $0 != nil }, timeoutSeconds: timeoutSeconds, then: { $0 }) ?? nil else {
            return nil
        }
        joinAll()
        return outcome
    }

    /// Boots and runs to completion.
    public func run() throws -> MachineExit {
        try start()
        return waitForExit() ?? .stopped
    }

    /// Asks the machine to stop; safe from any thread (signal handler thread, console, API).
    /// Whoever waits in `waitForExit` then joins the vCPU threads.
    public func requestStop() { latch.request(.stopped) }

    /// Ends the machine as failed (a VMM-side cause, e.g. post-copy losing its source).
    func fail(_ why: String) { latch.request(.failed(why)) }

    /// Stops the machine and joins its vCPU threads (from the thread that owns it).
    public func stop() {
        requestStop()
        _ = waitForExit()
    }

    private func joinAll() {
        let first = joinState.update { done -> Bool in defer { done = true }; return !done }
        guard first else { return }
        for runner in runners { runner.request(.stop) }
        for runner in runners { runner.join() }
        pci.stop()
        if ownsResources { resources.release(log: { _ in }) } else { resources.flushDisks(log: { _ in }) }
    }

    /// Stops the device threads (after `pause()`): with them, nothing touches guest memory or the
    /// disks any more, so a snapshot sees one instant. `resumeDevices` undoes it.
    public func quiesceDevices() throws {
        guard isPaused else { throw MachineError.notPaused }
        pci.stop()
        resources.flushDisks(log: { _ in })
        quiesced.store(true, ordering: .releasing)
    }

    /// Starts the device threads again after `quiesceDevices`.
    public func resumeDevices() throws {
        guard quiesced.exchange(false, ordering: .acquiringAndReleasing) else { return }
        try pci.start()
    }

    /// Parks every vCPU outside the guest at an instruction boundary with I/O completed.
    public func pause(timeoutSeconds: Double = 10) throws {
        for runner in runners { runner.request(.pause) }
        for runner in runners where !runner.waitParked(timeoutSeconds: timeoutSeconds) {
            throw MachineError.pauseTimedOut(vcpu: runner.vcpu.id)
        }
    }

    /// Lets every vCPU run again; returns once none is parked any more, so state queries that
    /// follow see a running machine.
    public func resume(timeoutSeconds: Double = 10) {
        for runner in runners { runner.request(.run) }
        for runner in runners { runner.waitRunning(timeoutSeconds: timeoutSeconds) }
    }

    /// Whether every vCPU is parked (or finished).
    public var isPaused: Bool { runners.allSatisfy { $0.control.read { $0.parked || $0.finished } } }

    /// Captures each vCPU's state on its own thread (the vCPU channel); only while paused.
    public func captureVCPUStates() throws -> [VCPUState] {
        guard isPaused else { throw MachineError.notPaused }
        return try runners.map { runner in try runner.perform { try $0.captureState() } }
    }

    /// One line per PCI device: what the guest sees and what backs it.
    public var deviceSummary: [String] { pci.summary }

    /// Block, network, console and entropy counters of the virtio devices.
    public var deviceStatistics: DeviceStatistics { pci.statistics }

    /// Presses the ACPI power button: an ACPI-aware guest shuts down in order and powers off (S5).
    public func pressPowerButton() { acpiPM.pressPowerButton() }

    /// Whether the guest has ACPI power-button events enabled (its ACPI driver is listening).
    public var powerButtonEnabled: Bool { acpiPM.powerButtonEnabled }

    /// A power-button press the guest has not acknowledged (cleared) yet.
    public var powerButtonPending: Bool { acpiPM.powerButtonPending }

    /// The console the user types into: hvc0 when the machine has a virtio console, else COM1.
    public func typeConsoleInput(_ bytes: [UInt8], timeoutSeconds: Double = 5) -> Int {
        guard let console = pci.console else { return typeSerialInput(bytes, timeoutSeconds: timeoutSeconds) }
        return typeInput(bytes, timeoutSeconds: timeoutSeconds, enqueue: { console.enqueueInput($0) }, space: { console.inputSpace })
    }

    /// Feeds host keystrokes to COM1; returns how many bytes the FIFO accepted (never blocks).
    public func sendSerialInput(_ bytes: some Collection<UInt8>) -> Int { serial.enqueueInput(bytes) }

    /// Types `bytes` into COM1 with flow control: what the FIFO refuses is sent as the guest reads,
    /// waiting at most `timeoutSeconds` for room each time. Returns how many bytes went in.
    public func typeSerialInput(_ bytes: [UInt8], timeoutSeconds: Double = 5) -> Int {
        typeInput(bytes, timeoutSeconds: timeoutSeconds, enqueue: { serial.enqueueInput($0) }, space: { serial.inputSpace })
    }

    /// Sends what the device's FIFO takes, then waits (bounded) for the guest to make room.
    private func typeInput(_ bytes: [UInt8], timeoutSeconds: Double, enqueue: (ArraySlice<UInt8>) -> Int,
                           space: () -> Int) -> Int {
        var remaining = bytes[...]
        while !remaining.isEmpty, !latch.hasOutcome {
            let generation = serialInputSpace.read { $0 }
            remaining = remaining.dropFirst(enqueue(remaining))
            if remaining.isEmpty || space() > 0 { continue }
            guard serialInputSpace.wait(until: { $0 != generation }, timeoutSeconds: timeoutSeconds, then: { _ in true }) != nil else { break }
        }
        return bytes.count - remaining.count
    }

    /// Number of vCPU exits handled so far, all vCPUs together.
    public var exitCount: UInt64 { runners.reduce(0) { $0 &+ $1.exitCount } }

    /// The same exits by reason, all vCPUs together.
    public var exitReasons: [ExitReason: UInt64] {
        runners.reduce(into: [:]) { total, runner in total.merge(runner.exitReasons.snapshot, uniquingKeysWith: &+) }
    }

    public enum RunState: String, Codable, Sendable { case created, running, paused, stopped }

    /// What the machine is doing now (for the control API and the management layer).
    public var runState: RunState {
        if latch.hasOutcome { return .stopped }
        if !started { return .created }
        return isPaused ? .paused : .running
    }

    /// How it ended, once it has.
    public var outcome: MachineExit? { latch.outcome.read { $0 } }
}

public enum MachineError: Error, Equatable, CustomStringConvertible {
    case pauseTimedOut(vcpu: Int)
    case notPaused
    case devicesRunning
    case vcpuUnresponsive(vcpu: Int)

    public var description: String {
        switch self {
        case let .pauseTimedOut(vcpu): return "vCPU \(vcpu) did not pause in time"
        case .notPaused: return "the machine must be paused first"
        case .devicesRunning: return "the device threads must be stopped first (quiesceDevices)"
        case let .vcpuUnresponsive(vcpu): return "vCPU \(vcpu) did not answer a request on its channel in time"
        }
    }
}

extension Segment {
    init(_ s: SegmentRegister) {
        self.init(base: s.base, limit: s.limit, selector: s.selector, type: s.type, present: s.present, dpl: s.dpl,
                  db: s.db, s: s.s, l: s.l, g: s.g)
    }
}
