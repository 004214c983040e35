import GuestMemory
import Testing
@testable import Boot

@Suite("Linux 64-bit boot: boot_params, e820, initrd, RNG seed")
struct LinuxBootParamsTests {
    static let vmlinuxText = TestImages.pattern(0x3000, seed: 4)
    static let vmlinux = TestImages.elf(entry: 0x100_0000, segments: [
        .init(0x100_0000, data: vmlinuxText, bss: 0x1000, virtualAddress: 0xFFFF_FFFF_8100_0000),
    ])

    @Test("ELF vmlinux: segments at p_paddr, rip = physical e_entry, long-mode state")
    func vmlinuxEntry() throws {
        let memory = try TestImages.memory(512 << 20)
        let plan = try KernelLoader.load(TestImages.request(Self.vmlinux), into: memory)
        #expect(plan.format == .elfLinux64)
        #expect(plan.entry.rip == 0x100_0000)
        #expect(try memory.bytes(0x100_0000, Self.vmlinuxText.count) == Self.vmlinuxText)
        #expect(plan.kernelEnd == GuestAddress(0x100_4000))
        let state = plan.entry
        #expect(state.cr0 & 0x8000_0001 == 0x8000_0001 && state.cr4 & 0x20 != 0 && state.efer == 0x500)
        #expect(state.cr3 == X86Layout.pml4Address && state.rflags == 2)
        #expect(state.cs.selector == 0x10 && state.cs.l && !state.cs.db && state.ss.selector == 0x18)
        // GDT entries at the selectors Linux expects, matching the segment registers.
        #expect(try memory.u64(state.gdtBase + 0x10) == state.cs.descriptor)
        #expect(try memory.u64(state.gdtBase + 0x18) == state.ds.descriptor)
        #expect(state.cs.descriptor == 0x00AF_9B00_0000_FFFF && state.ds.descriptor == 0x00CF_9300_0000_FFFF)
        // Identity map: 2 MiB pages through 4 GiB.
        #expect(try memory.u64(X86Layout.pml4Address) == X86Layout.pdptAddress | 3)
        #expect(try memory.u64(X86Layout.pdptAddress + 24) == (X86Layout.pageDirectoryAddress + 3 * 4096) | 3)
        #expect(try memory.u64(X86Layout.pageDirectoryAddress + 3 * 4096 + 511 * 8) == (0xFFE0_0000 | 0x83))
    }

