import Foundation
import Testing
@testable import Storage

/// Images made by the real qemu-img/qemu-io read back byte-identical to `qemu-img convert -O raw`.
@Suite struct InteropReadTests {
    static let layouts: [String] = [
        "compat=0.10,cluster_size=65536",
        "compat=1.1,cluster_size=512",
        "compat=1.1,cluster_size=4096,refcount_bits=1",
        "compat=1.1,cluster_size=65536,refcount_bits=64",
        "compat=1.1,cluster_size=2097152",
        "compat=1.1,cluster_size=65536,extended_l2=on",
        "compat=1.1,cluster_size=16384,extended_l2=on",
    ]

    func expectSameAsQemu(_ image: String, dir: TempDir) throws {
        let expectedPath = dir.file("expected.raw")
        try Qemu.img("convert", "-O", "raw", image, expectedPath)
        let expected = try fileBytes(expectedPath)
        let device = try DiskImage.open(path: image, readOnly: true)
        let actual = try readAll(device)
        #expect(actual.count == expected.count)
        #expect(firstDifference(actual, expected) == nil, "first difference at \(firstDifference(actual, expected) ?? -1) in \(image)")
    }

    @Test(arguments: layouts, [false, true])
    func convertedImagesReadIdentically(options: String, compressed: Bool) throws {
        let dir = try TempDir()
        let raw = dir.file("source.raw")
        try writePatternRaw(raw, size: 3 * 1024 * 1024 + 4096, seed: 7)
        let image = dir.file("image.qcow2")
        if compressed {
            try Qemu.img("convert", "-c", "-O", "qcow2", "-o", options, raw, image)
        } else {
            try Qemu.img("convert", "-O", "qcow2", "-o", options, raw, image)
        }
        // Zero clusters, discards and partial overwrites (subclusters with extended L2).
        try Qemu.io(image, "write -z 0 131072", "write -P 0x5a 200000 5000", "discard 1048576 65536",
                    "write -z 2097152 4096", "write -P 0x11 3145728 4096")
        try expectSameAsQemu(image, dir: dir)
    }

    /// compression_type=zstd (qcow2 v3): clusters qemu compressed with zstd read back identically,
    /// and clusters Vireo compresses into such an image are zstd too, which qemu reads and checks.
    @Test func zstdCompressedImagesReadAndWrite() throws {
        let dir = try TempDir()
        let raw = dir.file("source.raw")
        try writePatternRaw(raw, size: 2 * 1024 * 1024, seed: 11)
        let image = dir.file("zstd.qcow2")
        try Qemu.img("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=65536", raw, image)
        try Qemu.io(image, "write -P 0x5a 200000 5000", "write -z 1048576 65536")
        try expectSameAsQemu(image, dir: dir)

        // Compressed writes into the zstd image (convert -c's path) must stay zstd.
        let cluster = [UInt8](repeating: 0x3C, count: 65536)
        do {
            let qcow2 = try QCOW2Image(path: image, readOnly: false)
            try cluster.withUnsafeBytes { try qcow2.writeCompressed($0, at: 1_572_864) }
            try qcow2.flush()
        }
        let (status, report) = try Qemu.check(image)
        #expect(status == 0, "qemu-img check: \(report)")
        try expectSameAsQemu(image, dir: dir)
        let device = try DiskImage.open(path: image, readOnly: true)
        var back = [UInt8](repeating: 0, count: 65536)
        try back.withUnsafeMutableBytes { try device.read(into: $0, at: 1_572_864) }
        #expect(back == cluster)
    }

    @Test func backingChainsAndSnapshotsReadIdentically() throws {
        let dir = try TempDir()
        let raw = dir.file("base.raw")
        try writePatternRaw(raw, size: 2 * 1024 * 1024, seed: 9)
        let base = dir.file("base.qcow2")
        try Qemu.img("convert", "-O", "qcow2", "-o", "cluster_size=4096", raw, base)
        let middle = dir.file("middle.qcow2")
        try Qemu.img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", "cluster_size=65536", middle, "3M")
        try Qemu.io(middle, "write -P 0x33 100000 70000", "write -z 524288 65536")
        try Qemu.img("snapshot", "-c", "first", middle)
        try Qemu.io(middle, "write -P 0x44 110000 1000", "write -P 0x45 2621440 8192")
        let top = dir.file("top.qcow2")
        try Qemu.img("create", "-f", "qcow2", "-b", "middle.qcow2", "-F", "qcow2", "-o", "compat=0.10", top)
        try Qemu.io(top, "write -P 0x66 4096 512", "write -P 0x67 1500000 100000")
        // A raw backing file too.
        let overRaw = dir.file("over-raw.qcow2")
        try Qemu.img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", overRaw, "2M")
        try Qemu.io(overRaw, "write -P 0x77 65536 4096", "write -z 0 4096")
        try expectSameAsQemu(top, dir: dir)
        try expectSameAsQemu(middle, dir: dir)
        try expectSameAsQemu(overRaw, dir: dir)
    }
}
