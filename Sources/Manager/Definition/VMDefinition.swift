import Foundation

/// A virtual machine as the user defines it: what `vireo define` stores and `vireo dumpxml` shows.
///
/// Values come from the native YAML/JSON format (`init(yaml:)`, also the `Codable` form) or from
/// libvirt domain XML (`ImportResult(libvirtXML:)`); both validate. The memberwise initializer
/// does not: call `validate()` on values built in code before using them.
/// The format is documented in docs/vm-definition.md.
public struct VMDefinition: Equatable, Sendable {
    public var name: String
    public var uuid: UUID
    /// Maximum guest memory in bytes.
    public var memory: UInt64
    /// Memory the guest starts with, in bytes (≤ `memory`; the balloon target later).
    public var currentMemory: UInt64
    public var vcpus: Int
    public var os: OSBoot
    public var disks: [Disk]
    public var interfaces: [NetworkInterface]
    public var console: SerialConsole
    /// A virtio-rng device fed from the host's random source (libvirt's `<rng model='virtio'>`).
    public var rng: Bool
    public var onPoweroff: LifecycleAction
    public var onReboot: LifecycleAction
    public var onCrash: LifecycleAction
    public var autostart: Bool
    /// Host resource limits (libvirt's <cputune>, <memtune>, <blkiotune>), applied through the
    /// VM process's cgroup; empty: none.
    public var cputune: CPUTune
    public var memtune: MemoryTune
    public var blkiotune: BlockIOTune

    public init(
        name: String, uuid: UUID = UUID(), memory: UInt64, currentMemory: UInt64? = nil,
        vcpus: Int = 1, os: OSBoot, disks: [Disk] = [], interfaces: [NetworkInterface] = [],
        console: SerialConsole = SerialConsole(), rng: Bool = false, onPoweroff: LifecycleAction = .destroy,
        onReboot: LifecycleAction = .restart, onCrash: LifecycleAction = .destroy,
        autostart: Bool = false, cputune: CPUTune = CPUTune(), memtune: MemoryTune = MemoryTune(),
        blkiotune: BlockIOTune = BlockIOTune()
    ) {
        self.name = name
        self.uuid = uuid
        self.memory = memory
        self.currentMemory = currentMemory ?? memory
        self.vcpus = vcpus
        self.os = os
        self.disks = disks
        self.interfaces = interfaces
        self.console = console
        self.rng = rng
        self.onPoweroff = onPoweroff
        self.onReboot = onReboot
        self.onCrash = onCrash
        self.autostart = autostart
        self.cputune = cputune
        self.memtune = memtune
        self.blkiotune = blkiotune
    }
}

/// How the machine boots: exactly one of `kernel` (direct kernel boot: Vireo loads the kernel
/// itself) or `firmware` (SeaBIOS, OVMF or a firmware file boots the disks' boot loader).
public struct OSBoot: Equatable, Sendable {
    /// Direct kernel boot; nil when the machine boots through `firmware`.
    public var kernel: String?
    /// Only with `kernel`.
    public var initrd: String?
    /// Only with `kernel` ("" otherwise).
    public var cmdline: String
    /// Boot through firmware instead of a kernel; nil for direct kernel boot.
    public var firmware: Firmware?
    /// A per-VM UEFI variable store (libvirt's `<nvram>`); only with UEFI firmware (`uefi` or a
    /// firmware file, which may be an OVMF build).
    public var nvram: String?
    /// Where the firmware looks for a boot loader, in order (libvirt's `<boot dev=…/>`). Only
    /// firmware boots use it; a kernel definition keeps the default, `[.hd]`.
    public var bootOrder: [BootDevice]

    public init(
        kernel: String? = nil, initrd: String? = nil, cmdline: String = "", firmware: Firmware? = nil,
        nvram: String? = nil, bootOrder: [BootDevice] = [.hd]
    ) {
        self.kernel = kernel
        self.initrd = initrd
        self.cmdline = cmdline
        self.firmware = firmware
        self.nvram = nvram
        self.bootOrder = bootOrder
    }
}

/// The firmware a machine boots through.
public enum Firmware: Equatable, Hashable, Sendable {
    /// SeaBIOS (Debian's seabios package): a PC BIOS, boots an MBR.
    case bios
    /// OVMF (Debian's ovmf package): UEFI, boots an EFI system partition.
    case uefi
    /// A firmware image the user names (an absolute path): a BIOS ROM or a UEFI build.
    case file(String)

    /// The firmware a native `firmware:` value or a libvirt loader path names: "bios", "uefi",
    /// one of Debian's own SeaBIOS/OVMF files (which is `.bios`/`.uefi`, so a definition has
    /// one spelling for them), or any other path as a file.
    public init(choice: String) {
        switch choice {
        case "bios": self = .bios
        case "uefi": self = .uefi
        default: self.init(path: choice)
        }
    }

