import CLZ4
import CLZMA
import CZlib
import CZstd

/// Host-side decompression of a bzImage payload, identified by its magic bytes.
///
/// Output is capped (`limit`); every decoder streams into a bounded scratch buffer, so a hostile
/// payload can cost at most `limit` bytes of host memory plus the decoders' bounded state.
enum PayloadDecompressor {
    /// Hard ceiling on a decompressed kernel: far above any real vmlinux (~30-80 MB).
    static let hardLimit: Int = 512 << 20
    private static let chunkSize = 1 << 20
    /// The kernel's lz4 -l legacy format: blocks decompress to at most 8 MiB each.
    private static let lz4LegacyBlockSize = 8 << 20
    private static let lz4LegacyMagic: UInt32 = 0x184C_2102

    static func identify(_ payload: [UInt8]) -> Compression? {
        if payload.starts(with: [0x1F, 0x8B]) { return .gzip }
        if payload.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if payload.starts(with: [0x5D, 0x00, 0x00]) { return .lzma }
        if payload.starts(with: [0x02, 0x21, 0x4C, 0x18]) { return .lz4 }
        if payload.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        if payload.starts(with: [0x42, 0x5A, 0x68]) { return .bzip2 }   // "BZh"
        if payload.starts(with: [0x89, 0x4C, 0x5A, 0x4F]) { return .lzo }   // "\x89LZO"
        if ELFImage.isELF(payload) { return Compression.none }
        return nil
    }

