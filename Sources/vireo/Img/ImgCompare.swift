import ArgumentParser
import Storage

struct ImgCompare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare", abstract: "Compare the contents of two images (exit 0 identical, 1 different, 2 error).")

    @Option(name: .customShort("f"), help: "First image format.") var firstFormat: String?
    @Option(name: .customShort("F"), help: "Second image format.") var secondFormat: String?
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Flag(name: [.customShort("U"), .long], help: "Open read-only even while another process (a running VM) holds the image; its metadata may be in flux.") var forceShare = false
    @Argument(help: "First image.") var first: String
    @Argument(help: "Second image.") var second: String

    func run() throws {
        var mismatch: UInt64?
        do {
            let a = try ImgSupport.open(first, format: firstFormat, readOnly: true, forceShare: forceShare)
            let b = try ImgSupport.open(second, format: secondFormat, readOnly: true, forceShare: forceShare)
            if a.size != b.size && !quiet { print("Warning: Image size mismatch!") }
            mismatch = try ImageOperations.firstMismatch(a, b)
        } catch {
            ImgSupport.printError("vireo img: \(error)")
            throw ExitCode(2)
        }
        if let mismatch {
            if !quiet { print("Content mismatch at offset \(mismatch)!") }
            throw ExitCode(1)
        }
        if !quiet { print("Images are identical.") }
    }
}
