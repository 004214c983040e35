/// Builds Linux's `struct boot_params` (the "zero page"), field offsets as in
/// arch/x86/include/uapi/asm/bootparam.h.
struct ZeroPage {
    enum Offset {
        static let acpiRSDPAddress = 0x070
        static let extRamdiskImage = 0x0C0, extRamdiskSize = 0x0C4, extCmdLinePtr = 0x0C8
        static let e820Entries = 0x1E8, e820Table = 0x2D0
    }
    static let size = 4096
    static let maximumE820Entries = 128
    /// boot.rst: the 64-bit kernel's own header says 0x7FFFFFFF; used when the ELF carries no header.
    static let vmlinuxInitrdAddrMax: UInt64 = 0x7FFF_FFFF
    /// COMMAND_LINE_SIZE on x86 is 2048 including the NUL.
    static let vmlinuxCmdlineSize = 2047
    static let setupRNGSeed: UInt32 = 9
    static let heapEnd: UInt16 = 0xFE00

    var bytes = [UInt8](repeating: 0, count: size)

    /// A zero page carrying the bzImage's own setup header (protocol fields the kernel reads back).
    init(header: SetupHeader) {
        bytes.put(bytes: header.bytes, at: SetupHeader.Offset.setupSects)
        setLoaderFields()
    }

    /// A zero page for an ELF vmlinux, which has no setup header: synthesise the fields a loader
    /// would have found, as Firecracker and Cloud Hypervisor do.
    init() {
        bytes.put(UInt16(0xAA55), at: SetupHeader.Offset.bootFlag)
        bytes.put(SetupHeader.magic, at: SetupHeader.Offset.magic)
        bytes.put(UInt16(0x020F), at: SetupHeader.Offset.version)
        bytes.put(UInt32(X86Layout.linuxDefaultLoadAddress), at: SetupHeader.Offset.kernelAlignment)
        bytes.put(UInt32(ZeroPage.vmlinuxInitrdAddrMax), at: SetupHeader.Offset.initrdAddrMax)
        bytes.put(UInt32(ZeroPage.vmlinuxCmdlineSize), at: SetupHeader.Offset.cmdlineSize)
        bytes[SetupHeader.Offset.loadflags] = SetupHeader.loadedHigh
        bytes.put(UInt16(0xFFFF), at: 0x1FA)   // vid_mode: "normal", no mode switch requested
        setLoaderFields()
    }

    private mutating func setLoaderFields() {
        bytes[SetupHeader.Offset.typeOfLoader] = 0xFF   // "undefined" loader id
        bytes[SetupHeader.Offset.loadflags] |= SetupHeader.loadedHigh | SetupHeader.canUseHeap
        bytes.put(ZeroPage.heapEnd, at: SetupHeader.Offset.heapEndPtr)
        bytes.put(UInt64(0), at: SetupHeader.Offset.setupData)   // the file's value is not a guest address
    }

    mutating func setCmdline(address: UInt64) {
        bytes.put(UInt32(truncatingIfNeeded: address), at: SetupHeader.Offset.cmdLinePtr)
        bytes.put(UInt32(truncatingIfNeeded: address >> 32), at: Offset.extCmdLinePtr)
    }

    mutating func setRamdisk(address: UInt64, size: UInt64) {
        bytes.put(UInt32(truncatingIfNeeded: address), at: SetupHeader.Offset.ramdiskImage)
        bytes.put(UInt32(truncatingIfNeeded: size), at: SetupHeader.Offset.ramdiskSize)
        bytes.put(UInt32(truncatingIfNeeded: address >> 32), at: Offset.extRamdiskImage)
        bytes.put(UInt32(truncatingIfNeeded: size >> 32), at: Offset.extRamdiskSize)
    }

    mutating func setCode32Start(_ address: UInt64) {
        bytes.put(UInt32(truncatingIfNeeded: address), at: SetupHeader.Offset.code32Start)
    }

    /// boot_params.acpi_rsdp_addr: Linux uses it instead of scanning for the RSDP.
    mutating func setACPIRSDP(address: UInt64) {
        bytes.put(address, at: Offset.acpiRSDPAddress)
    }

    mutating func setSetupData(address: UInt64) {
        bytes.put(address, at: SetupHeader.Offset.setupData)
    }

    /// Writes the memory map; the caller's map has at most a handful of entries (one per RAM range
    /// plus the reserved low area), far below the 128 the table holds.
    mutating func setE820(_ map: [E820Entry]) {
        let entries = map.prefix(ZeroPage.maximumE820Entries)
        bytes[Offset.e820Entries] = UInt8(entries.count)
        for (index, entry) in entries.enumerated() {
            let offset = Offset.e820Table + index * 20
            bytes.put(entry.address, at: offset)
            bytes.put(entry.size, at: offset + 8)
            bytes.put(entry.type, at: offset + 16)
        }
    }

    /// `struct setup_data` of type SETUP_RNG_SEED: next, type, len, then the seed.
    static func rngSeedNode(_ seed: [UInt8]) -> [UInt8] {
        var node = [UInt8](repeating: 0, count: 16)
        node.put(setupRNGSeed, at: 8)
        node.put(UInt32(seed.count), at: 12)
        return node + seed
    }
}
