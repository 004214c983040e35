import ArgumentParser
import Foundation
import Storage

struct ImgConvert: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "convert", abstract: "Convert an image to another format.")

    @Option(name: .customShort("f"), help: "Source format.") var sourceFormat: String?
    @Option(name: .customShort("O"), help: "Output format (raw or qcow2).") var outputFormat = "raw"
    @Option(name: .customShort("o"), help: "Output options (as for create).") var options: [String] = []
    @Flag(name: .customShort("c"), help: "Compress clusters (qcow2 output).") var compress = false
    @Flag(name: .customShort("p"), help: "Show a progress bar.") var progress = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Flag(name: [.customShort("U"), .long], help: "Open read-only even while another process (a running VM) holds the image; its metadata may be in flux.") var forceShare = false
    @Argument(help: "Source image.") var source: String
    @Argument(help: "Output image.") var output: String

    func run() throws {
        try ImgSupport.run {
            let input = try ImgSupport.open(source, format: sourceFormat, readOnly: true, forceShare: forceShare)
            let format = try ImgSupport.format(outputFormat) ?? .raw
            if compress && format != .qcow2 { throw StorageError.invalidArgument("compression requires qcow2 output") }
            let destination: any BlockDevice
            switch format {
            case .raw:
                try RawImage.create(path: output, size: input.size)
                destination = try RawImage(path: output, readOnly: false)
            case .qcow2:
                let opts = try ImgSupport.parseOptions(options)
                var create = QCOW2CreateOptions(size: input.size)
                if let value = opts["cluster_size"] { create.clusterSize = try ImgSupport.parseSize(value) }
                if opts["compat"] == "0.10" || opts["compat"] == "v2" { create.version = 2 }
                create.extendedL2 = opts["extended_l2"] == "on"
                try QCOW2Image.create(path: output, options: create)
                let image = try QCOW2Image(path: output, readOnly: false)
                // Its own fresh file: made durable once, at the end, as qemu-img convert does.
                image.skipOrderingSyncs()
                destination = image
            }
            let bar = progress && !quiet ? ProgressBar() : nil
            try ImageOperations.convert(from: input, to: destination, compress: compress) { done, total in
                bar?.update(done: done, total: total)
            }
            bar?.finish()
        }
    }
}

/// qemu-img's "    (42.00/100%)" progress line, redrawn in place.
final class ProgressBar {
    private var lastPercent = -1.0

    func update(done: UInt64, total: UInt64) {
        let percent = total == 0 ? 100 : (Double(done) / Double(total) * 10000).rounded(.down) / 100
        guard percent != lastPercent else { return }
        lastPercent = percent
        let text = String(format: "    (%.2f/100%%)\r", percent)
        FileHandle.standardOutput.write(Data(text.utf8))
    }

    func finish() {
        update(done: 1, total: 1)
        FileHandle.standardOutput.write(Data("\n".utf8))
    }
}
