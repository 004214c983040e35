import ArgumentParser
import Storage

struct ImgRebase: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rebase", abstract: "Change an image's backing file.")

    @Option(name: .customShort("f"), help: "Image format (qcow2).") var format: String?
    @Option(name: .customShort("b"), help: "New backing file (empty: none).") var backingFile: String
    @Option(name: .customShort("F"), help: "New backing file format.") var backingFormat: String?
    @Flag(name: .customShort("u"), help: "Unsafe: only rewrite the header, copy no data.") var unsafe = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "Image file.") var filename: String

    func run() throws {
        try ImgSupport.run {
            let newName: String? = backingFile.isEmpty ? nil : backingFile
            var newFormat = backingFormat
            if let newName {
                let path = DiskImage.resolveBackingPath(newName, relativeTo: filename)
                if newFormat == nil { newFormat = try DiskImage.probeFormat(path: path).rawValue }
                if !unsafe {
                    let top = try QCOW2Image(path: filename, readOnly: false)
                    let newBacking = try ImgSupport.open(path, format: newFormat, readOnly: true)
                    try ImageOperations.copyBackingDifferences(top: top, oldBacking: top.backingDevice, newBacking: newBacking)
                }
            } else if !unsafe {
                let top = try QCOW2Image(path: filename, readOnly: false)
                try ImageOperations.copyBackingDifferences(top: top, oldBacking: top.backingDevice, newBacking: nil)
            }
            try QCOW2Image.setBacking(path: filename, name: newName, format: newFormat)
        }
    }
}
