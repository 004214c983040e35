import GuestMemory

/// Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol"):
/// boot_params in %rsi, flat __BOOT_CS/__BOOT_DS, identity-mapped page tables.
enum LinuxBoot {
    static let maximumRNGSeed = 1024

    struct Loaded {
        var entry: UInt64
        /// End of the loaded image (bss included).
        var kernelEnd: UInt64
        /// End of what the kernel uses before it reads its memory map (init_size); the initrd goes above.
        var reservedEnd: UInt64
    }

    /// Loads an ELF vmlinux (no setup header; the zero page fields are synthesised).
    static func bootELF(_ elf: ELFImage, file: [UInt8], request: BootRequest, writer: GuestWriter,
                        notes: inout [String]) throws(BootError) -> BootPlan {
        let end = try elf.load(from: file, into: writer)
        notes.append("ELF vmlinux: \(elf.segments.count) PT_LOAD segment(s) up to \(hex(end)), entry \(hex(elf.entry))")
        return try finish(ZeroPage(), loaded: Loaded(entry: elf.entry, kernelEnd: end, reservedEnd: end),
                          initrdAddrMax: ZeroPage.vmlinuxInitrdAddrMax, cmdlineSize: ZeroPage.vmlinuxCmdlineSize,
                          format: .elfLinux64, request: request, writer: writer, notes: notes)
    }

    /// Loads a bzImage: the payload decompressed on the host when possible, else the image itself.
    static func bootBzImage(_ file: [UInt8], request: BootRequest, writer: GuestWriter,
                            notes: inout [String]) throws(BootError) -> BootPlan {
        let header = try SetupHeader(parsing: file)
        notes.append("bzImage: boot protocol \(SetupHeader.versionString(header.version)), setup \(header.setupSize) bytes, init_size \(mib(header.initSize))")
        let lowEnd = X86Layout.lowMemoryEnd(of: writer.memory)
        guard request.hostDecompression else {
            notes.append("host decompression disabled; the guest decompresses the payload itself")
            return try bootNative(file, header: header, request: request, writer: writer, notes: notes)
        }
        switch BzImagePayload.extract(file, header: header, cache: request.payloadCache, notes: &notes) {
        case .success(let payload):
            let elf = payload.elf
            let base = elf.segments.map(\.physicalAddress).min() ?? X86Layout.linuxDefaultLoadAddress
            try requireInitSize(header, base: base, lowEnd: lowEnd)
            let end = try elf.load(from: payload.bytes, into: writer)
            notes.append("loaded the ELF inside at \(hex(base))-\(hex(end)), entry \(hex(elf.entry)) (no in-guest decompression, no KASLR)")
            let loaded = Loaded(entry: elf.entry, kernelEnd: end, reservedEnd: max(end, base + header.initSize))
            return try finish(ZeroPage(header: header), loaded: loaded, initrdAddrMax: header.initrdAddrMax,
                              cmdlineSize: header.cmdlineSize, format: .bzImageDecompressed(payload.compression),
                              request: request, writer: writer, notes: notes)
        case .failure(let why):
            notes.append("payload not decompressed on host (\(why)); falling back to the bzImage's 64-bit entry")
            return try bootNative(file, header: header, request: request, writer: writer, notes: notes)
        }
    }

