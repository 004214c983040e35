import ArgumentParser
import Storage

struct ImgResize: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resize", abstract: "Change an image's virtual size.")

    @Option(name: .customShort("f"), help: "Image format.") var format: String?
    @Flag(name: .long, help: "Allow shrinking (data past the new end is lost).") var shrink = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "Image file.") var filename: String
    @Argument(help: "New size: N, +N or -N (with k/M/G/T suffixes).") var size: String

    func run() throws {
        try ImgSupport.run {
            let fmt = try ImgSupport.format(format) ?? DiskImage.probeFormat(path: filename)
            let current = try ImgSupport.open(filename, format: fmt.rawValue, readOnly: true).size
            let newSize: UInt64
            if size.hasPrefix("+") {
                let (sum, overflow) = current.addingReportingOverflow(try ImgSupport.parseSize(String(size.dropFirst())))
                guard !overflow else { throw StorageError.invalidArgument("size overflows") }
                newSize = sum
            } else if size.hasPrefix("-") {
                let delta = try ImgSupport.parseSize(String(size.dropFirst()))
                guard delta <= current else { throw StorageError.invalidArgument("new size would be negative") }
                newSize = current - delta
            } else {
                newSize = try ImgSupport.parseSize(size)
            }
            if newSize < current && !shrink {
                throw StorageError.invalidArgument("Use the --shrink option to perform a shrink operation.")
            }
            switch fmt {
            case .raw: try RawImage.resize(path: filename, to: newSize)
            case .qcow2: try QCOW2Image.resize(path: filename, to: newSize, allowShrink: shrink)
            }
            if !quiet { print("Image resized.") }
        }
    }
}