    @Test("e820 for 512 MiB: low RAM, reserved EBDA..1 MiB, RAM to the end")
    func e820Small() throws {
        let memory = try TestImages.memory(512 << 20)
        _ = try KernelLoader.load(TestImages.request(Self.vmlinux), into: memory)
        #expect(try readE820(memory) == [
            E820Entry(address: 0, size: 0x9FC00, type: 1),
            E820Entry(address: 0x9FC00, size: 0x100000 - 0x9FC00, type: 2),
            E820Entry(address: 0x100000, size: (512 << 20) - 0x100000, type: 1),
        ])
    }

    @Test("e820 for 4 GiB: RAM stops at the MMIO hole and resumes at 4 GiB")
    func e820Large() throws {
        let ranges = X86Layout.ramRanges(memorySize: 4 << 30)
        #expect(ranges.map(\.start) == [GuestAddress(0), GuestAddress(1 << 32)])
        #expect(ranges.map(\.size) == [0xC000_0000, 0x4000_0000])
        let memory = try GuestMemory(ranges: ranges)
        _ = try KernelLoader.load(TestImages.request(Self.vmlinux), into: memory)
        #expect(try readE820(memory) == [
            E820Entry(address: 0, size: 0x9FC00, type: 1),
            E820Entry(address: 0x9FC00, size: 0x100000 - 0x9FC00, type: 2),
            E820Entry(address: 0x100000, size: 0xC000_0000 - 0x100000, type: 1),
            E820Entry(address: 1 << 32, size: 0x4000_0000, type: 1),
        ])
    }

    @Test("cmdline, ramdisk, type_of_loader and loadflags in boot_params")
    func bootParamsFields() throws {
        let memory = try TestImages.memory(512 << 20)
        let initrd = TestImages.pattern(10_000, seed: 8)
        let plan = try KernelLoader.load(TestImages.request(Self.vmlinux, initrd: initrd, cmdline: "console=ttyS0 quiet"),
                                         into: memory)
        let zp = X86Layout.zeroPageAddress
        let cmdlinePointer = UInt64(try memory.u32(zp + 0x228)) | UInt64(try memory.u32(zp + 0x0C8)) << 32
        #expect(cmdlinePointer == X86Layout.cmdlineAddress)
        #expect(try memory.cString(cmdlinePointer) == "console=ttyS0 quiet")
        #expect(try memory.u8(zp + 0x210) == 0xFF)
        #expect(try memory.u8(zp + 0x211) & 0x81 == 0x81)
        #expect(try memory.u16(zp + 0x1FE) == 0xAA55)
        let ramdisk = UInt64(try memory.u32(zp + 0x218))
        #expect(ramdisk == plan.initrd?.start.raw)
        #expect(try memory.u32(zp + 0x21C) == 10_000)
        #expect(try memory.bytes(ramdisk, initrd.count) == initrd)
        // As high as possible below both RAM end and initrd_addr_max (0x7FFFFFFF), page aligned.
        #expect(ramdisk % 4096 == 0 && ramdisk + 10_000 <= 512 << 20 && ramdisk + 10_000 + 4096 > 512 << 20)
    }

    @Test("initrd is kept below initrd_addr_max even when RAM goes higher")
    func initrdAddrMax() throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, .gzip)
        let image = TestImages.bzImage(payload: payload, initrdAddrMax: 0x37FF_FFFF)
        let memory = try TestImages.memory(2 << 30)
        let plan = try KernelLoader.load(TestImages.request(image, initrd: [UInt8](repeating: 7, count: 5000)), into: memory)
        let start = try #require(plan.initrd?.start.raw)
        #expect(start + 5000 - 1 <= 0x37FF_FFFF && start + 5000 + 4096 > 0x3800_0000 && start % 4096 == 0)
    }

    @Test("an initrd that cannot fit above the kernel is 'initrd too large'")
    func initrdTooLarge() throws {
        let memory = try TestImages.memory(24 << 20)
        let error = TestImages.loadError(TestImages.request(Self.vmlinux, initrd: [UInt8](repeating: 1, count: 8 << 20)),
                                         memory: memory)
        guard case .initrdTooLarge(let size, let lowest, _)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(size == 8 << 20 && lowest == 0x100_4000)
        #expect(error?.description.hasPrefix("initrd too large for memory") == true)
    }

    @Test("RNG seed goes in a SETUP_RNG_SEED setup_data node linked from the header")
    func rngSeed() throws {
        let memory = try TestImages.memory(512 << 20)
        let seed = TestImages.pattern(32, seed: 42)
        _ = try KernelLoader.load(TestImages.request(Self.vmlinux, seed: seed), into: memory)
        let node = try memory.u64(X86Layout.zeroPageAddress + 0x250)
        #expect(node == X86Layout.setupDataAddress)
        #expect(try memory.u64(node) == 0)          // end of chain
        #expect(try memory.u32(node + 8) == 9)      // SETUP_RNG_SEED
        #expect(try memory.u32(node + 12) == 32)
        #expect(try memory.bytes(node + 16, 32) == seed)
    }

    @Test("no seed, no setup_data")
    func noSeed() throws {
        let memory = try TestImages.memory(512 << 20)
        _ = try KernelLoader.load(TestImages.request(Self.vmlinux), into: memory)
        #expect(try memory.u64(X86Layout.zeroPageAddress + 0x250) == 0)
    }

    @Test("cmdline longer than cmdline_size is refused")
    func cmdlineTooLong() throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, .gzip)
        let image = TestImages.bzImage(payload: payload, cmdlineSize: 16)
        let error = TestImages.loadError(TestImages.request(image, cmdline: String(repeating: "x", count: 17)),
                                         memory: try TestImages.memory(64 << 20))
        #expect(error == .cmdlineTooLong(length: 17, maximum: 16))
        let fits = TestImages.loadError(TestImages.request(image, cmdline: String(repeating: "x", count: 16)),
                                        memory: try TestImages.memory(64 << 20))
        #expect(fits == nil)
    }

    private func readE820(_ memory: GuestMemory) throws -> [E820Entry] {
        let count = Int(try memory.u8(X86Layout.zeroPageAddress + 0x1E8))
        return try (0..<count).map { index in
            let at = X86Layout.zeroPageAddress + 0x2D0 + UInt64(index) * 20
            return E820Entry(address: try memory.u64(at), size: try memory.u64(at + 8), type: try memory.u32(at + 16))
        }
    }
}
