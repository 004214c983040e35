import ArgumentParser
import Boot
import Devices
import Foundation
import KVM
import Sandbox
import VMM
import VMMControl
import VMContract
#if canImport(Glibc)
import Glibc
#endif

extension RebootAction: ExpressibleByArgument {}
extension BootProtocolChoice: ExpressibleByArgument {}
extension HostProfileChoice: ExpressibleByArgument {}
extension SnapshotMemoryMode: ExpressibleByArgument {}
extension SeccompMode: ExpressibleByArgument {}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a kernel (or resume a snapshot) in a new VM with the serial console on this terminal.",
        discussion: """
        The guest's COM1 is the terminal, in raw mode: keystrokes go to the guest. \
        \(SerialConsole.help). \
        Exit status: 0 when the guest powers off or resets (see --on-reboot) or is saved, (V << 1) | 1 when a \
        test guest writes V to the debug-exit port 0xf4 (as QEMU's isa-debug-exit), 1 on an error. \
        Kernels: ELF vmlinux, bzImage (payload decompressed on the host when possible), PVH ELF, \
        Multiboot v1. Snapshots: PUT /vm/snapshot on the control API writes one; --restore resumes it.
        """
    )

    @Option(help: "Kernel image: bzImage, ELF vmlinux, PVH ELF or Multiboot kernel.")
    var kernel: String?

    @Option(help: ArgumentHelp("Boot through firmware instead of --kernel: bios (SeaBIOS), uefi (OVMF) or a firmware file.", discussion: "The firmware boots the first disk with a boot loader (MBR or EFI system partition); its output and the boot loader's are on the serial console. bios needs Debian's seabios package, uefi its ovmf package.", valueName: "bios|uefi|file"))
    var firmware: String?

    @Option(name: .customLong("efivars"), help: ArgumentHelp("The VM's UEFI variable store (its NVRAM: boot entries, Secure Boot keys), kept in this file; made from the firmware's empty store when missing.", discussion: "Without it a UEFI VM's variables last until it stops.", valueName: "file"))
    var efivars: String?

    @Option(name: .customLong("firmware-log"), help: ArgumentHelp("Append the firmware's own diagnostic log (port 0x402, QEMU's debugcon) to this file.", valueName: "file"))
    var firmwareLog: String?

    @Option(help: "Initial ramdisk (Multiboot: passed as module 0).")
    var initrd: String?

    @Option(help: "Kernel command line.")
    var cmdline: String = ""

    @Option(help: "Number of vCPUs.")
    var cpus: Int = 1

    @Option(help: "Guest memory size, e.g. 512M or 2G.")
    var memory: String = "512M"

    @Option(name: .customLong("on-reboot"), help: "What a guest reset does: exit (status 0) or restart.")
    var onReboot: RebootAction = .exit

    @Option(name: .customLong("boot-protocol"), help: "Entry protocol for ELF kernels: auto, linux64 or pvh.")
    var bootProtocol: BootProtocolChoice = .auto

    @Option(name: .customLong("host-profile"), help: "Host KVM profile: auto (detect), native or emulated-kernel-mode.")
    var hostProfile: HostProfileChoice = .auto

    @Option(name: .customLong("disk"), help: ArgumentHelp("A virtio-blk disk: path=FILE[,readonly=on][,format=raw|qcow2][,serial=ID]. Repeat for more disks.", valueName: "spec"))
    var disks: [String] = []

    @Option(name: .customLong("net"), help: ArgumentHelp("A virtio-net NIC on a TAP: tap=NAME or bridge=BR (Vireo creates a TAP and adds it), [,mac=52:54:00:..][,offload=off]. Repeat for more NICs.", valueName: "spec"))
    var networks: [String] = []

    @Option(name: .customLong("console"), help: "Console for your terminal: serial (COM1, ttyS0) or virtio (hvc0; COM1 output is still shown).")
    var consoleKind: ConsoleKind = .serial

    @Flag(name: .customLong("rng"), help: "Add a virtio-rng device fed from the host's getrandom (the guest's /dev/hwrng).")
    var entropy = false

    @Option(name: .customLong("serial-log"), help: "Also append the guest's serial output to this file.")
    var serialLog: String?

    @Option(name: .customLong("serial-log-max"), help: "Rotate the serial log at this size (e.g. 8M): it becomes FILE.1 and a new FILE starts.")
    var serialLogMax: String?

    @Option(name: .customLong("api-socket"), help: ArgumentHelp("Serve the VM's control API (pause, resume, stop, snapshot, state, stats, console) on this Unix socket.", discussion: "HTTP/1.1, e.g. curl --unix-socket PATH http://vm/vm; see README."))
    var apiSocket: String?

    @Option(name: .customLong("status-file"), help: "At exit, write how the VM ended (JSON: outcome, detail, exit_status) to this file.")
    var statusFile: String?

    @Option(name: .customLong("restore"), help: ArgumentHelp("Resume the VM saved in this snapshot file instead of booting a kernel.", discussion: "The machine (vCPUs, memory, devices) is the snapshot's; --disk and --net may point its devices at other host paths (same number and kinds). With --restore-memory mapped (the default) the file must stay in place while the VM runs.", valueName: "file"))
    var restore: String?

    @Option(name: .customLong("restore-memory"), help: "How a restore loads guest RAM: mapped (copy-on-write from the file, cost flat in RAM size) or copy (read it all now).")
    var restoreMemory: SnapshotMemoryMode = .mapped

    @Option(name: .customLong("incoming"), help: ArgumentHelp("Wait for a live migration on this address and run the VM it brings: tcp:HOST:PORT (tcp::0 picks a port) or unix:PATH.", discussion: "The machine is the source's (PUT /vm/migrate on its control API, or `vireo migrate`); --disk and --net may point its devices at this host's paths. Disks are shared storage: the same image must be reachable here.", valueName: "address"))
    var incoming: String?

    @Option(name: .customLong("launch-spec"), help: ArgumentHelp("Read the whole VM description from this JSON launch specification (what the daemon writes) instead of flags.", valueName: "file"))
    var launchSpec: String?

    @Flag(name: .customLong("no-kernel-cache"), help: ArgumentHelp("Decompress a bzImage's payload at every boot instead of reusing the copy cached from an earlier boot.", discussion: "The cache lives in ${VIREO_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vireo}/kernels; VIREO_KERNEL_CACHE=off also disables it."))
    var noKernelCache = false

    @Option(name: .customLong("seccomp"), help: ArgumentHelp("The VMM's system call filters: enforce (a call outside its thread's policy stops the VM with a report), log (make it and log it in the kernel log) or off.", discussion: "Default: $VIREO_SECCOMP, else enforce. no_new_privs is set and capabilities are dropped in every mode, once the VM's devices are open.", valueName: "mode"))
    var seccomp: SeccompMode?

    @Flag(name: .shortAndLong, help: "Explain what Vireo does: host profile, guest flags and why, boot path.")
    var verbose = false

    func run() throws {
        Sandbox.prepare()
        let spec: LaunchSpec
        do {
            spec = try launchSpecification()
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
        do {
            let status = try run(spec)
            throw ExitCode(status)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("\(error)")
            if let path = spec.statusFile {
                try? RunStatus(outcome: .failed, detail: "\(error)", exitStatus: 1).write(to: path)
            }
            throw ExitCode(1)
        }
    }

    /// The flags (or the --launch-spec file) as the one description the VMM runs from.
    func launchSpecification() throws -> LaunchSpec {
        if let launchSpec {
            guard let bytes = readSmallFileBytes(launchSpec, limit: LaunchSpec.maximumEncodedBytes + 1) else {
                throw ConfigError.unreadableFile(kind: "launch specification", path: launchSpec, reason: String(cString: strerror(errno)))
            }
            guard bytes.count <= LaunchSpec.maximumEncodedBytes else {
                throw ConfigError.unreadableFile(kind: "launch specification", path: launchSpec, reason: "larger than \(LaunchSpec.maximumEncodedBytes) bytes")
            }
            do {
                return try ContractJSON.decode(LaunchSpec.self, from: bytes)
            } catch {
                throw ConfigError.unreadableFile(kind: "launch specification", path: launchSpec, reason: "not a valid launch specification (\(error))")
            }
        }
        guard kernel != nil || firmware != nil || restore != nil || incoming != nil else {
            throw ValidationError("give --kernel to boot a kernel, --firmware to boot a disk, --restore to resume a snapshot, --incoming to receive a migration, or --launch-spec")
        }
        guard [kernel, firmware, restore, incoming].compactMap({ $0 }).count == 1 else {
            throw ValidationError("--kernel, --firmware, --restore and --incoming exclude each other")
        }
        if firmware != nil, initrd != nil || !cmdline.isEmpty {
            throw ValidationError("--initrd and --cmdline go with --kernel; with --firmware the disk's boot loader chooses them")
        }
        let devices = DeviceOptions(disks: try disks.map { try DiskOptions.parse($0) },
                                    networks: try networks.map { try NetworkOptions.parse($0) },
                                    virtioConsole: consoleKind == .virtio, entropy: entropy)
        var spec = LaunchSpec(kernel: kernel, initrd: initrd, cmdline: cmdline, cpus: cpus, memoryBytes: try VMConfig.parseSize(memory),
                              onReboot: onReboot, bootProtocol: bootProtocol, hostProfile: hostProfile, devices: devices,
                              apiSocket: apiSocket, serialLog: serialLog, statusFile: statusFile, kernelCache: !noKernelCache,
                              restore: restore.map { RestoreSource(path: $0, memory: restoreMemory) }, incoming: incoming,
                              firmware: firmware, firmwareLog: firmwareLog, efivars: efivars)
        if let serialLogMax {
            guard serialLog != nil else { throw ValidationError("--serial-log-max goes with --serial-log") }
            let limit = try VMConfig.parseSize(serialLogMax)
            guard limit >= 4096 else { throw ValidationError("--serial-log-max must be at least 4K, not '\(serialLogMax)'") }
            spec.serialLogLimit = limit
        }
        return spec
    }

    private func run(_ spec: LaunchSpec) throws -> Int32 {
        try joinCgroups(spec.cgroupProcs)
        let system = try KVMSystem()
        let kernelCache = KernelPayloadCacheDirectory.configured(environment: Self.cacheEnvironment(), disabled: !spec.kernelCache)
        let session = try VMSession(spec: spec, system: system, terminal: spec.consoleToStdout == false ? nil : FileDescriptorOutput(fd: 1),
                                    payloadCache: kernelCache.cache,
                                    onListening: { printNote("waiting for a migration on \($0)") },
                                    log: { printNote($0) })
        if verbose {
            describeProfile(session.profile)
            printNote(kernelCache.note)
        }
        // Everything that needs privilege is open now (/dev/kvm, disks, TAPs, passt started):
        // every thread gives it up (a restore's RAM thread may already run), and the filters go on
        // before the vCPUs start.
        try Sandbox.dropPrivileges()
        let seccompMode = try self.seccompMode()
        let console = SerialConsole()
        let signals = SignalWatcher()
        session.onMachine = { [verbose, unowned session] machine, boots in
            if verbose, let restored = session.restoreMilliseconds, boots == 1 {
                printNote(String(format: "restored in %.2f ms (snapshot opened and checked in %.2f ms; RAM %@, devices and vCPUs loaded)",
                                 restored, session.snapshotCheckMilliseconds ?? 0,
                                 session.spec.restore?.memory == .copy ? "copied" : "mapped"))
            }
            if verbose {
                printNote("boot #\(boots): \(machine.bootDescription), \(machine.config.cpus) vCPU(s), \(machine.config.memorySize >> 20) MiB")
                for note in machine.bootPlan?.notes ?? [] { printNote(note) }
                for line in machine.deviceSummary { printNote("pci \(line)") }
                if machine.config.firmware == nil { printNote("guest command line: \(machine.effectiveCmdline)") }
            }
            console.attach(machine)
            if boots == 1 {
                console.enterRawMode()
                console.startInputThread()
                signals.start()
            }
        }
        session.onMachineEnded = { [verbose, onReboot = spec.onReboot] machine, outcome in
            guard verbose else { return }
            let top = machine.exitReasons.top(8).map { "\($0.reason) \($0.count)" }.joined(separator: ", ")
            printNote("vCPU exits: \(machine.exitCount) in all; most frequent: \(top)")
            if outcome == .reset && onReboot == .restart { printNote("guest reset: restarting") }
        }
        console.onQuit = { [session] in session.requestStop() }
        signals.onSignal = { [session] signal in session.requestStop(signal: signal) }
        signals.onForcedExit = { [console] in console.restoreTerminal() }
        if let apiSocket = session.spec.apiSocket {
            let server = ControlServer(socketPath: apiSocket, api: ControlAPI(session: session))
            try server.start()
            session.serve(server)
            if verbose { printNote("control API on \(apiSocket)") }
        }
        try Sandbox.confineProcess(mode: seccompMode)
        if verbose { printNote("seccomp: \(seccompMode.rawValue); no_new_privs set, capabilities dropped") }
        let status = session.run()
        console.restoreTerminal()
        if let signal = session.endedBySignal { printNote("terminating on signal \(signal)") }
        if let outcome = session.lastOutcome {
            if case let .failed(why) = outcome { printError(why) }
            else if verbose { printNote("\(outcome); exit status \(status)") }
        }
        return status
    }

    /// --seccomp, else $VIREO_SECCOMP, else enforce.
    private func seccompMode() throws -> SeccompMode {
        if let seccomp { return seccomp }
        guard let value = getenv(SeccompMode.environmentVariable).map({ String(cString: $0) }), !value.isEmpty else { return .enforce }
        guard let mode = SeccompMode(rawValue: value) else {
            throw ValidationError("\(SeccompMode.environmentVariable)=\(value) is not one of enforce, log, off")
        }
        return mode
    }

    /// The variables that place (or switch off) the kernel payload cache.
    private static func cacheEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for name in [KernelPayloadCacheDirectory.switchVariable, "VIREO_CACHE_DIR", "XDG_CACHE_HOME", "HOME"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return environment
    }

    private func describeProfile(_ profile: HostProfile) {
        printNote("host profile: \(profile)")
        for flag in profile.linuxGuestFlags { printNote("guest flag \(flag.flag): \(flag.why)") }
        if profile.kind == .emulatedKernelMode {
            printNote("int3 at CPL0 is injected as #BP by Vireo; fwait is stepped over; other emulation failures stop the VM with a report")
        }
    }
}

