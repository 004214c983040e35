import ArgumentParser
import Storage

struct ImgCommit: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "commit", abstract: "Write an overlay's changes into its backing file.")

    @Option(name: .customShort("f"), help: "Image format (qcow2).") var format: String?
    @Flag(name: .customShort("d"), help: "Don't empty the image after committing.") var keep = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "Image file.") var filename: String

    func run() throws {
        try ImgSupport.run {
            // The top layer alone (its allocated data is all a commit reads), so that the backing
            // file is opened once, writable; both are closed before the top is emptied, since
            // each open holds its image locks (a second open in this process would conflict).
            try {
                let top = try QCOW2Image(path: filename, readOnly: true, openBacking: false)
                let header = top.header
                guard let name = header.backingFile else {
                    throw StorageError.invalidArgument("Image does not have a backing file")
                }
                let backingPath = DiskImage.resolveBackingPath(name, relativeTo: filename)
                let backing = try DiskImage.open(path: backingPath, format: try ImgSupport.format(header.backingFormat), readOnly: false)
                try ImageOperations.commit(top: top, into: backing)
            }()
            if !keep { try QCOW2Image.makeEmpty(path: filename) }
            if !quiet { print("Image committed.") }
        }
    }
}
