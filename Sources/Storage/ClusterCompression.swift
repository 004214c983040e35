import CZlib
import CZstd

/// Why a compressed cluster could not be inflated.
public struct InflateError: Error, Equatable, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// qcow2's two cluster compression types (header field compression_type).
enum ClusterCompression: UInt8 {
    case deflate = 0
    case zstd = 1

    /// Decompresses one cluster; `output` must come out completely filled.
    func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        switch self {
        case .deflate: try Inflater.inflate(input, into: output)
        case .zstd: try ZstdCluster.decompress(input, into: output)
        }
    }
}

/// zstd clusters as QEMU writes them: one frame per cluster, decoded by streaming until the
/// cluster is full (QEMU does the same, since the frame may be followed by padding).
enum ZstdCluster {
    static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard let context = ZSTD_createDCtx() else { throw InflateError(reason: "zstd could not initialise") }
        defer { ZSTD_freeDCtx(context) }
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var target = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        while target.pos < target.size {
            let result = ZSTD_decompressStream(context, &target, &source)
            if ZSTD_isError(result) != 0 {
                throw InflateError(reason: "invalid zstd data: \(String(cString: ZSTD_getErrorName(result)))")
            }
            // No progress possible: the input is used up before the cluster is complete.
            if source.pos == source.size && target.pos < target.size && result != 0 {
                throw InflateError(reason: "zstd stream ends early (\(target.size - target.pos) bytes of the cluster missing)")
            }
            if result == 0 && target.pos < target.size {
                throw InflateError(reason: "zstd frame ends \(target.size - target.pos) bytes short of the cluster")
            }
        }
    }

    /// Compresses one cluster; nil when it would not fit in `output`.
    static func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        let written = ZSTD_compress(output.baseAddress, output.count, input.baseAddress, input.count, 3)
        return ZSTD_isError(written) != 0 ? nil : written
    }
}

/// Raw deflate (RFC 1951) through zlib, with QEMU's parameters so compressed clusters are
/// interchangeable: qcow2 stores headerless streams made with a 4 KiB window (windowBits -12).
enum Inflater {
    /// Inflates `input` and requires it to fill `output` exactly (a compressed cluster always
    /// decompresses to one whole cluster; trailing input is padding, as QEMU allows).
    static func inflate(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        // zlib keeps a pointer back to its z_stream, so it lives at a fixed heap address.
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        defer { stream.deallocate() }
        // -15 reads every raw stream, including QEMU's -12 ones.
        guard inflateInit2_(stream, -15, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw InflateError(reason: "zlib could not initialise")
        }
        defer { inflateEnd(stream) }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        let result = CZlib.inflate(stream, Z_FINISH)
        // Same acceptance rule as QEMU's qcow2_decompress: the cluster must be complete.
        guard result == Z_STREAM_END || result == Z_BUF_ERROR || result == Z_OK, stream.pointee.avail_out == 0 else {
            if result == Z_DATA_ERROR, let message = stream.pointee.msg {
                throw InflateError(reason: "invalid deflate data: \(String(cString: message))")
            }
            throw InflateError(reason: "deflate stream ends early (\(stream.pointee.avail_out) bytes of the cluster missing)")
        }
    }
}

/// A reusable zlib deflate stream for `convert -c` (reset per cluster, no per-cluster setup).
final class Deflater {
    private let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    private let ready: Bool

    init() {
        stream.initialize(to: z_stream())
        ready = deflateInit2_(stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY,
                              ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
    }

    deinit {
        if ready { deflateEnd(stream) }
        stream.deallocate()
    }

    /// Compresses `input` into `output`; returns the stream length, or nil if it would not fit.
    func compress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int? {
        guard ready, deflateReset(stream) == Z_OK else { return nil }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_out = uInt(output.count)
        guard CZlib.deflate(stream, Z_FINISH) == Z_STREAM_END else { return nil }
        return output.count - Int(stream.pointee.avail_out)
    }
}
