import Foundation
import ArgumentParser
import Storage

struct ImgCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check an image for consistency (exit 0 ok, 1 check failed, 2 corruptions, 3 leaks).")

    @Option(name: .customShort("f"), help: "Image format.") var format: String?
    @Option(name: .customShort("r"), help: "Repair: leaks or all.") var repair: String?
    @Option(name: .long, help: "Output format: human or json.") var output = "human"
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Flag(name: [.customShort("U"), .long], help: "Open read-only even while another process (a running VM) holds the image; its metadata may be in flux.") var forceShare = false
    @Argument(help: "Image file.") var filename: String

    func run() throws {
        var code: Int32 = 0
        try ImgSupport.run {
            let fmt = try ImgSupport.format(format) ?? DiskImage.probeFormat(path: filename)
            guard fmt == .qcow2 else {
                throw StorageError.invalidArgument("This image format does not support checks")
            }
            let mode: QCOW2RepairMode
            switch repair {
            case nil: mode = .none
            case "leaks": mode = .leaks
            case "all": mode = .all
            case let other?: throw StorageError.invalidArgument("invalid repair mode '\(other)' (leaks or all)")
            }
            let result = try QCOW2Image.check(path: filename, repair: mode, sharing: ImgSupport.sharing(forceShare))
            code = result.exitCode
            if output == "json" {
                let object: [String: Any] = [
                    "filename": filename, "format": "qcow2", "check-errors": result.corruptions,
                    "leaks": result.leaks, "corruptions": result.corruptions, "leaks-fixed": result.leaksFixed,
                    "corruptions-fixed": result.corruptionsFixed, "image-end-offset": result.imageEndOffset,
                    "total-clusters": result.totalClusters, "allocated-clusters": result.allocatedClusters,
                    "fragmented-clusters": result.fragmentedClusters, "compressed-clusters": result.compressedClusters,
                ]
                print(try ImageInfo.json(object))
            } else if !quiet {
                print(Self.report(result))
            }
        }
        if code != 0 { throw ExitCode(code) }
    }

    static func report(_ r: QCOW2CheckResult) -> String {
        var lines = r.messages
        if r.leaksFixed + r.corruptionsFixed > 0 {
            lines += ["The following inconsistencies were found and repaired:", "",
                      "    \(r.leaksFixed) leaked clusters", "    \(r.corruptionsFixed) corruptions", "",
                      "Double checking the fixed image now..."]
        }
        if r.corruptions == 0 && r.leaks == 0 { lines.append("No errors were found on the image.") }
        if r.corruptions > 0 {
            lines += ["", "\(r.corruptions) errors were found on the image.",
                      "Data may be corrupted, or further writes to the image may corrupt it."]
        }
        if r.leaks > 0 {
            lines += ["", "\(r.leaks) leaked clusters were found on the image.",
                      "This means waste of disk space, but no harm to data."]
        }
        if r.allocatedClusters > 0 && r.totalClusters > 0 {
            let pct = { (n: UInt64) in String(format: "%.2f", Double(n) * 100 / Double(r.totalClusters)) }
            lines.append("\(r.allocatedClusters)/\(r.totalClusters) = \(pct(r.allocatedClusters))% allocated, "
                         + "\(String(format: "%.2f", Double(r.fragmentedClusters) * 100 / Double(r.allocatedClusters)))% fragmented, "
                         + "\(String(format: "%.2f", Double(r.compressedClusters) * 100 / Double(r.allocatedClusters)))% compressed clusters")
        }
        lines.append("Image end offset: \(r.imageEndOffset)")
        return lines.joined(separator: "\n")
    }
}
