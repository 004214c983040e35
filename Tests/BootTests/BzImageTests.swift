import GuestMemory
import Testing
@testable import Boot

@Suite("bzImage payload decompressed on the host")
struct BzImageTests {
    @Test("each kernel compressor decompresses and the inner ELF loads at p_paddr",
          arguments: [Compression.gzip, .xz, .lzma, .lz4, .zstd])
    func decompressesEachCompressor(_ compression: Compression) throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, compression)
        #expect(PayloadDecompressor.identify(payload) == compression)
        let memory = try TestImages.memory(64 << 20)
        // Dirty the bss first: the loader must zero it, not rely on fresh memory.
        try memory.writeBytes([UInt8](repeating: 0xFF, count: 8192), to: GuestAddress(0x101_0000))
        let plan = try KernelLoader.load(TestImages.request(TestImages.bzImage(payload: payload)), into: memory)

        #expect(plan.format == .bzImageDecompressed(compression))
        #expect(plan.entry.rip == TestImages.innerEntry)
        #expect(try memory.bytes(0x100_0000, TestImages.innerText.count) == TestImages.innerText)
        #expect(try memory.bytes(0x101_0000, 8192) == [UInt8](repeating: 0, count: 8192))
        #expect(plan.kernelEnd == GuestAddress(0x101_2000))
        #expect(plan.notes.contains { $0.contains("\(compression.rawValue)") && $0.contains("decompressed on host in") })
        // The zero page carries the bzImage's own header, with loader fields filled in.
        let zeroPage = X86Layout.zeroPageAddress
        #expect(try memory.u32(zeroPage + 0x202) == SetupHeader.magic)
        #expect(try memory.u16(zeroPage + 0x206) == 0x020F)
        #expect(try memory.u32(zeroPage + 0x260) == 0x40_0000)   // init_size copied
        #expect(try memory.u8(zeroPage + 0x210) == 0xFF)
        #expect(plan.entry.rsi == zeroPage)
        #expect(plan.entry.cs.l && plan.entry.cs.selector == 0x10 && plan.entry.ds.selector == 0x18)
    }

    @Test("lz4 legacy payload spanning several 8 MiB blocks decompresses completely")
    func lz4MultipleBlocks() throws {
        let big = TestImages.pattern(10 << 20, seed: 5)
        let kernel = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: big)])
        let payload = try TestImages.kernelCompress(kernel, .lz4)
        let memory = try TestImages.memory(128 << 20)
        let plan = try KernelLoader.load(TestImages.request(TestImages.bzImage(payload: payload, initSize: 0x100_0000)),
                                         into: memory)
        #expect(plan.format == .bzImageDecompressed(.lz4))
        #expect(try memory.bytes(0x100_0000 + UInt64(big.count) - 4096, 4096) == Array(big.suffix(4096)))
    }

    @Test("a corrupt payload falls back to the bzImage's 64-bit entry at 0x100200")
    func corruptPayloadFallsBack() throws {
        var payload = try TestImages.kernelCompress(TestImages.innerELF, .gzip)
        for index in 20..<min(payload.count - 8, 200) { payload[index] ^= 0x5A }
        try expectNativeFallback(payload, reason: "gzip")
    }

    @Test("a bzip2 payload (no host decompressor) falls back to the bzImage's own entry")
    func bzip2FallsBack() throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, .bzip2)
        #expect(PayloadDecompressor.identify(payload) == .bzip2)
        try expectNativeFallback(payload, reason: "bzip2")
    }

    @Test("a payload that decompresses to something other than an ELF falls back")
    func nonELFPayloadFallsBack() throws {
        let payload = try TestImages.kernelCompress(TestImages.pattern(5000), .zstd)
        try expectNativeFallback(payload, reason: "does not decompress to an ELF")
    }

    private func expectNativeFallback(_ payload: [UInt8], reason: String) throws {
        let image = TestImages.bzImage(payload: payload)
        let memory = try TestImages.memory(64 << 20)
        let plan = try KernelLoader.load(TestImages.request(image), into: memory)
        #expect(plan.format == .bzImageNative)
        #expect(plan.entry.rip == 0x10_0200)
        let code = Array(image[(5 * 512)...])
        #expect(try memory.bytes(0x10_0000, code.count) == code)
        #expect(try memory.u32(X86Layout.zeroPageAddress + 0x214) == 0x10_0000)   // code32_start
        #expect(plan.notes.contains { $0.contains("falling back") && $0.contains(reason) })
    }

    @Test("hostDecompression: false leaves the payload to the guest (for measuring the difference)")
    func hostDecompressionOff() throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, .gzip)
        var request = TestImages.request(TestImages.bzImage(payload: payload))
        request.hostDecompression = false
        let plan = try KernelLoader.load(request, into: try TestImages.memory(64 << 20))
        #expect(plan.format == .bzImageNative && plan.entry.rip == 0x10_0200)
        #expect(plan.notes.contains { $0.contains("host decompression disabled") })
    }

    @Test("without XLF_KERNEL_64 an unusable payload is a clear error, not a guess")
    func fallbackNeeds64BitEntry() throws {
        let image = TestImages.bzImage(payload: [0x42, 0x5A, 0x68, 0x39, 1, 2, 3, 4], xloadflags: 0)
        let error = TestImages.loadError(TestImages.request(image), memory: try TestImages.memory(64 << 20))
        guard case .badBzImage(let why)? = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(why.contains("XLF_KERNEL_64"))
    }

    @Test("setup_sects 0 means 4 sectors")
    func setupSectsZero() throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, .gzip)
        let plan = try KernelLoader.load(TestImages.request(TestImages.bzImage(payload: payload, setupSects: 0)),
                                         into: try TestImages.memory(64 << 20))
        #expect(plan.format == .bzImageDecompressed(.gzip))
    }

    @Test("memory below init_size is refused")
    func memoryBelowInitSize() throws {
        let payload = try TestImages.kernelCompress(TestImages.innerELF, .gzip)
        let image = TestImages.bzImage(payload: payload, initSize: 0x200_0000)   // 16 MiB + 32 MiB > 32 MiB RAM
        let error = TestImages.loadError(TestImages.request(image), memory: try TestImages.memory(32 << 20))
        guard case .memoryTooSmall(let needed, let available, _)? = error else {
            Issue.record("got \(String(describing: error))"); return
        }
        #expect(needed == 0x300_0000 && available == 32 << 20)
    }
}
