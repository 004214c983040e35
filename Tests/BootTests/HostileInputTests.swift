import GuestMemory
import Testing
import TestSupport
@testable import Boot

/// Kernel files are untrusted: every malformed field must become a BootError, never a trap.
@Suite("hostile kernel images")
struct HostileInputTests {
    static let good = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: TestImages.pattern(512))])

    static func loadError(_ kernel: [UInt8], memory size: UInt64 = 64 << 20) -> BootError? {
        TestImages.loadError(TestImages.request(kernel), memory: try! TestImages.memory(size))
    }

    static func expectBadELF(_ kernel: [UInt8], mentioning text: String) {
        let error = loadError(kernel)
        guard case .badELF(let why)? = error else { Issue.record("expected badELF, got \(String(describing: error))"); return }
        #expect(why.contains(text), "\(why)")
    }

    @Test("empty and unknown files name their first bytes")
    func unrecognised() {
        #expect(Self.loadError([])?.description.contains("file is empty") == true)
        let error = Self.loadError([0xDE, 0xAD, 0xBE, 0xEF, 0x01])
        #expect(error == .unrecognisedKernel(firstBytes: [0xDE, 0xAD, 0xBE, 0xEF, 0x01]))
        #expect(error?.description.contains("de ad be ef 01") == true)
    }

    @Test("truncated ELF header")
    func truncatedHeader() { Self.expectBadELF(Array(Self.good.prefix(40)), mentioning: "too short") }

    @Test("program header table past the end of the file")
    func phoffPastEOF() {
        var kernel = Self.good
        kernel.put(UInt64(0xFFFF_FFFF_FFFF_FF00), at: 32)
        Self.expectBadELF(kernel, mentioning: "program header table")
        kernel.put(UInt64(kernel.count - 10), at: 32)
        Self.expectBadELF(kernel, mentioning: "program header table")
    }

    @Test("segment data offset and size past the end of the file")
    func segmentPastEOF() {
        var kernel = Self.good
        kernel.put(UInt64(kernel.count + 1), at: 64 + 8)             // p_offset
        Self.expectBadELF(kernel, mentioning: "runs past the end")
        kernel = Self.good
        kernel.put(UInt64.max, at: 64 + 32)                          // p_filesz
        Self.expectBadELF(kernel, mentioning: "runs past the end")
    }

    @Test("absurd sizes: p_memsz wrapping, filesz above memsz, e_phnum huge, bad phentsize")
    func absurdSizes() {
        var kernel = Self.good
        kernel.put(UInt64.max, at: 64 + 40)
        Self.expectBadELF(kernel, mentioning: "wraps")
        kernel = Self.good
        kernel.put(UInt64(4), at: 64 + 40)
        Self.expectBadELF(kernel, mentioning: "exceeds p_memsz")
        kernel = Self.good
        kernel.put(UInt16(0xFFFF), at: 56)
        Self.expectBadELF(kernel, mentioning: "e_phnum")
        kernel = Self.good
        kernel.put(UInt16(8), at: 54)
        Self.expectBadELF(kernel, mentioning: "e_phentsize")
    }

    @Test("PT_LOAD outside RAM, in the hole, or over the loader's low area")
    func loadOutsideRAM() {
        for address: UInt64 in [0x1_0000_0000_0000, 0xC000_0000, 0x3FF_F000, 0x8000] {
            let kernel = TestImages.elf(entry: address, segments: [.init(address, data: TestImages.pattern(0x2000))])
            guard case .kernelDoesNotFit(let at, _, _)? = Self.loadError(kernel) else {
                Issue.record("segment at \(hex(address)) accepted"); continue
            }
            #expect(at == address)
        }
        // A huge bss that runs off the end of RAM.
        let kernel = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: [1], bss: 1 << 40)])
        guard case .kernelDoesNotFit? = Self.loadError(kernel) else { Issue.record("huge bss accepted"); return }
    }

    @Test("entry point outside every segment, wrong machine, malformed notes")
    func otherFields() {
        Self.expectBadELF(TestImages.elf(entry: 0x500_0000, segments: [.init(0x100_0000, data: [1])]), mentioning: "entry point")
        Self.expectBadELF(TestImages.elf(machine: 40, entry: 0x100_0000, segments: [.init(0x100_0000, data: [1])]),
                          mentioning: "e_machine")
        var note = TestImages.pvhNote(entry: 0x100_0000)
        note.put(UInt32(0xFFFF_FFF0), at: 4)                          // descsz far past the segment
        Self.expectBadELF(TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: [1])], notes: note),
                          mentioning: "note")
    }

    @Test("bzImage with setup_sects past the end of the file")
    func setupSectsHuge() {
        var image = TestImages.bzImage(payload: [1, 2, 3, 4])
        image[0x1F1] = 255
        guard case .badBzImage(let why)? = Self.loadError(image) else { Issue.record("accepted"); return }
        #expect(why.contains("setup_sects"))
    }

    @Test("payload_offset past the end of the file falls back, or fails clearly without a 64-bit entry")
    func payloadOffsetPastEOF() throws {
        let image = TestImages.bzImage(payload: [1, 2, 3, 4], payloadOffset: 0xFFFF_FF00, payloadLength: 0x1000)
        let plan = try KernelLoader.load(TestImages.request(image), into: try TestImages.memory(64 << 20))
        #expect(plan.format == .bzImageNative)
        #expect(plan.notes.contains { $0.contains("outside the") })
        let old = TestImages.bzImage(payload: [1, 2, 3, 4], xloadflags: 0, payloadOffset: 0xFFFF_FF00)
        guard case .badBzImage? = Self.loadError(old) else { Issue.record("accepted"); return }
    }

    @Test("memory too small for the loader, and oversized RNG seeds")
    func limits() throws {
        guard case .memoryTooSmall? = Self.loadError(Self.good, memory: 1 << 20) else { Issue.record("1 MiB accepted"); return }
        let error = TestImages.loadError(TestImages.request(Self.good, seed: [UInt8](repeating: 1, count: 5000)),
                                         memory: try TestImages.memory(64 << 20))
        #expect(error == .rngSeedTooLong(length: 5000, maximum: LinuxBoot.maximumRNGSeed))
    }

    @Test("decompression output is capped (a payload bomb stops at the limit)",
          arguments: [Compression.gzip, .xz, .lzma, .lz4, .zstd])
    func decompressionCap(_ compression: Compression) throws {
        let payload = try TestImages.kernelCompress([UInt8](repeating: 0, count: 3 << 20), compression)
        #expect(throws: BootError.self) {
            _ = try PayloadDecompressor.decompress(payload, as: compression, sizeHint: Int(UInt32.max), limit: 1 << 20)
        }
        #expect(try PayloadDecompressor.decompress(payload, as: compression, sizeHint: 0, limit: 4 << 20).count == 3 << 20)
    }

    @Test("truncated and corrupted payloads are decompression errors", arguments: [Compression.gzip, .xz, .lzma, .lz4, .zstd])
    func truncatedPayload(_ compression: Compression) throws {
        let payload = try TestImages.kernelCompress(TestImages.pattern(300_000), compression)
        let truncated = Array(payload.prefix(payload.count / 2))
        let outcome: BootError?
        do { _ = try PayloadDecompressor.decompress(truncated, as: compression, sizeHint: 0); outcome = nil } catch let failure { outcome = failure }
        guard case .decompressionFailed(let which, _)? = outcome else {
            Issue.record("truncated \(compression) accepted"); return
        }
        #expect(which == compression)
    }

    @Test("random corruption of valid images never traps")
    func fuzz() throws {
        var generator = SplitMix64(state: 0x5EED)
        let bzImage = TestImages.bzImage(payload: try TestImages.kernelCompress(TestImages.innerELF, .lz4))
        let memory = try TestImages.memory(64 << 20)
        var outcomes = (loaded: 0, refused: 0)
        for round in 0..<300 {
            var image = round % 2 == 0 ? Self.good : bzImage
            for _ in 0..<(1 + Int(generator.next() % 8)) {
                let index = Int(generator.next() % UInt64(round % 2 == 0 ? image.count : 0x300 + 0x400 + 64))
                image[min(index, image.count - 1)] = UInt8(truncatingIfNeeded: generator.next())
            }
            if generator.next() % 4 == 0 { image = Array(image.prefix(Int(generator.next() % UInt64(image.count)))) }
            if TestImages.loadError(TestImages.request(image), memory: memory) == nil { outcomes.loaded += 1 } else { outcomes.refused += 1 }
        }
        #expect(outcomes.loaded + outcomes.refused == 300 && outcomes.refused > 0)
    }
}