    /// The kernel decompresses itself in the guest; entered at its 64-bit entry, code32_start + 0x200.
    private static func bootNative(_ file: [UInt8], header: SetupHeader, request: BootRequest,
                                   writer: GuestWriter, notes: [String]) throws(BootError) -> BootPlan {
        guard header.version >= 0x020C, header.xloadflags & SetupHeader.xlfKernel64 != 0 else {
            throw .badBzImage("the payload cannot be decompressed on the host and the kernel has no 64-bit entry (needs protocol 2.12+ with XLF_KERNEL_64; it has \(SetupHeader.versionString(header.version)), xloadflags \(hex(UInt64(header.xloadflags))))")
        }
        let code = Array(file[header.setupSize...])
        let load = X86Layout.bzImageLoadAddress
        try ELFImage.checkPlacement(address: load, size: UInt64(code.count), in: writer)
        let runtimeBase = max(header.prefAddress, X86Layout.highMemoryStart)
        try requireInitSize(header, base: runtimeBase, lowEnd: X86Layout.lowMemoryEnd(of: writer.memory))
        try writer.write(code, at: load, "bzImage protected-mode code")
        var zeroPage = ZeroPage(header: header)
        zeroPage.setCode32Start(load)
        let end = load + UInt64(code.count)
        let loaded = Loaded(entry: load + 0x200, kernelEnd: end,
                            reservedEnd: max(end, runtimeBase + header.initSize))   // bounded by requireInitSize
        var notes = notes
        notes.append("loaded \(mib(UInt64(code.count))) of protected-mode code at \(hex(load)); the guest decompresses it")
        return try finish(zeroPage, loaded: loaded, initrdAddrMax: header.initrdAddrMax, cmdlineSize: header.cmdlineSize,
                          format: .bzImageNative, request: request, writer: writer, notes: notes)
    }

    private static func requireInitSize(_ header: SetupHeader, base: UInt64, lowEnd: UInt64) throws(BootError) {
        let (needed, overflow) = base.addingReportingOverflow(header.initSize)
        guard !overflow, needed <= lowEnd else {
            throw .memoryTooSmall(needed: overflow ? UInt64.max : needed, available: lowEnd,
                                  what: "the kernel (loaded at \(hex(base)), init_size \(mib(header.initSize)))")
        }
    }

    /// Command line, initrd, RNG seed, e820 and CPU tables: common to every 64-bit Linux entry.
    private static func finish(_ zeroPage: ZeroPage, loaded: Loaded, initrdAddrMax: UInt64, cmdlineSize: Int,
                               format: KernelFormat, request: BootRequest, writer: GuestWriter,
                               notes: [String]) throws(BootError) -> BootPlan {
        var zeroPage = zeroPage
        var notes = notes
        let cmdline = try BootPlacement.cmdlineBytes(request.cmdline, maximum: cmdlineSize)
        try writer.write(cmdline, at: X86Layout.cmdlineAddress, "command line")
        zeroPage.setCmdline(address: X86Layout.cmdlineAddress)

        var initrd: (start: GuestAddress, size: UInt64)?
        if let image = request.initrd, !image.isEmpty {
            let highest = min(initrdAddrMax, X86Layout.lowMemoryEnd(of: writer.memory) - 1)
            let start = try BootPlacement.initrdHigh(size: UInt64(image.count), lowest: loaded.reservedEnd, highest: highest)
            try writer.write(image, at: start, "initrd")
            zeroPage.setRamdisk(address: start, size: UInt64(image.count))
            initrd = (GuestAddress(start), UInt64(image.count))
            notes.append("initrd: \(image.count) bytes at \(hex(start)) (initrd_addr_max \(hex(initrdAddrMax)))")
        }

        if !request.rngSeed.isEmpty {
            try writer.write(ZeroPage.rngSeedNode(request.rngSeed), at: X86Layout.setupDataAddress, "setup_data RNG seed")
            zeroPage.setSetupData(address: X86Layout.setupDataAddress)
            notes.append("RNG seed: \(request.rngSeed.count) bytes as setup_data SETUP_RNG_SEED")
        }
        zeroPage.setE820(X86Layout.e820Map(of: writer.memory, acpi: request.acpi))
        if request.acpi != nil { zeroPage.setACPIRSDP(address: X86Layout.acpiRSDPAddress) }
        try writer.write(zeroPage.bytes, at: X86Layout.zeroPageAddress, "boot_params")
        try writer.writeCPUTables(pageTables: true)
        return BootPlan(entry: .longMode(entry: loaded.entry, zeroPage: X86Layout.zeroPageAddress), format: format,
                        notes: notes, kernelEnd: GuestAddress(loaded.kernelEnd), initrd: initrd)
    }
}
