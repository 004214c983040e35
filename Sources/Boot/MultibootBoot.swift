import GuestMemory

/// Multiboot v1 boot (spec section 3.2 machine state, 3.3 boot information): 32-bit protected
/// mode, paging off, EAX = 0x2BADB002, EBX = the info structure.
enum MultibootBoot {
    static let bootloaderMagic: UInt32 = 0x2BAD_B002
    enum InfoFlag {
        static let memory: UInt32 = 1 << 0, cmdline: UInt32 = 1 << 2, modules: UInt32 = 1 << 3
        static let memoryMap: UInt32 = 1 << 6, bootloaderName: UInt32 = 1 << 9
    }
    static let infoAddress = X86Layout.bootInfoAddress
    static let infoSize = 120
    static let mmapAddress = X86Layout.bootInfoAddress + 0x100
    static let modulesAddress = X86Layout.bootInfoAddress + 0x200
    static let bootloaderNameAddress = X86Layout.bootInfoAddress + 0x300
    static let maximumMmapEntries = 10

    static func boot(_ header: MultibootHeader, elf: ELFImage?, file: [UInt8], request: BootRequest,
                     writer: GuestWriter, notes: [String]) throws(BootError) -> BootPlan {
        var notes = notes
        try header.checkRequirements(in: file)
        let entry: UInt64, end: UInt64
        if header.hasAddressFields {
            (entry, end) = try header.loadKludge(file, into: writer)
            notes.append("Multiboot: a.out-kludge image at \(hex(UInt64(header.loadAddress)))-\(hex(end)), entry \(hex(entry))")
        } else if let elf {
            end = try elf.load(from: file, into: writer)
            entry = elf.entry
            notes.append("Multiboot: ELF with \(elf.segments.count) PT_LOAD segment(s) up to \(hex(end)), entry \(hex(entry))")
        } else {
            throw .badMultiboot("header at \(hex(UInt64(header.offset))) has no address fields and the image is not ELF")
        }
        guard end <= X86Layout.mmioHoleEnd else {
            throw .badMultiboot("image ends at \(hex(end)), above the 4 GiB a 32-bit kernel can reach")
        }
        if header.flags & MultibootHeader.videoMode != 0 {
            notes.append("Multiboot: video mode request ignored (no framebuffer)")
        }
        let lowEnd = X86Layout.lowMemoryEnd(of: writer.memory)

        // As QEMU does: the kernel's file name, then the user's command line.
        let cmdlineText = request.cmdline.isEmpty ? request.kernelName : request.kernelName + " " + request.cmdline
        let cmdline = try BootPlacement.cmdlineBytes(cmdlineText, maximum: Int(X86Layout.cmdlineAreaSize) - 1)
        var info = [UInt8](repeating: 0, count: infoSize)
        let flags = InfoFlag.memory | InfoFlag.cmdline | InfoFlag.modules | InfoFlag.memoryMap | InfoFlag.bootloaderName
        info.put(UInt32(X86Layout.ebdaStart / 1024), at: 4)                             // mem_lower, KiB
        info.put(UInt32(clamping: (lowEnd - X86Layout.highMemoryStart) / 1024), at: 8)  // mem_upper, KiB
        info.put(UInt32(X86Layout.cmdlineAddress), at: 16)

        var initrd: (start: GuestAddress, size: UInt64)?
        if let image = request.initrd, !image.isEmpty {
            let nameAddress = X86Layout.cmdlineAddress + UInt64(cmdline.count)
            let name = try BootPlacement.cmdlineBytes(request.initrdName, maximum: Int(X86Layout.cmdlineAreaSize) - 1 - cmdline.count)
            try writer.write(name, at: nameAddress, "Multiboot module string")
            // Modules go right after the kernel, page aligned (spec flag bit 0; always honoured).
            guard let start = alignUp(end, BootPlacement.pageSize),
                  case let (moduleEnd, overflow) = start.addingReportingOverflow(UInt64(image.count)),
                  !overflow, moduleEnd <= lowEnd else {
                throw .initrdTooLarge(size: UInt64(image.count), lowest: end, highest: lowEnd - 1)
            }
            try writer.write(image, at: start, "Multiboot module 0")
            var module = [UInt8](repeating: 0, count: 16)
            module.put(UInt32(start), at: 0)
            module.put(UInt32(start + UInt64(image.count)), at: 4)   // mod_end is exclusive, as GRUB and QEMU pass it
            module.put(UInt32(nameAddress), at: 8)
            try writer.write(module, at: modulesAddress, "Multiboot module list")
            info.put(UInt32(1), at: 20)
            initrd = (GuestAddress(start), UInt64(image.count))
            notes.append("Multiboot module 0 \"\(request.initrdName)\": \(image.count) bytes at \(hex(start))")
        }
        info.put(UInt32(modulesAddress), at: 24)
        try writer.write(cmdline, at: X86Layout.cmdlineAddress, "Multiboot command line")

        let map = X86Layout.e820Map(of: writer.memory).prefix(maximumMmapEntries)
        var mmap = [UInt8](repeating: 0, count: map.count * 24)
        for (index, entry) in map.enumerated() {
            mmap.put(UInt32(20), at: index * 24)               // size of the rest of this entry
            mmap.put(entry.address, at: index * 24 + 4)
            mmap.put(entry.size, at: index * 24 + 12)
            mmap.put(entry.type, at: index * 24 + 20)
        }
        try writer.write(mmap, at: mmapAddress, "Multiboot memory map")
        info.put(UInt32(mmap.count), at: 44)
        info.put(UInt32(mmapAddress), at: 48)
        try writer.write(Array("vireo".utf8) + [0], at: bootloaderNameAddress, "boot loader name")
        info.put(UInt32(bootloaderNameAddress), at: 64)
        if request.rngSeed.count > 0 { notes.append("RNG seed not passed: Multiboot has no field for it") }
        info.put(flags, at: 0)
        try writer.write(info, at: infoAddress, "Multiboot info")
        try writer.writeCPUTables(pageTables: false)
        return BootPlan(entry: .protectedMode(entry: entry, eax: UInt64(bootloaderMagic), ebx: infoAddress),
                        format: .multiboot, notes: notes, kernelEnd: GuestAddress(end), initrd: initrd)
    }
}
