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
    public var onPoweroff: LifecycleAction
    public var onReboot: LifecycleAction
    public var onCrash: LifecycleAction
    public var autostart: Bool

    public init(
        name: String, uuid: UUID = UUID(), memory: UInt64, currentMemory: UInt64? = nil,
        vcpus: Int = 1, os: OSBoot, disks: [Disk] = [], interfaces: [NetworkInterface] = [],
        console: SerialConsole = SerialConsole(), onPoweroff: LifecycleAction = .destroy,
        onReboot: LifecycleAction = .restart, onCrash: LifecycleAction = .destroy,
        autostart: Bool = false
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
        self.onPoweroff = onPoweroff
        self.onReboot = onReboot
        self.onCrash = onCrash
        self.autostart = autostart
    }
}

/// Direct kernel boot: Vireo has no firmware, it loads the kernel itself.
public struct OSBoot: Equatable, Sendable {
    public var kernel: String
    public var initrd: String?
    public var cmdline: String

    public init(kernel: String, initrd: String? = nil, cmdline: String = "") {
        self.kernel = kernel
        self.initrd = initrd
        self.cmdline = cmdline
    }
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
    /// bridge: a host bridge; network: a named network the daemon manages; tap: an existing tap.
    public enum Kind: String, CaseIterable, Sendable { case bridge, network, tap }
    public enum Model: String, CaseIterable, Sendable { case virtio }

    public var type: Kind
    /// The bridge, network or tap device name, per `type`.
    public var source: String
    public var mac: MACAddress
    public var model: Model

    public init(type: Kind, source: String, mac: MACAddress = .random(), model: Model = .virtio) {
        self.type = type
        self.source = source
        self.mac = mac
        self.model = model
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
