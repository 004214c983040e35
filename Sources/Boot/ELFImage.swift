/// A parsed ELF executable: just what a boot loader needs (PT_LOAD segments, entry, PVH note).
/// Every header field is validated against the file before use; the file is hostile input.
struct ELFImage {
    struct Segment {
        var fileOffset: UInt64
        var fileSize: UInt64
        var physicalAddress: UInt64
        var virtualAddress: UInt64
        var memorySize: UInt64
    }

    static let machineI386: UInt16 = 3
    static let machineX86_64: UInt16 = 62
    /// XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit physical PVH entry point, in a note named "Xen".
    static let xenPhys32EntryNote: UInt32 = 18
    /// Far more than any kernel has (vmlinux: ~5); bounds the work a hostile header can cause.
    static let maximumProgramHeaders = 64

    var is64Bit: Bool
    var machine: UInt16
    /// e_entry translated to a physical address when it falls in a segment's virtual range (as
    /// GRUB does for higher-half kernels); vmlinux's e_entry is already physical.
    var entry: UInt64
    var segments: [Segment]
    var pvhEntry: UInt64?

    static func isELF(_ bytes: [UInt8]) -> Bool { bytes.starts(with: [0x7F, 0x45, 0x4C, 0x46]) }

    init(parsing bytes: [UInt8]) throws(BootError) {
        guard bytes.count >= 52, ELFImage.isELF(bytes) else {
            throw .badELF("file of \(bytes.count) bytes is too short for an ELF header")
        }
        switch bytes[4] {
        case 1: is64Bit = false
        case 2: is64Bit = true
        default: throw .badELF("EI_CLASS is \(bytes[4]), expected 1 (32-bit) or 2 (64-bit)")
        }
        guard bytes[5] == 1 else { throw .badELF("EI_DATA is \(bytes[5]), expected 1 (little-endian)") }
        guard !is64Bit || bytes.count >= 64 else { throw .badELF("file too short for an ELF64 header") }
        let type = bytes.le(UInt16.self, at: 16) ?? 0
        guard type == 2 || type == 3 else { throw .badELF("e_type is \(type), expected 2 (EXEC) or 3 (DYN)") }
        machine = bytes.le(UInt16.self, at: 18) ?? 0
        guard machine == ELFImage.machineX86_64 || machine == ELFImage.machineI386 else {
            throw .badELF("e_machine is \(machine), expected 62 (x86-64) or 3 (i386)")
        }
        let rawEntry: UInt64, phoff: UInt64, phentsize: Int, phnum: Int
        if is64Bit {
            rawEntry = bytes.le(UInt64.self, at: 24) ?? 0
            phoff = bytes.le(UInt64.self, at: 32) ?? 0
            phentsize = Int(bytes.le(UInt16.self, at: 54) ?? 0)
            phnum = Int(bytes.le(UInt16.self, at: 56) ?? 0)
        } else {
            rawEntry = UInt64(bytes.le(UInt32.self, at: 24) ?? 0)
            phoff = UInt64(bytes.le(UInt32.self, at: 28) ?? 0)
            phentsize = Int(bytes.le(UInt16.self, at: 42) ?? 0)
            phnum = Int(bytes.le(UInt16.self, at: 44) ?? 0)
        }
        let minimumEntrySize = is64Bit ? 56 : 32
        guard phentsize >= minimumEntrySize else {
            throw .badELF("e_phentsize is \(phentsize), expected at least \(minimumEntrySize)")
        }
        guard phnum > 0, phnum <= ELFImage.maximumProgramHeaders else {
            throw .badELF("e_phnum is \(phnum), expected 1 to \(ELFImage.maximumProgramHeaders)")
        }
        guard let table = bytes.checkedRange(offset: phoff, length: UInt64(phentsize * phnum)) else {
            throw .badELF("program header table (e_phoff \(hex(phoff)), \(phnum) entries) runs past the end of the \(bytes.count)-byte file")
        }
        segments = []
        pvhEntry = nil
        for index in 0..<phnum {
            let header = table.lowerBound + index * phentsize
            let segment = ELFImage.segment(bytes, at: header, is64Bit: is64Bit)
            let kind = bytes.le(UInt32.self, at: header) ?? 0
            guard kind == 1 || kind == 4 else { continue }   // PT_LOAD, PT_NOTE
            guard bytes.checkedRange(offset: segment.fileOffset, length: segment.fileSize) != nil else {
                throw .badELF("program header \(index): p_offset \(hex(segment.fileOffset)) + p_filesz \(segment.fileSize) runs past the end of the \(bytes.count)-byte file")
            }
            if kind == 4 {
                if let found = try ELFImage.pvhEntry(inNotes: bytes, segment) { pvhEntry = found }
                continue
            }
            guard segment.fileSize <= segment.memorySize else {
                throw .badELF("program header \(index): p_filesz \(segment.fileSize) exceeds p_memsz \(segment.memorySize)")
            }
            guard segment.physicalAddress.addingReportingOverflow(segment.memorySize).overflow == false else {
                throw .badELF("program header \(index): p_paddr \(hex(segment.physicalAddress)) + p_memsz wraps the address space")
            }
            if segment.memorySize > 0 { segments.append(segment) }
        }
        guard !segments.isEmpty else { throw .badELF("no PT_LOAD segment with a non-zero size") }
        entry = rawEntry
        for segment in segments where rawEntry >= segment.virtualAddress
            && rawEntry - segment.virtualAddress < segment.memorySize {
            entry = rawEntry - segment.virtualAddress + segment.physicalAddress
            break
        }
    }

