/// What happens when the guest resets itself.
public enum RebootAction: String, Sendable, CaseIterable, Codable {
    /// `vireo run` ends with status 0, like a VM whose owner wants it gone after reboot.
    case exit
    /// The machine is rebuilt and the kernel booted again (CMOS NVRAM survives, as on a PC).
    case restart
}

/// How the VMM decides which host quirks apply (see HostProfile in the VMM).
public enum HostProfileChoice: String, Codable, Sendable, CaseIterable {
    case auto, native
    case emulatedKernelMode = "emulated-kernel-mode"
}

/// Entry protocol for ELF kernels (the Boot module's BootProtocol, by name).
public enum BootProtocolChoice: String, Codable, Sendable, CaseIterable {
    case auto, linux64, pvh
}

/// Where a restored machine's RAM comes from.
public enum SnapshotMemoryMode: String, Codable, Sendable, CaseIterable {
    /// The snapshot file is mapped copy-on-write: pages load when the guest first touches them,
    /// so restoring costs the same for any guest size (the file must stay in place while it runs).
    case mapped
    /// RAM is read into fresh memory at restore: for snapshots on slow or remote storage, or a
    /// file that is about to be replaced.
    case copy
}

/// A machine to resume from a snapshot file instead of booting a kernel.
public struct RestoreSource: Codable, Equatable, Sendable {
    public var path: String
    public var memory: SnapshotMemoryMode

    public init(path: String, memory: SnapshotMemoryMode = .mapped) {
        self.path = path
        self.memory = memory
    }
}

/// Everything one `vireo run` process needs to run one VM: what the daemon writes and the VMM
/// reads (`vireo run --launch-spec FILE`), and what `vireo run`'s own flags are turned into. One
/// Codable type on both sides, so a renamed field fails to compile rather than to launch.
public struct LaunchSpec: Codable, Equatable, Sendable {
    /// Bumped when a field changes meaning; a VMM refuses specs newer than it understands.
    public static let currentVersion = 1

    public var version: Int
    /// The kernel to boot; nil when the machine is restored from a snapshot or boots firmware.
    public var kernel: String?
    /// Boot through firmware instead of a kernel: "bios" (SeaBIOS), "uefi" (OVMF) or a firmware
    /// file's path. The firmware finds a boot loader on the disks.
    public var firmware: String?
    /// Where the firmware's own diagnostic log (QEMU's debugcon, port 0x402) goes, appended.
    public var firmwareLog: String?
    /// A UEFI firmware's variable store (the VM's NVRAM, libvirt's `<nvram>`): a file made from the
    /// firmware's empty store when missing; nil keeps UEFI variables in memory for the VM's life.
    public var efivars: String?
    public var initrd: String?
    public var cmdline: String
    public var cpus: Int
    public var memoryBytes: UInt64
    public var onReboot: RebootAction
    public var bootProtocol: BootProtocolChoice
    public var hostProfile: HostProfileChoice
    public var devices: DeviceOptions
    /// The control API's Unix socket.
    public var apiSocket: String?
    /// A file that also receives the guest's serial output.
    public var serialLog: String?
    /// Rotate `serialLog` when it reaches this many bytes: it becomes `<serialLog>.1` (replacing
    /// an older one) and a new file starts, so a chatty or hostile guest cannot fill the disk.
    /// nil: no limit.
    public var serialLogLimit: UInt64?
    /// Whether `vireo run` also copies the guest's output to its own stdout (nil: yes). The
    /// daemon turns it off: its VMs' stdout is a log file, and the serial log has the output.
    public var consoleToStdout: Bool?
    /// Where the VMM writes how it ended (`RunStatus`), just before it exits.
    public var statusFile: String?
    /// Reuse decompressed bzImage payloads from earlier boots.
    public var kernelCache: Bool
    /// Resume this snapshot instead of booting `kernel`.
    public var restore: RestoreSource?
    /// Receive the VM by migration on this address (`tcp:HOST:PORT`, `unix:PATH`) instead of
    /// booting `kernel`: the machine is the one the source sends.
    public var incoming: String?
    /// The cgroup.procs files of the VM's cgroup (one on cgroup v2, one per hierarchy on v1): the
    /// VMM joins them before it maps guest memory, and refuses to run if it cannot. nil: the VM
    /// runs in the cgroup it was started in.
    public var cgroupProcs: [String]?

    public init(kernel: String? = nil, initrd: String? = nil, cmdline: String = "", cpus: Int = 1,
                memoryBytes: UInt64 = 512 << 20, onReboot: RebootAction = .exit, bootProtocol: BootProtocolChoice = .auto,
                hostProfile: HostProfileChoice = .auto, devices: DeviceOptions = DeviceOptions(), apiSocket: String? = nil,
                serialLog: String? = nil, statusFile: String? = nil, kernelCache: Bool = true, restore: RestoreSource? = nil,
                incoming: String? = nil, firmware: String? = nil, firmwareLog: String? = nil, efivars: String? = nil) {
        self.version = Self.currentVersion
        self.firmware = firmware; self.firmwareLog = firmwareLog; self.efivars = efivars
        self.kernel = kernel; self.initrd = initrd; self.cmdline = cmdline; self.cpus = cpus
        self.memoryBytes = memoryBytes; self.onReboot = onReboot; self.bootProtocol = bootProtocol
        self.hostProfile = hostProfile; self.devices = devices; self.apiSocket = apiSocket
        self.serialLog = serialLog; self.statusFile = statusFile; self.kernelCache = kernelCache; self.restore = restore
        self.incoming = incoming
    }

    /// Launch files are small; anything larger is not one.
    public static let maximumEncodedBytes = 1 << 20
}