    /// The firmware a file path names: `.bios`/`.uefi` for Debian's own images, else `.file`.
    public init(path: String) {
        if Self.debianSeaBIOS.contains(path) {
            self = .bios
        } else if Self.debianOVMF.contains(path) {
            self = .uefi
        } else {
            self = .file(path)
        }
    }

    /// How the native format and the VMM (`LaunchSpec.firmware`) spell it.
    public var choice: String {
        switch self {
        case .bios: "bios"
        case .uefi: "uefi"
        case .file(let path): path
        }
    }

    /// Whether a UEFI variable store (`nvram`) can go with it: UEFI, or a file that may be one.
    public var mayBeUEFI: Bool { self != .bios }

    /// Debian's SeaBIOS images that stand for `bios` (the VMM's `bios` is bios-256k.bin).
    public static let debianSeaBIOS: Set<String> = [
        "/usr/share/seabios/bios-256k.bin", "/usr/share/qemu/bios-256k.bin",
    ]

    /// Debian's x86_64 OVMF code images (the ovmf package) that stand for `uefi`: the unified
    /// image the VMM boots for `uefi`, and the pflash code images libvirt names in <loader>.
    public static let debianOVMF: Set<String> = [
        "/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd",
        "/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_CODE.ms.fd", "/usr/share/OVMF/OVMF_CODE.secboot.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd",
    ]
}

/// A device the firmware tries to boot from; libvirt's `<boot dev=…/>` names.
public enum BootDevice: String, CaseIterable, Sendable {
    /// The disks (`device: disk`).
    case hd
    /// The cdroms.
    case cdrom
    /// PXE over the interfaces.
    case network
}

public struct Disk: Equatable, Sendable {
    /// Where the bytes live: a regular file or a block device node.
    public enum SourceType: String, CaseIterable, Sendable { case file, block }
    public enum Format: String, CaseIterable, Sendable { case raw, qcow2 }
    /// A cdrom is a read-only disk to the guest.
    public enum Device: String, CaseIterable, Sendable { case disk, cdrom }

    public var source: String
    public var type: SourceType
    public var device: Device
    public var format: Format
    /// Guest-visible name, e.g. "vda"; unique within a definition.
    public var target: String
    public var readonly: Bool
    /// virtio-blk serial (at most 20 printable ASCII bytes, the size of the virtio ID field).
    public var serial: String?

    public init(
        source: String, type: SourceType = .file, device: Device = .disk, format: Format = .raw,
        target: String, readonly: Bool? = nil, serial: String? = nil
    ) {
        self.source = source
        self.type = type
        self.device = device
        self.format = format
        self.target = target
        self.readonly = readonly ?? (device == .cdrom)
        self.serial = serial
    }
}

public struct NetworkInterface: Equatable, Sendable {
    /// bridge: a host bridge; network: a named network the daemon manages; tap: an existing tap;
    /// user: user-mode networking through passt (no host device).
    public enum Kind: String, CaseIterable, Sendable { case bridge, network, tap, user }
    public enum Model: String, CaseIterable, Sendable { case virtio }

    public var type: Kind
    /// The bridge, network or tap device name, per `type` (empty for user).
    public var source: String
    public var mac: MACAddress
    public var model: Model
    /// user only: host ports forwarded into the guest, "tcp::2222-:22" (QEMU's hostfwd spelling).
    public var forwards: [String]

    public init(type: Kind, source: String, mac: MACAddress = .random(), model: Model = .virtio, forwards: [String] = []) {
        self.type = type
        self.source = source
        self.mac = mac
        self.model = model
        self.forwards = forwards
    }
}

/// The guest's serial console (COM1): `pty` makes it available to `vireo console`.
public struct SerialConsole: Equatable, Sendable {
    public enum Kind: String, CaseIterable, Sendable { case pty, none }
    public var type: Kind

    public init(type: Kind = .pty) { self.type = type }
}

/// What happens when the guest powers off, reboots or crashes; libvirt's names and meanings.
public enum LifecycleAction: String, CaseIterable, Sendable {
    case destroy, restart, preserve
}

/// Bounds on definitions. Inputs are hostile; these keep every loop and allocation bounded.
public enum DefinitionLimits {
    public static let maxDocumentBytes = 1 << 20
    public static let maxNameLength = 64
    public static let maxDisks = 64
    public static let maxInterfaces = 32
    /// 255: the most vCPUs addressable by 8-bit xAPIC IDs, which is what the VMM sets up.
    public static let maxVCPUs = 255
    public static let minMemory: UInt64 = 1 << 20
    public static let maxMemory: UInt64 = 16 << 40
    /// Guest RAM is mapped in host pages.
    public static let memoryAlignment: UInt64 = 4096
    public static let maxPathBytes = 4096
    public static let maxCmdlineBytes = 4096
    public static let maxSerialBytes = 20
    /// Nesting in a document. The schema is four levels deep; this leaves room, not recursion.
    public static let maxNestingDepth = 32
    public static let maxXMLElements = 10_000
    /// Scalars, mappings and lists in a YAML document, counting each alias use again.
    public static let maxYAMLValues = 100_000
}
