import Boot
import Devices
@_exported import VMContract

public enum ConfigError: Error, Equatable, CustomStringConvertible {
    case invalidSize(String)
    case invalidCPUCount(Int, maximum: Int)
    case memoryTooSmall(UInt64, minimum: UInt64)
    case memoryTooLarge(UInt64)
    case unreadableFile(kind: String, path: String, reason: String)
    case unwritableFile(kind: String, path: String, reason: String)
    case tooManyDevices(Int, maximum: Int)

    public var description: String {
        switch self {
        case let .invalidSize(text):
            return "invalid size '\(text)': use a number with an optional K, M, G or T suffix (e.g. 512M, 2G)"
        case let .invalidCPUCount(count, maximum):
            return "invalid vCPU count \(count): must be between 1 and \(maximum)"
        case let .memoryTooSmall(size, minimum):
            return "memory size \(size >> 20) MiB is too small: at least \(minimum >> 20) MiB is needed"
        case let .memoryTooLarge(size):
            return "memory size \(size >> 30) GiB is larger than this VMM supports (1 TiB)"
        case let .unreadableFile(kind, path, reason):
            return "cannot read \(kind) '\(path)': \(reason)"
        case let .unwritableFile(kind, path, reason):
            return "cannot write \(kind) '\(path)': \(reason)"
        case let .tooManyDevices(count, maximum):
            return "\(count) PCI devices requested; at most \(maximum) fit on bus 0"
        }
    }
}

/// A validated machine description. Everything the guest sees is derived from it.
public struct VMConfig: Sendable {
    public var kernel: [UInt8]
    public var kernelPath: String
    public var initrd: [UInt8]?
    public var initrdPath: String?
    public var cmdline: String
    public var cpus: Int
    public var memorySize: UInt64
    public var bootProtocol: BootProtocol
    /// Virtio devices on the PCI bus (none: the machine has no PCI devices besides the host bridge).
    public var devices: DeviceOptions
    /// Where host-decompressed bzImage payloads are kept between boots; nil: no caching.
    public var payloadCache: (any BzImagePayloadCache)?
    /// Boot through this firmware instead of loading `kernel` (which is then empty).
    public var firmware: FirmwareImage?
    /// An open file for the firmware's debug log (port 0x402); the config's owner closes it.
    public var firmwareLogDescriptor: Int32?
    /// A UEFI firmware's variable store (`FirmwareVariableStore.open`), mapped below its code.
    public var firmwareVariables: FlashMemory?

    public static let minimumMemory: UInt64 = 16 << 20
    public static let maximumMemory: UInt64 = 1 << 40
    /// The MP table gives each vCPU an 8-bit APIC id and the IOAPIC takes the next one.
    public static let maximumCPUs = 254

    public init(kernel: [UInt8], kernelPath: String, initrd: [UInt8]? = nil, initrdPath: String? = nil,
                cmdline: String = "", cpus: Int = 1, memorySize: UInt64 = 512 << 20,
                bootProtocol: BootProtocol = .auto, devices: DeviceOptions = DeviceOptions()) throws(ConfigError) {
        guard (1...Self.maximumCPUs).contains(cpus) else { throw ConfigError.invalidCPUCount(cpus, maximum: Self.maximumCPUs) }
        guard memorySize >= Self.minimumMemory else { throw ConfigError.memoryTooSmall(memorySize, minimum: Self.minimumMemory) }
        guard memorySize <= Self.maximumMemory else { throw ConfigError.memoryTooLarge(memorySize) }
        self.kernel = kernel; self.kernelPath = kernelPath; self.initrd = initrd; self.initrdPath = initrdPath
        self.cmdline = cmdline; self.cpus = cpus
        // KVM slots and our page tables want whole pages.
        self.memorySize = (memorySize + 0xFFF) & ~0xFFF
        self.bootProtocol = bootProtocol
        guard devices.deviceCount <= DeviceOptions.maximumDevices else {
            throw ConfigError.tooManyDevices(devices.deviceCount, maximum: DeviceOptions.maximumDevices)
        }
        self.devices = devices
    }

    /// Parses "512M", "2G", "2GiB", "1048576" (bytes), "4096K" (VMContract.ByteSize, the one
    /// size parser). Fractions, zero, overflow and junk are refused.
    public static func parseSize(_ text: String) throws(ConfigError) -> UInt64 {
        guard case .success(let bytes) = ByteSize.parse(text), bytes > 0 else { throw ConfigError.invalidSize(text) }
        return bytes
    }
}