    private static func segment(_ bytes: [UInt8], at header: Int, is64Bit: Bool) -> Segment {
        if is64Bit {
            return Segment(fileOffset: bytes.le(UInt64.self, at: header + 8) ?? 0,
                           fileSize: bytes.le(UInt64.self, at: header + 32) ?? 0,
                           physicalAddress: bytes.le(UInt64.self, at: header + 24) ?? 0,
                           virtualAddress: bytes.le(UInt64.self, at: header + 16) ?? 0,
                           memorySize: bytes.le(UInt64.self, at: header + 40) ?? 0)
        }
        return Segment(fileOffset: UInt64(bytes.le(UInt32.self, at: header + 4) ?? 0),
                       fileSize: UInt64(bytes.le(UInt32.self, at: header + 16) ?? 0),
                       physicalAddress: UInt64(bytes.le(UInt32.self, at: header + 12) ?? 0),
                       virtualAddress: UInt64(bytes.le(UInt32.self, at: header + 8) ?? 0),
                       memorySize: UInt64(bytes.le(UInt32.self, at: header + 20) ?? 0))
    }

    /// Walks the notes of one PT_NOTE segment (already range-checked) for XEN_ELFNOTE_PHYS32_ENTRY.
    private static func pvhEntry(inNotes bytes: [UInt8], _ segment: Segment) throws(BootError) -> UInt64? {
        var cursor = Int(segment.fileOffset)
        let end = cursor + Int(segment.fileSize)
        while end - cursor >= 12 {
            let nameSize = Int(bytes.le(UInt32.self, at: cursor) ?? 0)
            let descSize = Int(bytes.le(UInt32.self, at: cursor + 4) ?? 0)
            let type = bytes.le(UInt32.self, at: cursor + 8) ?? 0
            let nameStart = cursor + 12
            let paddedName = (nameSize + 3) & ~3, paddedDesc = (descSize + 3) & ~3
            guard paddedName <= end - nameStart, paddedDesc <= end - nameStart - paddedName else {
                throw .badELF("note at file offset \(hex(UInt64(cursor))) runs past its PT_NOTE segment")
            }
            let descStart = nameStart + paddedName
            let name = bytes[nameStart..<(nameStart + nameSize)].prefix { $0 != 0 }
            if type == xenPhys32EntryNote, Array(name) == Array("Xen".utf8) {
                switch descSize {
                case 4: return UInt64(bytes.le(UInt32.self, at: descStart) ?? 0)
                case 8: return bytes.le(UInt64.self, at: descStart)
                default: throw .badELF("Xen PVH entry note has a \(descSize)-byte value, expected 4 or 8")
                }
            }
            cursor = descStart + paddedDesc
        }
        return nil
    }

    /// Copies every PT_LOAD to its physical address and zeroes its bss. Returns the end of the image.
    func load(from bytes: [UInt8], into writer: GuestWriter) throws(BootError) -> UInt64 {
        var end: UInt64 = 0
        for segment in segments {
            try ELFImage.checkPlacement(address: segment.physicalAddress, size: segment.memorySize, in: writer)
            end = max(end, segment.physicalAddress + segment.memorySize)
        }
        guard segments.contains(where: { entry >= $0.physicalAddress && entry - $0.physicalAddress < $0.memorySize }) else {
            throw .badELF("entry point \(hex(entry)) is outside every PT_LOAD segment")
        }
        for segment in segments {
            guard let range = bytes.checkedRange(offset: segment.fileOffset, length: segment.fileSize) else {
                throw .badELF("segment data at \(hex(segment.fileOffset)) runs past the end of the file")
            }
            try writer.write(Array(bytes[range]), at: segment.physicalAddress, "kernel segment")
            let bss = segment.memorySize - segment.fileSize
            if bss > 0 {
                try writer.zero(at: segment.physicalAddress + segment.fileSize, length: bss, "kernel bss")
            }
        }
        return end
    }

    /// A kernel range must be guest RAM at or above 1 MiB (below it live the loader's own tables).
    static func checkPlacement(address: UInt64, size: UInt64, in writer: GuestWriter) throws(BootError) {
        guard address >= X86Layout.highMemoryStart else {
            throw .kernelDoesNotFit(address: address, size: size, reason: "overlaps the loader's area below 1 MiB")
        }
        let lowEnd = X86Layout.lowMemoryEnd(of: writer.memory)
        guard address.addingReportingOverflow(size).overflow == false,
              writer.memory.isValid(.init(address), length: size) else {
            throw .kernelDoesNotFit(address: address, size: size,
                                    reason: "is outside guest RAM (\(mib(lowEnd)) below the MMIO hole)")
        }
    }
}
