import ArgumentParser
import Storage

struct ImgCreate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a new disk image.")

    @Option(name: .customShort("f"), help: "Image format (raw or qcow2).") var format = "raw"
    @Option(name: .customShort("b"), help: "Backing file.") var backingFile: String?
    @Option(name: .customShort("F"), help: "Backing file format.") var backingFormat: String?
    @Option(name: .customShort("o"), help: "Options: cluster_size, compat, lazy_refcounts, extended_l2, refcount_bits.")
    var options: [String] = []
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "Image file.") var filename: String
    @Argument(help: "Size (e.g. 20G); defaults to the backing file's size.") var size: String?

    func run() throws {
        try ImgSupport.run {
            let fmt = try ImgSupport.format(format) ?? .raw
            var bytes: UInt64
            if let size {
                bytes = try ImgSupport.parseSize(size)
            } else if let backingFile {
                let path = DiskImage.resolveBackingPath(backingFile, relativeTo: filename)
                bytes = try ImgSupport.open(path, format: backingFormat, readOnly: true).size
            } else {
                throw StorageError.invalidArgument("image size must be given")
            }
            let opts = try ImgSupport.parseOptions(options)
            switch fmt {
            case .raw:
                guard backingFile == nil else { throw StorageError.invalidArgument("raw images cannot have a backing file") }
                try RawImage.create(path: filename, size: bytes)
                if !quiet { print("Formatting '\(filename)', fmt=raw size=\(bytes)") }
            case .qcow2:
                var create = QCOW2CreateOptions(size: bytes)
                if let value = opts["cluster_size"] { create.clusterSize = try ImgSupport.parseSize(value) }
                if let value = opts["compat"] {
                    switch value {
                    case "0.10", "v2": create.version = 2
                    case "1.1", "v3": create.version = 3
                    default: throw StorageError.invalidArgument("invalid compat level '\(value)'")
                    }
                }
                if let value = opts["refcount_bits"] {
                    guard let bits = UInt64(value) else { throw StorageError.invalidArgument("invalid refcount_bits '\(value)'") }
                    create.refcountBits = bits
                }
                create.lazyRefcounts = opts["lazy_refcounts"] == "on"
                create.extendedL2 = opts["extended_l2"] == "on"
                create.backingFile = backingFile
                if let backingFile {
                    let path = DiskImage.resolveBackingPath(backingFile, relativeTo: filename)
                    create.backingFormat = try backingFormat ?? DiskImage.probeFormat(path: path).rawValue
                }
                try QCOW2Image.create(path: filename, options: create)
                if !quiet {
                    var line = "Formatting '\(filename)', fmt=qcow2 cluster_size=\(create.clusterSize)"
                    line += " extended_l2=\(create.extendedL2 ? "on" : "off") compression_type=zlib size=\(bytes)"
                    if let backingFile { line += " backing_file=\(backingFile) backing_fmt=\(create.backingFormat ?? "raw")" }
                    line += " lazy_refcounts=\(create.lazyRefcounts ? "on" : "off") refcount_bits=\(create.refcountBits)"
                    print(line)
                }
            }
        }
    }
}
