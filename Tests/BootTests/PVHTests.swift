import GuestMemory
import Testing
@testable import Boot

@Suite("Xen PVH entry")
struct PVHTests {
    static let text = TestImages.pattern(0x2000, seed: 11)
    static let pvhEntry: UInt64 = 0x100_0100

    static func kernel(is64: Bool, descSize: Int = 4) -> [UInt8] {
        TestImages.elf(is64: is64, entry: 0x100_0000, segments: [.init(0x100_0000, data: text, bss: 0x1000)],
                       notes: TestImages.note(name: "GNU", type: 3, desc: [1, 2, 3, 4, 5])
                           + TestImages.pvhNote(entry: pvhEntry, descSize: descSize))
    }

    @Test("ELF32 with only the PVH note boots PVH under auto: 32-bit, paging off, ebx = start_info")
    func elf32AutoPicksPVH() throws {
        let memory = try TestImages.memory(256 << 20)
        let initrd = TestImages.pattern(6000, seed: 2)
        let plan = try KernelLoader.load(TestImages.request(Self.kernel(is64: false), initrd: initrd, cmdline: "console=hvc0"),
                                         into: memory)
        #expect(plan.format == .elfPVH)
        let state = plan.entry
        #expect(state.rip == Self.pvhEntry && state.rbx == X86Layout.bootInfoAddress)
        #expect(state.cr0 & 0x8000_0000 == 0 && state.cr0 & 1 == 1 && state.efer == 0 && state.cr4 == 0)
        #expect(state.cs.db && !state.cs.l && state.cs.limit == 0xFFFF_FFFF && state.cs.base == 0)
        #expect(try memory.u64(state.gdtBase + UInt64(state.cs.selector)) == state.cs.descriptor)

        let info = X86Layout.bootInfoAddress
        #expect(try memory.u32(info) == 0x336E_C578)
        #expect(try memory.u32(info + 4) == 1)
        #expect(try memory.cString(try memory.u64(info + 0x18)) == "console=hvc0")
        #expect(try memory.u32(info + 0x0C) == 1)
        let module = try memory.u64(info + 0x10)
        let initrdStart = try memory.u64(module)
        #expect(try initrdStart == plan.initrd?.start.raw && memory.u64(module + 8) == 6000)
        #expect(try memory.bytes(initrdStart, 6000) == initrd)
        let memmap = try memory.u64(info + 0x28)
        let entries = try memory.u32(info + 0x30)
        #expect(entries == 3)
        #expect(try memory.u64(memmap + 24) == 0x9FC00 && memory.u32(memmap + 24 + 16) == 2)
        #expect(try memory.u64(memmap + 48) == 0x100000 && memory.u64(memmap + 56) == (256 << 20) - 0x100000)
        #expect(try memory.u32(memmap + 48 + 16) == 1)
    }

    @Test("ELF64 with a PVH note: auto uses the 64-bit Linux entry (keeps the RNG seed); pvh forces PVH")
    func elf64Choice() throws {
        let auto = try KernelLoader.load(TestImages.request(Self.kernel(is64: true, descSize: 8)), into: try TestImages.memory(64 << 20))
        #expect(auto.format == .elfLinux64 && auto.entry.rip == 0x100_0000)
        let forced = try KernelLoader.load(TestImages.request(Self.kernel(is64: true, descSize: 8), seed: [1, 2], boot: .pvh),
                                           into: try TestImages.memory(64 << 20))
        #expect(forced.format == .elfPVH && forced.entry.rip == Self.pvhEntry)
        #expect(forced.notes.contains { $0.contains("RNG seed not passed") })
    }

    @Test("pvh without the note, and linux64 on a 32-bit ELF, are refused")
    func protocolMismatch() throws {
        let plain = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: Self.text)])
        let error = TestImages.loadError(TestImages.request(plain, boot: .pvh), memory: try TestImages.memory(64 << 20))
        guard case .unsupportedProtocol? = error else { Issue.record("got \(String(describing: error))"); return }
        let linux = TestImages.loadError(TestImages.request(Self.kernel(is64: false), boot: .linux64),
                                         memory: try TestImages.memory(64 << 20))
        guard case .unsupportedProtocol? = linux else { Issue.record("got \(String(describing: linux))"); return }
    }

    @Test("pvh on a bzImage boots the vmlinux inside through its note")
    func bzImagePVH() throws {
        let inner = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: Self.text)],
                                   notes: TestImages.pvhNote(entry: Self.pvhEntry))
        let image = TestImages.bzImage(payload: try TestImages.kernelCompress(inner, .gzip))
        let plan = try KernelLoader.load(TestImages.request(image, boot: .pvh), into: try TestImages.memory(64 << 20))
        #expect(plan.format == .elfPVH && plan.entry.rip == Self.pvhEntry)
    }
}
