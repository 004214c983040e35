import ArgumentParser
import Boot
import Devices
import KVM
import VMM
import VMMControl
#if canImport(Glibc)
import Glibc
#endif

extension RebootAction: ExpressibleByArgument {}
extension BootProtocol: ExpressibleByArgument {}

enum HostProfileChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, native
    case emulatedKernelMode = "emulated-kernel-mode"
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a kernel in a new VM with the serial console on this terminal.",
        discussion: """
        The guest's COM1 is the terminal, in raw mode: keystrokes go to the guest. \
        \(SerialConsole.help). \
        Exit status: 0 when the guest powers off or resets (see --on-reboot), (V << 1) | 1 when a \
        test guest writes V to the debug-exit port 0xf4 (as QEMU's isa-debug-exit), 1 on an error. \
        Kernels: ELF vmlinux, bzImage (payload decompressed on the host when possible), PVH ELF, \
        Multiboot v1.
        """
    )

    @Option(help: "Kernel image: bzImage, ELF vmlinux, PVH ELF or Multiboot kernel.")
    var kernel: String

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
    var bootProtocol: BootProtocol = .auto

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

    @Option(name: .customLong("api-socket"), help: ArgumentHelp("Serve the VM's control API (pause, resume, stop, state, stats, console) on this Unix socket.", discussion: "HTTP/1.1, e.g. curl --unix-socket PATH http://vm/vm; see README."))
    var apiSocket: String?

    @Option(name: .customLong("status-file"), help: "At exit, write how the VM ended (JSON: outcome, detail, exit_status) to this file.")
    var statusFile: String?

    @Flag(name: .customLong("no-kernel-cache"), help: ArgumentHelp("Decompress a bzImage's payload at every boot instead of reusing the copy cached from an earlier boot.", discussion: "The cache lives in ${VIREO_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/vireo}/kernels; VIREO_KERNEL_CACHE=off also disables it."))
    var noKernelCache = false

    @Flag(name: .shortAndLong, help: "Explain what Vireo does: host profile, guest flags and why, boot path.")
    var verbose = false

    func run() throws {
        do {
            let status = try boot()
            throw ExitCode(status)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("\(error)")
            recordStatus(.failed, detail: "\(error)", exitStatus: 1)
            throw ExitCode(1)
        }
    }

    private func boot() throws -> Int32 {
        let memorySize = try VMConfig.parseSize(memory)
        let kernelBytes = try readWholeFile(kernel, kind: "kernel", limit: max(memorySize, 64 << 20))
        let initrdBytes = try initrd.map { try readWholeFile($0, kind: "initrd", limit: memorySize) }
        let system = try KVMSystem()
        let profile = try resolveProfile(system: system)
        var config = try VMConfig(kernel: kernelBytes, kernelPath: kernel, initrd: initrdBytes, initrdPath: initrd,
                                  cmdline: cmdline, cpus: cpus, memorySize: memorySize, onReboot: onReboot,
                                  bootProtocol: bootProtocol, hostProfile: profile,
                                  devices: try deviceOptions())
        let kernelCache = KernelPayloadCacheDirectory.configured(environment: Self.cacheEnvironment(), disabled: noKernelCache)
        config.payloadCache = kernelCache.cache
        if verbose {
            describeProfile(profile)
            printNote(kernelCache.note)
        }

        let console = SerialConsole()
        let signals = SignalWatcher()
        // COM1 goes to the terminal and into a bounded ring the control API serves.
        var sinks: [any SerialOutput] = [FileDescriptorOutput(fd: 1)]
        if let serialLog {
            let fd = open(serialLog, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw ConfigError.unwritableFile(kind: "serial log", path: serialLog, reason: String(cString: strerror(errno)))
            }
            sinks.append(FileDescriptorOutput(fd: fd))
        }
        let consoleLog = ConsoleLog(forwardingTo: TeeOutput(sinks: sinks))
        var server: ControlServer?
        defer { server?.stop() }
        var cmos: CMOSRTCState?
        var boots = 0
        while true {
            boots += 1
            let machine = try Machine(config: config, system: system, profile: profile,
                                      serialOutput: consoleLog, restoringCMOS: cmos,
                                      rngSeed: hostRandomBytes(32), log: { printNote($0) })
            if verbose {
                printNote("boot #\(boots): \(machine.bootPlan.format), \(cpus) vCPU(s), \(memorySize >> 20) MiB")
                for note in machine.bootPlan.notes { printNote(note) }
                for line in machine.deviceSummary { printNote("pci \(line)") }
                printNote("guest command line: \(machine.effectiveCmdline)")
            }
            console.attach(machine)
            console.onQuit = { [machine] in machine.requestStop() }
            signals.onSignal = { [machine] _ in machine.requestStop() }
            signals.onForcedExit = { [console] in console.restoreTerminal() }
            if boots == 1 {
                if let apiSocket {
                    let api = ControlAPI(machine: { [console] in console.currentMachine }, console: consoleLog)
                    server = ControlServer(socketPath: apiSocket, api: api, console: consoleLog)
                    try server?.start()
                    if verbose { printNote("control API on \(apiSocket)") }
                }
                console.enterRawMode()
                console.startInputThread()
                signals.start()
            }
            let outcome = try machine.run()
            if verbose {
                let top = machine.exitReasons.top(8).map { "\($0.reason) \($0.count)" }.joined(separator: ", ")
                printNote("vCPU exits: \(machine.exitCount) in all; most frequent: \(top)")
            }
            if outcome == .reset && onReboot == .restart {
                cmos = machine.rtc.state
                if verbose { printNote("guest reset: restarting") }
                continue
            }
            console.restoreTerminal()
            if let signal = signals.received {
                printNote("terminating on signal \(signal)")
                recordStatus(.signal, detail: "signal \(signal)", exitStatus: 128 + signal)
                return 128 + signal
            }
            if case let .failed(why) = outcome {
                printError(why)
            } else if verbose {
                printNote("\(outcome); exit status \(outcome.processStatus)")
            }
            recordStatus(outcome)
            return outcome.processStatus
        }
    }

    private func deviceOptions() throws -> DeviceOptions {
        DeviceOptions(disks: try disks.map { try DiskOptions.parse($0) },
                      networks: try networks.map { try NetworkOptions.parse($0) },
                      virtioConsole: consoleKind == .virtio, entropy: entropy)
    }

    /// The variables that place (or switch off) the kernel payload cache.
    private static func cacheEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for name in [KernelPayloadCacheDirectory.switchVariable, "VIREO_CACHE_DIR", "XDG_CACHE_HOME", "HOME"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return environment
    }

    private func resolveProfile(system: KVMSystem) throws -> HostProfile {
        switch hostProfile {
        case .native: return HostProfile.native
        case .emulatedKernelMode: return HostProfile.emulatedKernelMode
        case .auto: return HostProfile.detect(kernelModeProbe: try? KernelModeProbe.run(system: system))
        }
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