enum ConsoleKind: String, ExpressibleByArgument, CaseIterable {
    case serial, virtio
}

func printError(_ message: String) {
    let line = Array("vireo: error: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func printNote(_ message: String) {
    let line = Array("vireo: \(message)\r\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// Turns SIGTERM/SIGINT/SIGHUP into an orderly stop (terminal restored, vCPU threads joined).
final class SignalWatcher: @unchecked Sendable {
    var onSignal: (@Sendable (Int32) -> Void)?
    /// Runs just before a forced exit (restores the terminal).
    var onForcedExit: (@Sendable () -> Void)?
    private(set) var received: Int32?
    private var set = sigset_t()

    init() {
        sigemptyset(&set)
        for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&set, signal) }
        // Blocked before any thread starts, so only the watcher thread receives them.
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    func start() {
        var thread = pthread_t()
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { raw in
            let watcher = Unmanaged<SignalWatcher>.fromOpaque(raw!).takeRetainedValue()
            var signal: Int32 = 0
            // First signal: orderly stop. A second one means the orderly path is stuck: leave now.
            while sigwait(&watcher.set, &signal) == 0 {
                if watcher.received != nil {
                    watcher.onForcedExit?()
                    _exit(128 + signal)
                }
                watcher.received = signal
                watcher.onSignal?(signal)
            }
            return nil
        }, box)
        pthread_detach(thread)
    }
}
