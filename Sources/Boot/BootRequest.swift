import GuestMemory

/// Which entry protocol to use for a kernel that supports more than one.
public enum BootProtocol: String, Sendable, CaseIterable {
    /// bzImage and ELF64 vmlinux: 64-bit Linux entry; ELF with only a PVH note: PVH; Multiboot: Multiboot.
    case auto
    /// Linux 64-bit boot protocol (boot_params in %rsi).
    case linux64
    /// Xen PVH 32-bit entry (hvm_start_info in %ebx); needs XEN_ELFNOTE_PHYS32_ENTRY.
    case pvh
}

/// Everything the loader needs from the caller; the loader reads no files itself.
public struct BootRequest: Sendable {
    /// The kernel file's bytes.
    public var kernel: [UInt8]
    /// The kernel path as the user gave it (the Multiboot command line starts with it, as in QEMU).
    public var kernelName: String
    public var initrd: [UInt8]?
    /// The initrd path as the user gave it (the Multiboot module 0 string).
    public var initrdName: String
    public var cmdline: String
    public var vcpuCount: Int
    /// Seed for the guest's crng (caller reads it from getrandom); empty means none.
    public var rngSeed: [UInt8]
    public var bootProtocol: BootProtocol
    /// Decompress a bzImage's payload on the host (the default). Off: the guest decompresses it, as
    /// with other VMMs; useful to measure the difference.
    public var hostDecompression: Bool
    /// Keeps host-decompressed payloads between boots; nil: decompress at every boot.
    public var payloadCache: (any BzImagePayloadCache)?
    /// Flags appended to `cmdline` only when the kernel is booted through a Linux protocol
    /// (bzImage, vmlinux, PVH) — e.g. a host profile's workarounds, meaningless to Multiboot kernels.
    public var linuxCmdlineExtras: [String]
    /// The machine to describe in ACPI tables (RSDP at `X86Layout.acpiRSDPAddress`, passed in
    /// boot_params.acpi_rsdp_addr and hvm_start_info.rsdp_paddr). nil: MP table only, no ACPI.
    public var acpi: ACPIPlatform?

    /// The command line a Linux-protocol kernel gets.
    public var linuxCmdline: String { ([cmdline] + linuxCmdlineExtras).filter { !$0.isEmpty }.joined(separator: " ") }

    public init(kernel: [UInt8], kernelName: String, initrd: [UInt8]? = nil, initrdName: String = "initrd",
                cmdline: String = "", vcpuCount: Int = 1, rngSeed: [UInt8] = [], bootProtocol: BootProtocol = .auto,
                hostDecompression: Bool = true, payloadCache: (any BzImagePayloadCache)? = nil,
                linuxCmdlineExtras: [String] = [], acpi: ACPIPlatform? = nil) {
        self.kernel = kernel
        self.kernelName = kernelName
        self.initrd = initrd
        self.initrdName = initrdName
        self.cmdline = cmdline
        self.vcpuCount = vcpuCount
        self.rngSeed = rngSeed
        self.bootProtocol = bootProtocol
        self.hostDecompression = hostDecompression
        self.payloadCache = payloadCache
        self.linuxCmdlineExtras = linuxCmdlineExtras
        self.acpi = acpi
    }
}

/// Payload compressors a bzImage may use (the kernel's CONFIG_KERNEL_* choices).
public enum Compression: String, Sendable {
    case gzip, xz, lzma, lz4, zstd, bzip2, lzo, none
}

/// What was booted and how.
public enum KernelFormat: Equatable, Sendable, CustomStringConvertible {
    /// ELF64 vmlinux entered at its 64-bit entry with boot_params.
    case elfLinux64
    /// ELF (32 or 64-bit) entered through its Xen PVH note.
    case elfPVH
    /// bzImage whose payload Vireo decompressed on the host; the ELF inside was loaded directly.
    case bzImageDecompressed(Compression)
    /// bzImage loaded as is and entered at its own 64-bit entry (it decompresses itself in the guest).
    case bzImageNative
    /// Multiboot v1 kernel, 32-bit protected-mode entry.
    case multiboot

    public var description: String {
        switch self {
        case .elfLinux64: return "ELF vmlinux (64-bit Linux entry)"
        case .elfPVH: return "ELF with Xen PVH entry"
        case .bzImageDecompressed(let compression): return "bzImage (\(compression.rawValue) payload decompressed on host)"
        case .bzImageNative: return "bzImage (self-decompressing, 64-bit entry)"
        case .multiboot: return "Multiboot v1"
        }
    }
}

/// The result of loading: guest memory is populated; the VMM sets the BSP registers from `entry`.
public struct BootPlan: Sendable {
    public var entry: X86EntryState
    public var format: KernelFormat
    /// Human-readable lines for --verbose (which path was taken, sizes, timings, fallbacks).
    public var notes: [String]
    /// First guest-physical byte after the loaded kernel image (including its bss).
    public var kernelEnd: GuestAddress
    public var initrd: (start: GuestAddress, size: UInt64)?

    public init(entry: X86EntryState, format: KernelFormat, notes: [String], kernelEnd: GuestAddress,
                initrd: (start: GuestAddress, size: UInt64)?) {
        self.entry = entry
        self.format = format
        self.notes = notes
        self.kernelEnd = kernelEnd
        self.initrd = initrd
    }
}
