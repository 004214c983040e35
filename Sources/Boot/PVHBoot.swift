import GuestMemory

/// Xen PVH direct boot (xen/include/public/arch-x86/hvm/start_info.h, version 1): 32-bit protected
/// mode, paging off, %ebx = hvm_start_info. Linux with CONFIG_PVH, and other PVH kernels, enter here.
enum PVHBoot {
    static let startInfoMagic: UInt32 = 0x336E_C578
    static let startInfoSize = 56
    static let moduleEntrySize = 32
    static let memmapEntrySize = 24
    static let startInfoAddress = X86Layout.bootInfoAddress
    static let modlistAddress = X86Layout.bootInfoAddress + 0x100
    static let memmapAddress = X86Layout.bootInfoAddress + 0x200
    /// The boot info page holds at most this many memmap entries after the start info and modlist.
    static let maximumMemmapEntries = Int((0x1000 - 0x200) / 24)

    static func boot(_ elf: ELFImage, entry: UInt64, file: [UInt8], request: BootRequest, writer: GuestWriter,
                     notes: [String]) throws(BootError) -> BootPlan {
        var notes = notes
        guard entry < X86Layout.mmioHoleEnd else {
            throw .badELF("PVH entry \(hex(entry)) is above 4 GiB, unreachable from 32-bit mode")
        }
        let end = try elf.load(from: file, into: writer)
        notes.append("PVH: \(elf.segments.count) PT_LOAD segment(s) up to \(hex(end)), 32-bit entry \(hex(entry))")
        if !request.rngSeed.isEmpty {
            notes.append("RNG seed not passed: hvm_start_info has no field for it (use --boot linux64 or virtio-rng)")
        }
        let cmdline = try BootPlacement.cmdlineBytes(request.cmdline, maximum: Int(X86Layout.cmdlineAreaSize) - 1)
        try writer.write(cmdline, at: X86Layout.cmdlineAddress, "command line")

        var startInfo = [UInt8](repeating: 0, count: startInfoSize)
        startInfo.put(startInfoMagic, at: 0x00)
        startInfo.put(UInt32(1), at: 0x04)                      // version 1: has the memmap fields
        startInfo.put(X86Layout.cmdlineAddress, at: 0x18)
        if request.acpi != nil { startInfo.put(X86Layout.acpiRSDPAddress, at: 0x20) }   // rsdp_paddr

        var initrd: (start: GuestAddress, size: UInt64)?
        if let image = request.initrd, !image.isEmpty {
            let highest = min(ZeroPage.vmlinuxInitrdAddrMax, X86Layout.lowMemoryEnd(of: writer.memory) - 1)
            let start = try BootPlacement.initrdHigh(size: UInt64(image.count), lowest: end, highest: highest)
            try writer.write(image, at: start, "initrd")
            var module = [UInt8](repeating: 0, count: moduleEntrySize)
            module.put(start, at: 0)
            module.put(UInt64(image.count), at: 8)
            try writer.write(module, at: modlistAddress, "PVH module list")
            startInfo.put(UInt32(1), at: 0x0C)
            startInfo.put(modlistAddress, at: 0x10)
            initrd = (GuestAddress(start), UInt64(image.count))
            notes.append("initrd: \(image.count) bytes at \(hex(start)) as PVH module 0")
        }

        let map = X86Layout.e820Map(of: writer.memory, acpi: request.acpi).prefix(maximumMemmapEntries)
        var memmap = [UInt8](repeating: 0, count: map.count * memmapEntrySize)
        for (index, entry) in map.enumerated() {
            memmap.put(entry.address, at: index * memmapEntrySize)
            memmap.put(entry.size, at: index * memmapEntrySize + 8)
            memmap.put(entry.type, at: index * memmapEntrySize + 16)   // e820 and Xen memmap types agree
        }
        try writer.write(memmap, at: memmapAddress, "PVH memory map")
        startInfo.put(memmapAddress, at: 0x28)
        startInfo.put(UInt32(map.count), at: 0x30)
        try writer.write(startInfo, at: startInfoAddress, "hvm_start_info")
        try writer.writeCPUTables(pageTables: false)
        return BootPlan(entry: .protectedMode(entry: entry, eax: 0, ebx: startInfoAddress), format: .elfPVH,
                        notes: notes, kernelEnd: GuestAddress(end), initrd: initrd)
    }
}
