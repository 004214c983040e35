/// The compressed vmlinux inside a bzImage, located by payload_offset/payload_length (relative to
/// the protected-mode code) and decompressed on the host so the guest skips its own decompressor.
struct BzImagePayload {
    var compression: Compression
    var bytes: [UInt8]
    var elf: ELFImage

    /// Every failure here is recoverable (the caller falls back to the bzImage's own entry), so it
    /// returns the reason instead of throwing. With a `cache`, an earlier decompression of the same
    /// file is reused when it still checks out, and a fresh one is stored for the next boot.
    static func extract(_ file: [UInt8], header: SetupHeader, cache: (any BzImagePayloadCache)? = nil,
                        notes: inout [String]) -> Result<BzImagePayload, BootError> {
        guard let (offset, length) = header.payload else {
            return .failure(.badBzImage("boot protocol \(SetupHeader.versionString(header.version)) has no payload fields"))
        }
        let (start, overflow) = UInt64(header.setupSize).addingReportingOverflow(offset)
        guard !overflow, length >= 4, let range = file.checkedRange(offset: start, length: length) else {
            return .failure(.badBzImage("payload_offset \(hex(offset)) + payload_length \(length) lies outside the \(file.count)-byte file"))
        }
        let payload = Array(file[range])
        guard let compression = PayloadDecompressor.identify(payload) else {
            let magic = payload.prefix(4).map { String($0, radix: 16) }.joined(separator: " ")
            return .failure(.badBzImage("unknown payload magic \(magic)"))
        }
        // The kernel build appends the uncompressed size (LE32); trusted only to pre-size the buffer
        // and to check a cached entry's size against.
        let hint = Int(payload.le(UInt32.self, at: payload.count - 4) ?? 0)
        let limit = min(PayloadDecompressor.hardLimit, max(Int(clamping: header.initSize) * 2, 64 << 20))
        let clock = ContinuousClock()
        let started = clock.now
        let sizes = { (bytes: [UInt8]) in "\(compression.rawValue) (\(mib(UInt64(payload.count))) → \(mib(UInt64(bytes.count))))" }

        let key = cache?.key(for: file)
        if let cache, let key {
            switch cache.load(key, maximumSize: limit) {
            case .hit(let bytes):
                switch validate(bytes, compression: compression, expectedSize: hint) {
                case .success(let elf):
                    let elapsed = BootPlacement.milliseconds(clock.now - started)
                    // Worded to match "decompressed on host" too: the payload still was, on an earlier boot.
                    notes.append("bzImage payload \(sizes(bytes)) decompressed on host earlier, loaded from cache (\(key.label)) in \(elapsed) ms")
                    return .success(BzImagePayload(compression: compression, bytes: bytes, elf: elf))
                case .failure(let why):
                    notes.append("cached bzImage payload (\(key.label)) rejected: \(why); decompressing again")
                }
            case .unreadable(let why):
                notes.append("cached bzImage payload (\(key.label)) unreadable: \(why); decompressing again")
            case .miss:
                break
            }
        }

        let decompressionStarted = clock.now
        let bytes: [UInt8]
        do {
            bytes = try PayloadDecompressor.decompress(payload, as: compression, sizeHint: min(hint, limit), limit: limit)
        } catch {
            return .failure(error)
        }
        let elapsed = BootPlacement.milliseconds(clock.now - decompressionStarted)
        let elf: ELFImage
        switch validate(bytes, compression: compression, expectedSize: nil) {
        case .success(let parsed): elf = parsed
        case .failure(let why): return .failure(why)
        }
        var cacheNote = ""
        if let cache {
            if let key {
                if hint != 0 && hint != bytes.count {
                    // A cached copy could not be size-checked on the next boot, so none is kept.
                    cacheNote = " (not cached: \(bytes.count) bytes, not the \(hint) the bzImage records)"
                } else if let why = cache.store(bytes, for: key) {
                    cacheNote = " (not cached: \(why))"
                } else {
                    cacheNote = " (cached for next boot)"
                }
            } else {
                cacheNote = " (not cached: no key for the kernel file)"
            }
        }
        notes.append("bzImage payload \(sizes(bytes)) decompressed on host in \(elapsed) ms\(cacheNote)")
        return .success(BzImagePayload(compression: compression, bytes: bytes, elf: elf))
    }

    /// The checks a decompressed payload passes, whether fresh or read back from a cache: an
    /// x86-64 ELF that parses, of the size the bzImage records when it records one.
    static func validate(_ bytes: [UInt8], compression: Compression, expectedSize: Int?) -> Result<ELFImage, BootError> {
        if let expectedSize, expectedSize != 0, bytes.count != expectedSize {
            return .failure(.badBzImage("\(bytes.count) bytes where the bzImage records \(expectedSize)"))
        }
        guard ELFImage.isELF(bytes) else {
            return .failure(.badBzImage("\(compression.rawValue) payload does not decompress to an ELF image"))
        }
        let elf: ELFImage
        do {
            elf = try ELFImage(parsing: bytes)
        } catch {
            return .failure(error)
        }
        guard elf.is64Bit, elf.machine == ELFImage.machineX86_64 else {
            return .failure(.badBzImage("payload ELF is not x86-64"))
        }
        return .success(elf)
    }
}
