import GuestMemory
import Testing
@testable import Boot

@Suite("Multiboot v1")
struct MultibootTests {
    static func header(flags: UInt32, fields: [UInt32] = []) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 12 + fields.count * 4)
        out.put(UInt32(0x1BAD_B002), at: 0)
        out.put(flags, at: 4)
        out.put(0 &- (UInt32(0x1BAD_B002) &+ flags), at: 8)
        for (index, field) in fields.enumerated() { out.put(field, at: 12 + index * 4) }
        return out
    }

    static let text = TestImages.pattern(0x1800, seed: 21)
    static let elfKernel = TestImages.elf(is64: false, entry: 0x10_0010, segments: [.init(0x10_0000, data: text, bss: 0x800)],
                                          prefix: header(flags: 0x3))

    @Test("ELF32 Multiboot kernel: EAX magic, EBX info with mem, cmdline, module, mmap, loader name")
    func infoStructure() throws {
        let memory = try TestImages.memory(128 << 20)
        let initrd = TestImages.pattern(3000, seed: 6)
        let plan = try KernelLoader.load(TestImages.request(Self.elfKernel, initrd: initrd, cmdline: "verbose=1"), into: memory)
        #expect(plan.format == .multiboot)
        #expect(plan.entry.rax == 0x2BAD_B002 && plan.entry.rbx == X86Layout.bootInfoAddress && plan.entry.rip == 0x10_0010)
        #expect(plan.entry.cr0 & 0x8000_0000 == 0 && plan.entry.cs.db)
        #expect(try memory.bytes(0x10_0000, Self.text.count) == Self.text)

        let info = X86Layout.bootInfoAddress
        let flags = try memory.u32(info)
        #expect(flags == 0x1 | 0x4 | 0x8 | 0x40 | 0x200)
        #expect(try memory.u32(info + 4) == 639)
        #expect(try memory.u32(info + 8) == UInt32(((128 << 20) - 0x10_0000) / 1024))
        #expect(try memory.cString(UInt64(try memory.u32(info + 16))) == "/boot/kernel verbose=1")
        #expect(try memory.u32(info + 20) == 1)
        let module = UInt64(try memory.u32(info + 24))
        let start = UInt64(try memory.u32(module)), end = UInt64(try memory.u32(module + 4))
        #expect(start % 4096 == 0 && start >= 0x10_2000 && end - start == 3000)
        #expect(start == alignUp(0x10_0000 + 0x2000, 4096))   // right after the kernel's bss
        #expect(try memory.bytes(start, 3000) == initrd)
        #expect(try memory.cString(UInt64(try memory.u32(module + 8))) == "/boot/initrd.img")
        let mmapLength = try memory.u32(info + 44), mmap = UInt64(try memory.u32(info + 48))
        #expect(mmapLength == 3 * 24)
        #expect(try memory.u32(mmap) == 20 && memory.u64(mmap + 4) == 0 && memory.u64(mmap + 12) == 0x9FC00)
        #expect(try memory.u32(mmap + 24 + 20) == 2)
        #expect(try memory.u64(mmap + 48 + 4) == 0x10_0000 && memory.u32(mmap + 48 + 20) == 1)
        #expect(try memory.cString(UInt64(try memory.u32(info + 64))) == "vireo")
    }

    @Test("a.out kludge: file copied from the computed offset to load_addr, bss zeroed, entry_addr used")
    func aoutKludge() throws {
        // Image linked at 0x200000; header at file offset 0x40 is at header_addr 0x200040.
        var image = TestImages.pattern(0x1000, seed: 31)
        let fields: [UInt32] = [0x20_0040, 0x20_0000, 0x20_0800, 0x20_3000, 0x20_0100]
        image.put(bytes: Self.header(flags: 0x1_0002, fields: fields), at: 0x40)
        let memory = try TestImages.memory(64 << 20)
        try memory.writeBytes([UInt8](repeating: 0xEE, count: 0x2800), to: GuestAddress(0x20_0800))
        let plan = try KernelLoader.load(TestImages.request(image, cmdline: ""), into: memory)
        #expect(plan.format == .multiboot && plan.entry.rip == 0x20_0100)
        #expect(try memory.bytes(0x20_0000, 0x800) == Array(image[0..<0x800]))
        #expect(try memory.bytes(0x20_0800, 0x2800) == [UInt8](repeating: 0, count: 0x2800))
        #expect(plan.kernelEnd == GuestAddress(0x20_3000))
        #expect(try memory.cString(X86Layout.cmdlineAddress) == "/boot/kernel")
    }

    @Test("hostile kludge fields and unknown requirement bits are errors")
    func hostileHeaders() throws {
        func load(_ fields: [UInt32], flags: UInt32 = 0x1_0000) -> BootError? {
            var image = [UInt8](repeating: 0x90, count: 0x1000)
            image.put(bytes: Self.header(flags: flags, fields: fields), at: 0x40)
            return TestImages.loadError(TestImages.request(image), memory: try! TestImages.memory(64 << 20))
        }
        // header_addr - load_addr larger than the header's file offset.
        #expect(isMultibootError(load([0x20_1000, 0x20_0000, 0, 0, 0x20_1000])))
        // load_end_addr reaching past the end of the file.
        #expect(isMultibootError(load([0x20_0040, 0x20_0000, 0x30_0000, 0, 0x20_0040])))
        // bss_end below load end.
        #expect(isMultibootError(load([0x20_0040, 0x20_0000, 0x20_0800, 0x20_0400, 0x20_0040])))
        // entry outside the image.
        #expect(isMultibootError(load([0x20_0040, 0x20_0000, 0, 0, 0x90_0000])))
        // a load address outside RAM.
        guard case .kernelDoesNotFit? = load([0xF000_0040, 0xF000_0000, 0, 0, 0xF000_0040]) else {
            Issue.record("load outside RAM accepted"); return
        }
        #expect(isMultibootError(load([0x20_0040, 0x20_0000, 0, 0, 0x20_0040], flags: 0x1_0010)))
    }

    private func isMultibootError(_ error: BootError?) -> Bool {
        if case .badMultiboot? = error { return true }
        Issue.record("expected a Multiboot error, got \(String(describing: error))")
        return false
    }
}
