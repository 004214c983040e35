import ArgumentParser
import Foundation
import Storage

struct ImgInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show information about an image.")

    @Option(name: .customShort("f"), help: "Image format.") var format: String?
    @Option(name: .long, help: "Output format: human or json.") var output = "human"
    @Flag(name: .long, help: "Show every image of the backing chain.") var backingChain = false
    @Flag(name: [.customShort("U"), .long], help: "Open read-only even while another process (a running VM) holds the image; its metadata may be in flux.") var forceShare = false
    @Argument(help: "Image file.") var filename: String

    func run() throws {
        try ImgSupport.run {
            let chain = backingChain
                ? try ImageInfo.collectChain(path: filename, format: try ImgSupport.format(format), sharing: ImgSupport.sharing(forceShare))
                : [try ImageInfo.collect(path: filename, format: try ImgSupport.format(format), sharing: ImgSupport.sharing(forceShare))]
            switch output {
            case "json":
                print(try ImageInfo.json(backingChain ? chain.map(\.jsonObject) as Any : chain[0].jsonObject))
            case "human":
                print(chain.map(Self.human).joined(separator: "\n"))
            default:
                throw StorageError.invalidArgument("--output must be human or json")
            }
        }
    }

    static func human(_ info: ImageInfo) -> String {
        var lines = ["image: \(info.filename)", "file format: \(info.formatName)",
                     "virtual size: \(ImgSupport.humanSize(info.virtualSize)) (\(info.virtualSize) bytes)",
                     "disk size: \(ImgSupport.humanSize(info.actualSize))"]
        if let clusterSize = info.clusterSize { lines.append("cluster_size: \(clusterSize)") }
        if let backing = info.backingFilename {
            let full = info.fullBackingFilename ?? backing
            lines.append(full == backing ? "backing file: \(backing)" : "backing file: \(backing) (actual path: \(full))")
        }
        if let backingFormat = info.backingFormat { lines.append("backing file format: \(backingFormat)") }
        if !info.snapshots.isEmpty { lines += ImgSnapshot.table(info.snapshots) }
        if let header = info.header {
            lines.append("Format specific information:")
            lines.append("    compat: \(header.version == 2 ? "0.10" : "1.1")")
            lines.append("    compression type: \(header.compressionType == 1 ? "zstd" : "zlib")")
            if header.version == 3 {
                lines.append("    lazy refcounts: \(header.compatibleFeatures & QCOW2Header.Compatible.lazyRefcounts != 0)")
                if !info.bitmaps.isEmpty {
                    lines.append("    bitmaps:")
                    for (index, bitmap) in info.bitmaps.enumerated() {
                        lines.append("        [\(index)]:")
                        lines.append("            flags:")
                        for (flagIndex, flag) in bitmap.flagNames.enumerated() { lines.append("                [\(flagIndex)]: \(flag)") }
                        lines.append("            name: \(bitmap.name)")
                        lines.append("            granularity: \(bitmap.granularity)")
                    }
                }
            }
            lines.append("    refcount bits: \(header.refcountBits)")
            if header.version == 3 {
                lines.append("    corrupt: \(header.incompatibleFeatures & QCOW2Header.Incompatible.corrupt != 0)")
                lines.append("    extended l2: \(header.hasExtendedL2)")
            }
        }
        return lines.joined(separator: "\n")
    }
}