    /// Decompresses `payload`. `sizeHint` (the LE32 the kernel build appends) only pre-sizes the output.
    static func decompress(_ payload: [UInt8], as compression: Compression, sizeHint: Int,
                           limit: Int = hardLimit) throws(BootError) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(min(max(sizeHint, 0), limit))
        switch compression {
        case .gzip: try inflate(payload, into: &output, limit: limit)
        case .xz, .lzma: try unxz(payload, legacyLZMA: compression == .lzma, into: &output, limit: limit)
        case .lz4: try unlz4Legacy(payload, into: &output, limit: limit)
        case .zstd: try unzstd(payload, into: &output, limit: limit)
        case .none: return payload
        case .bzip2, .lzo:
            throw .decompressionFailed(compression, "no host decompressor for \(compression.rawValue) in Vireo")
        }
        return output
    }

    /// Appends the first `count` scratch bytes, or returns the error if that would pass the limit.
    private static func append(_ scratch: [UInt8], count: Int, to output: inout [UInt8], limit: Int,
                               _ compression: Compression) -> BootError? {
        guard count <= limit - output.count else {
            return .decompressionFailed(compression, "output exceeds the \(limit >> 20) MiB limit")
        }
        output.append(contentsOf: scratch[0..<count])
        return nil
    }

    private static func inflate(_ payload: [UInt8], into output: inout [UInt8], limit: Int) throws(BootError) {
        var stream = z_stream()
        // 16 + MAX_WBITS: gzip wrapper only, as the kernel's gzip payload always has one.
        guard inflateInit2_(&stream, 16 + 15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .decompressionFailed(.gzip, "zlib initialisation failed")
        }
        defer { inflateEnd(&stream) }
        var scratch = [UInt8](repeating: 0, count: chunkSize)
        var status: Int32 = Z_OK
        let failure: BootError? = payload.withUnsafeBufferPointer { input -> BootError? in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
            stream.avail_in = UInt32(clamping: input.count)
            while status != Z_STREAM_END {
                let produced: Int = scratch.withUnsafeMutableBufferPointer { buffer in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = UInt32(buffer.count)
                    status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    return buffer.count - Int(stream.avail_out)
                }
                guard status == Z_OK || status == Z_STREAM_END || (status == Z_BUF_ERROR && produced > 0) else {
                    let why = status == Z_BUF_ERROR ? "payload is truncated" : "zlib error \(status)"
                    return .decompressionFailed(.gzip, stream.msg.map { String(cString: $0) } ?? why)
                }
                if let failure = append(scratch, count: produced, to: &output, limit: limit, .gzip) { return failure }
            }
            return nil
        }
        if let failure { throw failure }
    }

    private static func unxz(_ payload: [UInt8], legacyLZMA: Bool, into output: inout [UInt8],
                             limit: Int) throws(BootError) {
        let compression: Compression = legacyLZMA ? .lzma : .xz
        var stream = lzma_stream()
        // 256 MiB covers the kernel's dictionaries (xz: 32 MiB, lzma -9: 64 MiB) and bounds hostile headers.
        let memoryLimit: UInt64 = 256 << 20
        let started = legacyLZMA ? lzma_alone_decoder(&stream, memoryLimit)
                                 : lzma_stream_decoder(&stream, memoryLimit, 0)
        guard started == LZMA_OK else { throw .decompressionFailed(compression, "liblzma initialisation failed") }
        defer { lzma_end(&stream) }
        var scratch = [UInt8](repeating: 0, count: chunkSize)
        var status = LZMA_OK
        let failure: BootError? = payload.withUnsafeBufferPointer { input -> BootError? in
            stream.next_in = input.baseAddress
            stream.avail_in = input.count
            while status != LZMA_STREAM_END {
                // LZMA_FINISH: the whole input is present, so a truncated stream is an error, not a stall.
                let produced: Int = scratch.withUnsafeMutableBufferPointer { buffer in
                    stream.next_out = buffer.baseAddress
                    stream.avail_out = buffer.count
                    status = lzma_code(&stream, LZMA_FINISH)
                    return buffer.count - stream.avail_out
                }
                guard status == LZMA_OK || status == LZMA_STREAM_END else {
                    return .decompressionFailed(compression, lzmaReason(status))
                }
                if let failure = append(scratch, count: produced, to: &output, limit: limit, compression) { return failure }
            }
            return nil
        }
        if let failure { throw failure }
    }

    private static func lzmaReason(_ status: lzma_ret) -> String {
        switch status {
        case LZMA_DATA_ERROR: return "corrupt data"
        case LZMA_FORMAT_ERROR: return "not a valid stream header"
        case LZMA_BUF_ERROR: return "payload is truncated"
        case LZMA_MEMLIMIT_ERROR, LZMA_MEM_ERROR: return "stream needs more than 256 MiB of decoder memory"
        case LZMA_OPTIONS_ERROR: return "unsupported stream options"
        case LZMA_UNSUPPORTED_CHECK: return "unsupported integrity check"
        default: return "liblzma error \(status.rawValue)"
        }
    }

    /// The legacy lz4 format (lz4 -l, what the kernel build uses): magic, then blocks each preceded
    /// by their LE32 compressed size. The kernel build appends the LE32 uncompressed size, so four
    /// leftover bytes after the last block end the stream; a repeated magic starts a new frame.
    private static func unlz4Legacy(_ payload: [UInt8], into output: inout [UInt8], limit: Int) throws(BootError) {
        var cursor = 4
        var scratch = [UInt8](repeating: 0, count: lz4LegacyBlockSize)
        var blocks = 0
        while payload.count - cursor >= 4 {
            let blockSize = Int(payload.le(UInt32.self, at: cursor) ?? 0)
            if UInt32(blockSize) == lz4LegacyMagic { cursor += 4; continue }
            let remaining = payload.count - cursor - 4
            if remaining == 0, blocks > 0 { break }   // the appended uncompressed size
            guard blockSize > 0, blockSize <= remaining,
                  blockSize <= Int(LZ4_compressBound(Int32(lz4LegacyBlockSize))) else {
                throw .decompressionFailed(.lz4, "block \(blocks) claims \(blockSize) bytes but \(remaining) remain")
            }
            let start = cursor + 4
            let produced: Int32 = payload.withUnsafeBufferPointer { input in
                scratch.withUnsafeMutableBufferPointer { buffer in
                    input.baseAddress.map { base in
                        base.withMemoryRebound(to: CChar.self, capacity: input.count) { source in
                            buffer.baseAddress?.withMemoryRebound(to: CChar.self, capacity: buffer.count) { target in
                                LZ4_decompress_safe(source + start, target, Int32(blockSize), Int32(buffer.count))
                            } ?? -1
                        }
                    } ?? -1
                }
            }
            guard produced >= 0 else { throw .decompressionFailed(.lz4, "block \(blocks) is corrupt") }
            if let failure = append(scratch, count: Int(produced), to: &output, limit: limit, .lz4) { throw failure }
            cursor = start + blockSize
            blocks += 1
        }
        guard blocks > 0 else { throw .decompressionFailed(.lz4, "no compressed blocks after the magic") }
    }

    private static func unzstd(_ payload: [UInt8], into output: inout [UInt8], limit: Int) throws(BootError) {
        guard let context = ZSTD_createDCtx() else { throw .decompressionFailed(.zstd, "cannot create a context") }
        defer { ZSTD_freeDCtx(context) }
        // The kernel builds with zstd -22 --ultra (window 2^27); refuse larger windows from hostile input.
        _ = ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, 27)
        var scratch = [UInt8](repeating: 0, count: chunkSize)
        let failure: BootError? = payload.withUnsafeBytes { input -> BootError? in
            var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
            while true {
                var remainingHint = 0
                let produced: Int = scratch.withUnsafeMutableBytes { buffer in
                    var target = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
                    remainingHint = ZSTD_decompressStream(context, &target, &source)
                    return target.pos
                }
                if ZSTD_isError(remainingHint) != 0 {
                    return .decompressionFailed(.zstd, String(cString: ZSTD_getErrorName(remainingHint)))
                }
                if let failure = append(scratch, count: produced, to: &output, limit: limit, .zstd) { return failure }
                if remainingHint == 0 { return nil }   // frame complete; the appended size trails it
                if source.pos == source.size, produced == 0 {
                    return .decompressionFailed(.zstd, "payload is truncated")
                }
            }
        }
        if let failure { throw failure }
    }
}
