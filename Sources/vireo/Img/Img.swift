import ArgumentParser
import Foundation
import Storage
import VMContract

/// `vireo img`: qemu-img compatible image tools (flags, output and exit codes follow qemu-img).
struct Img: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "img",
        abstract: "Create, inspect and convert disk images (qcow2, raw), like qemu-img.",
        subcommands: [ImgCreate.self, ImgInfo.self, ImgConvert.self, ImgCheck.self, ImgResize.self, ImgMap.self,
                      ImgCompare.self, ImgRebase.self, ImgCommit.self, ImgSnapshot.self, ImgBitmap.self, ImgBench.self]
    )
}

/// Helpers shared by the img subcommands.
enum ImgSupport {
    /// Prints storage errors as one line (`vireo img: <problem>`) and exits 1, as qemu-img does.
    static func run(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let exit as ExitCode {
            throw exit
        } catch {
            printError("vireo img: \(error)")
            throw ExitCode(1)
        }
    }

    static func printError(_ message: String) {
        var stderr = StandardError()
        print(message, to: &stderr)
    }

    static func format(_ name: String?) throws -> ImageFormat? {
        guard let name else { return nil }
        guard let format = ImageFormat(rawValue: name) else {
            throw StorageError.invalidArgument("unknown image format '\(name)' (supported: raw, qcow2; to read from: vpc, vhdx, vmdk)")
        }
        return format
    }

    /// Parses qemu-img sizes: plain bytes or a k/M/G/T/P/E suffix (powers of 1024), fractions
    /// allowed ("1.5G"), through VMContract.ByteSize, the one size parser.
    static func parseSize(_ text: String) throws -> UInt64 {
        switch ByteSize.parse(text, fractions: true) {
        case .success(let bytes): return bytes
        case .failure(.tooLarge): throw StorageError.invalidArgument("size '\(text)' is too large")
        case .failure: throw StorageError.invalidArgument("invalid size '\(text)'")
        }
    }

    /// "-o key=value,key=value" as qemu-img takes it.
    static func parseOptions(_ list: [String]) throws -> [String: String] {
        var result: [String: String] = [:]
        for item in list.flatMap({ $0.split(separator: ",") }) {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { throw StorageError.invalidArgument("invalid option '\(item)' (expected key=value)") }
            result[String(parts[0])] = String(parts[1])
        }
        return result
    }

    /// Human sizes as qemu-img prints them ("1 GiB", "196 KiB", "1.5 MiB").
    static func humanSize(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(bytes) B" }
        let rounded = (value * 1000).rounded() / 1000
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(format3(rounded))
        return "\(text) \(units[unit])"
    }

    private static func format3(_ value: Double) -> String {
        var text = String(Int((value * 1000).rounded()))
        while text.count < 4 { text = "0" + text }
        let integer = text.dropLast(3), fraction = text.suffix(3)
        var trimmed = String(fraction)
        while trimmed.hasSuffix("0") { trimmed.removeLast() }
        return "\(integer).\(trimmed)"
    }

    /// Opens an image with its backing chain.
    /// Opens an image for the image tools: raw and qcow2, and for reading, the foreign formats
    /// Vireo converts from (VHD as `vpc`, VHDX as `vhdx`, single-file VMDK as `vmdk`), probed or named by -f.
    static func open(_ path: String, format: String?, readOnly: Bool, forceShare: Bool = false) throws -> any ExtentMapping {
        if readOnly, let name = format, ForeignImageFormat(rawValue: name) != nil {
            guard let (found, image) = try ForeignImage.open(path: path, sharing: sharing(forceShare)), found == name else {
                throw StorageError.invalidArgument("\(path) is not a \(name) image")
            }
            return image
        }
        do {
            return try DiskImage.open(path: path, format: try self.format(format), readOnly: readOnly, sharing: sharing(forceShare))
        } catch StorageError.foreignFormat(let foreignPath, let name) where readOnly && format == nil {
            guard let (_, image) = try ForeignImage.open(path: path, sharing: sharing(forceShare)) else {
                throw StorageError.foreignFormat(path: foreignPath, format: name)
            }
            return image
        }
    }

    /// `-U`/`--force-share`: read an image another process (a running VM) holds.
    static func sharing(_ forceShare: Bool) -> ImageSharing { forceShare ? .forceShare : .standard }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) {
        FileHandle.standardError.write(Data(string.utf8))
    }
}
