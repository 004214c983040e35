import Foundation
import Testing
import TestSupport
@testable import Storage

/// What users bring from Hyper-V/Virtual PC and VMware: VHD and single-file VMDK images that
/// qemu-img made in the test from the same data are read byte for byte as qemu-img reads them;
/// malformed ones are one-line errors; the formats Vireo does not read are named.
@Suite struct ForeignImageTests {
    /// 16 MiB with data at the start, a hole, and data at 10 MiB: sparse formats keep both kinds.
    static func sourceData(_ dir: TempDir) throws -> String {
        let path = dir.file("source.raw")
        var generator = SplitMix64(state: 0xF0E1)
        var bytes = [UInt8](repeating: 0, count: 16 << 20)
        bytes.replaceSubrange(0..<(3 << 20) + 123, with: generator.bytes((3 << 20) + 123))
        bytes.replaceSubrange((10 << 20)..<(12 << 20), with: generator.bytes(2 << 20))
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func readAll(_ image: any BlockDevice) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(image.size))
        // In odd-sized pieces, so reads cross block and grain boundaries.
        var at = 0
        while at < bytes.count {
            let count = min(777_777, bytes.count - at)
            try bytes.withUnsafeMutableBytes { try image.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[at..<at + count]), at: UInt64(at)) }
            at += count
        }
        return bytes
    }

    @Test(arguments: [("vpc", "dynamic"), ("vpc", "fixed"), ("vhdx", "dynamic"), ("vhdx", "fixed"),
                      ("vmdk", "monolithicSparse"), ("vmdk", "streamOptimized")])
    func readsWhatQemuImgMadeAsQemuImgReadsIt(format: String, subformat: String) throws {
        let dir = try TempDir()
        let source = try Self.sourceData(dir)
        let image = dir.file("image.\(format)"), reference = dir.file("reference.raw")
        _ = try Qemu.run("qemu-img", ["convert", "-f", "raw", "-O", format, "-o", "subformat=\(subformat)", source, image])
        _ = try Qemu.run("qemu-img", ["convert", "-f", format, "-O", "raw", image, reference])
        let opened = try #require(try ForeignImage.open(path: image))
        #expect(opened.format == format)
        #expect(try Self.readAll(opened.image) == (try fileBytes(reference)))

        // Through convert into qcow2: qemu-img compare agrees, and holes stay holes.
        let converted = dir.file("converted.qcow2")
        try QCOW2Image.create(path: converted, options: QCOW2CreateOptions(size: opened.image.size))
        try ImageOperations.convert(from: opened.image, to: try QCOW2Image(path: converted, readOnly: false))
        let (status, out, _) = try Qemu.run("qemu-img", ["compare", "-f", format, "-F", "qcow2", image, converted], allowFailure: true)
        #expect(status == 0, "\(out)")
        if subformat != "fixed" {
            let (_, map, _) = try Qemu.run("qemu-img", ["map", "--output=json", converted])
            #expect(map.contains("\"data\": false"), "the hole was filled: \(map)")
        }
    }

    /// info names the format and its size as qemu-img does (a fixed VHD is raw to both: its
    /// footer is at the end, and probing looks at the start).
    @Test(arguments: [("vpc", "dynamic"), ("vhdx", "dynamic"), ("vmdk", "monolithicSparse"), ("vmdk", "streamOptimized")])
    func infoNamesTheFormatAndSize(format: String, subformat: String) throws {
        let dir = try TempDir()
        let image = dir.file("image.\(format)")
        _ = try Qemu.run("qemu-img", ["create", "-q", "-f", format, "-o", "subformat=\(subformat)", image, "100M"])
        let info = try ImageInfo.collect(path: image)
        let (_, out, _) = try Qemu.run("qemu-img", ["info", "--output=json", image])
        let theirs = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
        #expect(info.formatName == format && theirs?["format"] as? String == format)
        #expect(info.virtualSize == (theirs?["virtual-size"] as? NSNumber)?.uint64Value)
    }

    @Test func formatsVireoDoesNotReadAreNamed() throws {
        let dir = try TempDir()
        let split = dir.file("split.vmdk")
        _ = try Qemu.run("qemu-img", ["create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", split, "16M"])
        #expect(throws: StorageError.foreignFormat(path: split, format: "VMDK descriptor (its data is in separate extent files)")) {
            _ = try ForeignImage.open(path: split)
        }
        #expect(try ForeignImage.open(path: try Self.sourceData(dir)) == nil)
    }

    /// Fields from the file drive every read: a table entry or directory past the end of the file,
    /// an impossible grain or block size, garbage where a compressed grain should be.
    @Test func malformedImagesAreOneLineErrors() throws {
        let dir = try TempDir()
        let source = try Self.sourceData(dir)
        func made(_ format: String, _ subformat: String) throws -> String {
            let path = dir.file("\(subformat).\(format)")
            _ = try Qemu.run("qemu-img", ["convert", "-f", "raw", "-O", format, "-o", "subformat=\(subformat)", source, path])
            return path
        }
        func patch(_ path: String, at offset: UInt64, _ bytes: [UInt8]) throws {
            let file = try PosixFile(path: path, mode: .readWrite, sharing: .unlocked)
            try file.write(bytes, at: offset)
            try file.sync()
        }
        func failure(_ path: String) -> String? {
            do {
                guard let opened = try ForeignImage.open(path: path) else { return "opened as raw or qcow2" }
                _ = try Self.readAll(opened.image)
                return nil
            } catch let error as StorageError {
                return "\(error)"
            } catch {
                return "untyped: \(error)"
            }
        }

        // VHD: the BAT's first entry points far past the end of the file.
        let vhd = try made("vpc", "dynamic")
        let vhdBytes = try fileBytes(vhd)
        let tableOffset = Array(vhdBytes[512..<1536]).be64(16)
        try patch(vhd, at: tableOffset, [0x7F, 0xFF, 0xFF, 0x00])
        #expect(failure(vhd)?.contains("corrupt vpc image: block 0 at sector") == true, "\(failure(vhd) ?? "read it")")

        // VHD: a block size that is not a power of two.
        let vhd2 = try made("vpc", "dynamic")
        try patch(vhd2, at: 512 + 32, [0, 0x1F, 0xFF, 0xFF])
        #expect(failure(vhd2)?.contains("block size 2097151 is not a power of two") == true, "\(failure(vhd2) ?? "read it")")

        // VMDK: a grain size of 3 sectors; a grain directory far past the end.
        let vmdk = try made("vmdk", "monolithicSparse")
        try patch(vmdk, at: 20, [3, 0, 0, 0, 0, 0, 0, 0])
        #expect(failure(vmdk)?.contains("grain size of 3 sectors") == true, "\(failure(vmdk) ?? "read it")")
        let vmdk2 = try made("vmdk", "monolithicSparse")
        try patch(vmdk2, at: 56, [0, 0, 0, 0, 0, 1, 0, 0])
        #expect(failure(vmdk2)?.contains("grain directory at offset") == true, "\(failure(vmdk2) ?? "read it")")

        // VHDX: both headers damaged; a BAT entry far past the end; a log left to replay; a parent.
        let vhdx = try made("vhdx", "dynamic")
        try patch(vhdx, at: (64 << 10) + 8, [0xAA])
        #expect(failure(vhdx) == nil, "one damaged header: the other one is used")
        try patch(vhdx, at: (128 << 10) + 8, [0xAA])
        #expect(failure(vhdx)?.contains("corrupt vhdx image: neither header is valid") == true, "\(failure(vhdx) ?? "read it")")
        let vhdxBAT = try made("vhdx", "dynamic")
        let batOffset = try VHDXProbe.regionOffset(vhdxBAT, VHDXImage.guid("2DC27766-F623-4200-9D64-115E9BFD4A08"))
        try patch(vhdxBAT, at: batOffset, [0x06, 0, 0xF0, 0xFF, 0xFF, 0, 0, 0])
        #expect(failure(vhdxBAT)?.contains("corrupt vhdx image: block 0 at offset") == true, "\(failure(vhdxBAT) ?? "read it")")
        let logged = try made("vhdx", "dynamic")
        try VHDXProbe.rewriteHeaders(logged) { $0.replaceSubrange(48..<64, with: [UInt8](repeating: 0x11, count: 16)) }
        #expect(failure(logged)?.contains("VHDX with writes still in its log") == true, "\(failure(logged) ?? "read it")")

        // streamOptimized: the first compressed grain's data overwritten with garbage.
        let stream = try made("vmdk", "streamOptimized")
        let streamBytes = try fileBytes(stream)
        // The first grain follows the header and the embedded descriptor: find its marker (LBA 0).
        let overhead = Array(streamBytes[0..<512]).le64(64) * 512
        try patch(stream, at: overhead + 12, [UInt8](repeating: 0xEE, count: 64))
        #expect(failure(stream)?.contains("does not inflate") == true, "\(failure(stream) ?? "read it")")
    }
}

/// Finds and rewrites a VHDX's structures for the malformed-image tests (checksums kept valid,
/// so the reader's own checks are what fails).
enum VHDXProbe {
    static func regionOffset(_ path: String, _ id: [UInt8]) throws -> UInt64 {
        let bytes = try fileBytes(path)
        let table = Array(bytes[(192 << 10)..<(256 << 10)])
        for index in 0..<Int(table.le32(8)) where Array(table[(16 + 32 * index)..<(32 + 32 * index)]) == id {
            return table.le64(32 + 32 * index)
        }
        throw StorageError.invalidArgument("no such region")
    }

    static func rewriteHeaders(_ path: String, _ change: (inout [UInt8]) -> Void) throws {
        let bytes = try fileBytes(path)
        let file = try PosixFile(path: path, mode: .readWrite, sharing: .unlocked)
        for offset in [64 << 10, 128 << 10] {
            var header = Array(bytes[offset..<(offset + 4096)])
            change(&header)
            header.replaceSubrange(4..<8, with: [0, 0, 0, 0])
            let crc = VHDXImage.crc32c(header)
            header.replaceSubrange(4..<8, with: [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)])
            try file.write(header, at: UInt64(offset))
        }
        try file.sync()
    }
}
