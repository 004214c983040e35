/// The compressed vmlinux inside a bzImage, located by payload_offset/payload_length (relative to
/// the protected-mode code) and decompressed on the host so the guest skips its own decompressor.
struct BzImagePayload {
    var compression: Compression
    var bytes: [UInt8]
    var elf: ELFImage

    /// Every failure here is recoverable (the caller falls back to the bzImage's own entry), so it
    /// returns the reason instead of throwing.
    static func extract(_ file: [UInt8], header: SetupHeader, notes: inout [String]) -> Result<BzImagePayload, BootError> {
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
        // The kernel build appends the uncompressed size (LE32); trusted only to pre-size the buffer.
        let hint = Int(payload.le(UInt32.self, at: payload.count - 4) ?? 0)
        let limit = min(PayloadDecompressor.hardLimit, max(Int(clamping: header.initSize) * 2, 64 << 20))
        let clock = ContinuousClock()
        let started = clock.now
        let bytes: [UInt8]
        do {
            bytes = try PayloadDecompressor.decompress(payload, as: compression, sizeHint: min(hint, limit), limit: limit)
        } catch {
            return .failure(error)
        }
        let elapsed = BootPlacement.milliseconds(clock.now - started)
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
        notes.append("bzImage payload \(compression.rawValue) (\(mib(UInt64(payload.count))) → \(mib(UInt64(bytes.count)))) decompressed on host in \(elapsed) ms")
        return .success(BzImagePayload(compression: compression, bytes: bytes, elf: elf))
    }
}
