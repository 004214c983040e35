import ArgumentParser
import Foundation
import Storage

/// `img bench`: qemu-img bench's access pattern (fixed-size requests, offset += step, wrapping), run
/// synchronously through the Storage module so the two tools can be compared on the same file.
struct ImgBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Measure read/write request throughput.")

    @Option(name: .customShort("c"), help: "Number of requests.") var count = 75000
    @Option(name: .customShort("s"), help: "Request size.") var bufferSize = "4096"
    @Option(name: .customShort("S"), help: "Step between request offsets (default: request size).") var step: String?
    @Option(name: .customShort("o"), help: "Starting offset.") var offset = "0"
    @Option(name: .customShort("f"), help: "Image format.") var format: String?
    @Option(name: .customShort("d"), help: "Queue depth (accepted for qemu-img compatibility; requests are synchronous).")
    var depth = 1
    @Option(name: .customShort("t"), help: "Cache mode (accepted for qemu-img compatibility; the page cache is used).")
    var cache = "writeback"
    @Option(name: .long, help: "Write pattern byte.") var pattern = 0xA5
    @Option(name: .long, help: "Flush after this many write requests (0: only at the end).") var flushInterval = 0
    @Flag(name: .customShort("w"), help: "Write instead of read.") var write = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "Image file.") var filename: String

    func run() throws {
        try ImgSupport.run {
            let image = try ImgSupport.open(filename, format: format, readOnly: !write)
            let size = Int(try ImgSupport.parseSize(bufferSize))
            let stepBytes = try step.map(ImgSupport.parseSize) ?? UInt64(size)
            var position = try ImgSupport.parseSize(offset)
            guard size > 0, UInt64(size) <= image.size else { throw StorageError.invalidArgument("invalid request size") }
            if !quiet {
                print("Sending \(count) \(write ? "write" : "read") requests, \(size) bytes each, \(depth) in parallel "
                      + "(starting at offset \(position), step size \(stepBytes))")
            }
            var buffer = [UInt8](repeating: UInt8(truncatingIfNeeded: pattern), count: size)
            let start = DispatchTime.now()
            try buffer.withUnsafeMutableBytes { raw in
                for request in 0..<count {
                    if write {
                        try image.write(UnsafeRawBufferPointer(raw), at: position)
                        if flushInterval > 0 && (request + 1) % flushInterval == 0 { try image.flush() }
                    } else {
                        try image.read(into: raw, at: position)
                    }
                    position += stepBytes
                    // qemu-img bench wraps the same way: keep every request inside the image.
                    position = image.size <= UInt64(size) ? 0 : position % (image.size - UInt64(size))
                }
                if write { try image.flush() }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            if !quiet { print(String(format: "Run completed in %.3f seconds.", seconds)) }
        }
    }
}
