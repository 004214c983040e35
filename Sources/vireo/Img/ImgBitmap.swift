import ArgumentParser
import Storage

struct ImgBitmap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bitmap",
        abstract: "Add, remove, clear, enable or disable a persistent dirty bitmap of a qcow2 image (as qemu-img bitmap).",
        discussion: "The image must not be in use. '--add --disable' adds a disabled bitmap. Bitmaps are not kept up to date while a Vireo VM writes the image: its first write marks them stale for QEMU.")

    @Flag(help: "Add an empty bitmap (enabled, unless --disable is given too).") var add = false
    @Flag(help: "Remove the bitmap and free its clusters.") var remove = false
    @Flag(help: "Set every bit of the bitmap to zero.") var clear = false
    @Flag(help: "Let the bitmap track writes.") var enable = false
    @Flag(help: "Stop the bitmap tracking writes.") var disable = false
    @Option(name: .customShort("g"), help: "Granularity of a new bitmap (default: the cluster size, at least 4 KiB).") var granularity: String?
    @Option(name: .customShort("f"), help: "Image format (qcow2).") var format: String?
    @Argument(help: "Image file.") var filename: String
    @Argument(help: "Bitmap name.") var bitmap: String

    func validate() throws {
        let operations = [add, remove, clear, enable, disable].filter { $0 }.count
        guard operations == 1 || (operations == 2 && add && disable) else {
            throw ValidationError("give one of --add (optionally with --disable), --remove, --clear, --enable, --disable")
        }
        guard granularity == nil || add else { throw ValidationError("-g applies to --add only") }
        guard format == nil || format == "qcow2" else { throw ValidationError("bitmaps exist in qcow2 images only") }
    }

    func run() throws {
        try ImgSupport.run {
            let change: QCOW2BitmapChange
            if add {
                let bytes = try granularity.map { try ImgSupport.parseSize($0) }
                change = .add(name: bitmap, granularity: bytes, enabled: !disable)
            } else if remove {
                change = .remove(name: bitmap)
            } else if clear {
                change = .clear(name: bitmap)
            } else if enable {
                change = .enable(name: bitmap)
            } else {
                change = .disable(name: bitmap)
            }
            try QCOW2Image.changeBitmaps(path: filename, change)
        }
    }
}
