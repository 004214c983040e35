import ArgumentParser
import Foundation
import Storage

struct ImgMap: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "map", abstract: "Show where an image's data lives.")

    @Option(name: .customShort("f"), help: "Image format.") var format: String?
    @Option(name: .long, help: "Output format: human or json.") var output = "human"
    @Flag(name: [.customShort("U"), .long], help: "Open read-only even while another process (a running VM) holds the image; its metadata may be in flux.") var forceShare = false
    @Argument(help: "Image file.") var filename: String

    func run() throws {
        try ImgSupport.run {
            let image = try ImgSupport.open(filename, format: format, readOnly: true, forceShare: forceShare)
            let extents = try ImageOperations.map(image)
            if output == "json" {
                let lines = extents.map { e -> String in
                    var line = "{ \"start\": \(e.start), \"length\": \(e.length), \"depth\": \(e.depth),"
                    line += " \"present\": \(e.present), \"zero\": \(e.zero), \"data\": \(e.data)"
                    if let offset = e.offset { line += ", \"offset\": \(offset)" }
                    return line + "}"
                }
                print("[" + lines.joined(separator: ",\n") + "]")
            } else {
                print("Offset          Length          Mapped to       File")
                let files = Self.chainFiles(filename)
                for e in extents where e.data {
                    guard let offset = e.offset else { continue }
                    let file = e.depth < files.count ? files[e.depth] : filename
                    print(String(format: "%#-16llx%#-16llx%#-16llx%@", e.start, e.length, offset, file))
                }
            }
        }
    }

    static func chainFiles(_ path: String) -> [String] {
        (try? ImageInfo.collectChain(path: path).map(\.filename)) ?? [path]
    }
}
