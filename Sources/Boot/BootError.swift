import GuestMemory

/// Why a kernel could not be loaded. Each case prints as one line naming the problem.
public enum BootError: Error, Equatable, CustomStringConvertible {
    /// Not a bzImage, ELF or Multiboot kernel; carries the file's first bytes.
    case unrecognisedKernel(firstBytes: [UInt8])
    /// A kernel segment lies (partly) outside guest RAM or over the loader's own area.
    case kernelDoesNotFit(address: UInt64, size: UInt64, reason: String)
    /// Guest RAM is smaller than the kernel says it needs (init_size, or the loader's minimum).
    case memoryTooSmall(needed: UInt64, available: UInt64, what: String)
    /// No page-aligned place for the initrd between the kernel and the highest allowed address.
    case initrdTooLarge(size: UInt64, lowest: UInt64, highest: UInt64)
    case cmdlineTooLong(length: Int, maximum: Int)
    case badELF(String)
    case badBzImage(String)
    case badMultiboot(String)
    case decompressionFailed(Compression, String)
    /// The requested boot protocol does not apply to this kernel.
    case unsupportedProtocol(String)
    case invalidVCPUCount(Int, maximum: Int)
    case rngSeedTooLong(length: Int, maximum: Int)
    /// A guest memory write the loader had already range-checked failed anyway (layout bug).
    case memoryAccess(String)
    /// The ACPI platform description cannot be expressed in tables (windows overlap, sizes wrap, ...).
    case acpi(String)

    public var description: String {
        switch self {
        case .unrecognisedKernel(let bytes):
            let hex = bytes.prefix(16).map { byte in
                let digits = String(byte, radix: 16)
                return digits.count == 1 ? "0" + digits : digits
            }.joined(separator: " ")
            return "unrecognised kernel format (first bytes: \(hex.isEmpty ? "none, file is empty" : hex)); "
                + "expected a bzImage, an ELF vmlinux, an ELF with a Xen PVH note, or a Multiboot v1 kernel"
        case let .kernelDoesNotFit(address, size, reason):
            return "kernel does not fit in memory: \(size) bytes at \(hex(address)) \(reason)"
        case let .memoryTooSmall(needed, available, what):
            return "guest memory too small: \(what) needs \(mib(needed)) but only \(mib(available)) is usable"
        case let .initrdTooLarge(size, lowest, highest):
            return "initrd too large for memory: \(size) bytes do not fit between \(hex(lowest)) and \(hex(highest))"
        case let .cmdlineTooLong(length, maximum):
            return "kernel command line too long: \(length) bytes, the kernel accepts at most \(maximum)"
        case .badELF(let why): return "bad ELF kernel: \(why)"
        case .badBzImage(let why): return "bad bzImage: \(why)"
        case .badMultiboot(let why): return "bad Multiboot kernel: \(why)"
        case let .decompressionFailed(compression, why):
            return "\(compression.rawValue) decompression of the bzImage payload failed: \(why)"
        case .unsupportedProtocol(let why): return "boot protocol not applicable: \(why)"
        case let .invalidVCPUCount(count, maximum):
            return "invalid vCPU count \(count): the MP table supports 1 to \(maximum)"
        case let .rngSeedTooLong(length, maximum):
            return "RNG seed of \(length) bytes is longer than the \(maximum) bytes the loader passes"
        case .memoryAccess(let why): return "guest memory write failed: \(why)"
        case .acpi(let why): return "cannot build ACPI tables: \(why)"
        }
    }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

/// Sizes for messages: "512 MiB" when whole, otherwise one decimal.
func mib(_ bytes: UInt64) -> String {
    let tenths = bytes / (1 << 20) * 10 + (bytes % (1 << 20)) * 10 / (1 << 20)
    return tenths % 10 == 0 ? "\(tenths / 10) MiB" : "\(tenths / 10).\(tenths % 10) MiB"
}
