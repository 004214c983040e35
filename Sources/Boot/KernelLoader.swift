import GuestMemory

/// Places a kernel (and initrd, command line, boot tables) in guest memory and returns the boot
/// vCPU's entry state. Pure function of the request and the memory layout: no files, no KVM.
public enum KernelLoader {
    /// Below this much RAM at address 0 there is no room for the loader's tables and a kernel at 1 MiB.
    public static let minimumLowMemory: UInt64 = 2 << 20

    public static func load(_ request: BootRequest, into memory: GuestMemory) throws(BootError) -> BootPlan {
        guard (1...MPTable.maximumVCPUs).contains(request.vcpuCount) else {
            throw .invalidVCPUCount(request.vcpuCount, maximum: MPTable.maximumVCPUs)
        }
        guard request.rngSeed.count <= LinuxBoot.maximumRNGSeed else {
            throw .rngSeedTooLong(length: request.rngSeed.count, maximum: LinuxBoot.maximumRNGSeed)
        }
        let lowEnd = X86Layout.lowMemoryEnd(of: memory)
        guard lowEnd >= minimumLowMemory else {
            throw .memoryTooSmall(needed: minimumLowMemory, available: lowEnd, what: "the boot tables and a kernel at 1 MiB")
        }
        // Built before anything is loaded so a bad platform description fails without side effects.
        var acpiTables: ACPITables?
        if let platform = request.acpi {
            guard platform.vcpuCount == request.vcpuCount else {
                throw .acpi("the ACPI platform describes \(platform.vcpuCount) vCPU(s) but the machine has \(request.vcpuCount)")
            }
            try platform.validate(against: memory)
            acpiTables = try ACPITables.build(platform)
        }
        let writer = GuestWriter(memory: memory)
        let file = request.kernel
        var notes: [String] = []
        let plan: BootPlan
        var linuxRequest = request
        linuxRequest.cmdline = request.linuxCmdline
        if SetupHeader.isBzImage(file) {
            plan = try bootBzImage(file, request: linuxRequest, writer: writer, notes: &notes)
        } else if let multiboot = MultibootHeader.find(in: file), request.bootProtocol == .auto,
                  multiboot.hasAddressFields || ELFImage.isELF(file) {
            // Multiboot first, as QEMU and GRUB do: its header is an explicit request for this protocol.
            let elf = multiboot.hasAddressFields ? nil : try ELFImage(parsing: file)
            plan = try MultibootBoot.boot(multiboot, elf: elf, file: file, request: request, writer: writer, notes: notes)
        } else if ELFImage.isELF(file) {
            plan = try bootELF(try ELFImage(parsing: file), file: file, request: linuxRequest, writer: writer, notes: notes)
        } else {
            throw .unrecognisedKernel(firstBytes: Array(file.prefix(16)))
        }
        try MPTable.write(vcpuCount: request.vcpuCount, with: writer)
        var result = plan
        result.notes.append("MP table: \(request.vcpuCount) CPU(s), I/O APIC id \(request.vcpuCount) at \(hex(X86Layout.mpTableAddress))")
        if let acpiTables {
            try acpiTables.write(with: writer)
            result.notes.append("ACPI: RSDP at \(hex(acpiTables.rsdpAddress)), \(acpiTables.bytes.count) bytes of tables (XSDT, FADT, MADT, MCFG, DSDT)")
        }
        return result
    }

    /// `auto` boots an ELF64 x86-64 kernel through the Linux 64-bit protocol even when it also has a
    /// PVH note: boot_params carries the RNG seed (setup_data), which hvm_start_info cannot. PVH is
    /// used for kernels that only have the note (e.g. ELF32), or when asked for.
    private static func bootELF(_ elf: ELFImage, file: [UInt8], request: BootRequest, writer: GuestWriter,
                                notes: [String]) throws(BootError) -> BootPlan {
        var notes = notes
        let linuxCapable = elf.is64Bit && elf.machine == ELFImage.machineX86_64
        switch request.bootProtocol {
        case .pvh:
            guard let entry = elf.pvhEntry else {
                throw .unsupportedProtocol("PVH requested but the ELF has no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY)")
            }
            return try PVHBoot.boot(elf, entry: entry, file: file, request: request, writer: writer, notes: notes)
        case .linux64:
            guard linuxCapable else {
                throw .unsupportedProtocol("64-bit Linux entry requested but the ELF is not 64-bit x86-64")
            }
            return try LinuxBoot.bootELF(elf, file: file, request: request, writer: writer, notes: &notes)
        case .auto:
            if linuxCapable {
                return try LinuxBoot.bootELF(elf, file: file, request: request, writer: writer, notes: &notes)
            }
            if let entry = elf.pvhEntry {
                return try PVHBoot.boot(elf, entry: entry, file: file, request: request, writer: writer, notes: notes)
            }
            throw .badELF("32-bit ELF with neither a Xen PVH note nor a Multiboot header: no entry protocol applies")
        }
    }

    private static func bootBzImage(_ file: [UInt8], request: BootRequest, writer: GuestWriter,
                                    notes: inout [String]) throws(BootError) -> BootPlan {
        guard request.bootProtocol == .pvh else {
            return try LinuxBoot.bootBzImage(file, request: request, writer: writer, notes: &notes)
        }
        // PVH from a bzImage: only through the vmlinux inside, which carries the note.
        let header = try SetupHeader(parsing: file)
        notes.append("bzImage: boot protocol \(SetupHeader.versionString(header.version)); PVH requested, using the vmlinux inside")
        switch BzImagePayload.extract(file, header: header, cache: request.payloadCache, notes: &notes) {
        case .success(let payload):
            guard let entry = payload.elf.pvhEntry else {
                throw .unsupportedProtocol("PVH requested but the vmlinux inside the bzImage has no Xen PVH note")
            }
            return try PVHBoot.boot(payload.elf, entry: entry, file: payload.bytes, request: request, writer: writer,
                                    notes: notes)
        case .failure(let why):
            throw .unsupportedProtocol("PVH requested but the bzImage payload cannot be unpacked on the host: \(why)")
        }
    }
}
