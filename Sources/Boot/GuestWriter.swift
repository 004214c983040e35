import GuestMemory

/// GuestMemory writes that report failures as BootError, naming what was being written.
struct GuestWriter {
    let memory: GuestMemory

    func write(_ bytes: [UInt8], at address: UInt64, _ what: @autoclosure () -> String) throws(BootError) {
        do {
            try memory.writeBytes(bytes, to: GuestAddress(address))
        } catch {
            throw .memoryAccess("\(what()) at \(hex(address)): \(error)")
        }
    }

    func zero(at address: UInt64, length: UInt64, _ what: @autoclosure () -> String) throws(BootError) {
        do {
            try memory.zero(at: GuestAddress(address), length: length)
        } catch {
            throw .memoryAccess("\(what()) at \(hex(address)): \(error)")
        }
    }

    /// Writes the GDT, an empty IDT entry and (for long mode) the 4 GiB identity map with 2 MiB pages.
    func writeCPUTables(pageTables: Bool) throws(BootError) {
        try write(BootGDT.bytes, at: X86Layout.gdtAddress, "boot GDT")
        try write([UInt8](repeating: 0, count: 8), at: X86Layout.idtAddress, "boot IDT")
        guard pageTables else { return }
        let present: UInt64 = 0x3   // present | writable
        var pml4 = [UInt8](repeating: 0, count: 4096)
        pml4.put(X86Layout.pdptAddress | present, at: 0)
        var pdpt = [UInt8](repeating: 0, count: 4096)
        for gib in 0..<X86Layout.identityMappedGiB {
            let directory = X86Layout.pageDirectoryAddress + gib * 4096
            pdpt.put(directory | present, at: Int(gib) * 8)
            var entries = [UInt8](repeating: 0, count: 4096)
            for slot in 0..<512 {
                let physical = gib << 30 | UInt64(slot) << 21
                entries.put(physical | present | 0x80, at: slot * 8)   // 0x80: 2 MiB page
            }
            try write(entries, at: directory, "page directory \(gib)")
        }
        try write(pml4, at: X86Layout.pml4Address, "PML4")
        try write(pdpt, at: X86Layout.pdptAddress, "PDPT")
    }
}
