import Foundation
import Testing
@testable import Storage

/// Images Vireo writes pass the real `qemu-img check` and read back (through qemu) as written.
@Suite struct WriteInteropTests {
    /// Applies random writes, zeroes and discards to `image` and to an in-memory mirror.
    static func randomWorkload(_ image: QCOW2Image, mirror: inout [UInt8], seed: UInt64, operations: Int, maxLength: Int) throws {
        var random = TestRandom(state: seed)
        for _ in 0..<operations {
            let length = Int(random.below(UInt64(maxLength))) + 1
            let offset = Int(random.below(UInt64(mirror.count - length)))
            switch random.below(10) {
            case 0:
                try image.writeZeroes(at: UInt64(offset), length: UInt64(length))
                mirror.replaceSubrange(offset..<offset + length, with: repeatElement(0, count: length))
            default:
                let data = random.bytes(length)
                try data.withUnsafeBytes { try image.write($0, at: UInt64(offset)) }
                mirror.replaceSubrange(offset..<offset + length, with: data)
            }
        }
        try image.flush()
    }

    func expectQemuAgrees(_ path: String, mirror: [UInt8], dir: TempDir) throws {
        let (status, output) = try Qemu.check(path)
        #expect(status == 0, "qemu-img check: \(output)")
        let raw = dir.file("qemu-view.raw")
        try Qemu.img("convert", "-O", "raw", path, raw)
        let viaQemu = try fileBytes(raw)
        #expect(firstDifference(viaQemu, mirror) == nil, "qemu reads differently at \(firstDifference(viaQemu, mirror) ?? -1)")
    }

    static let layouts: [(version: UInt32, cluster: UInt64, refcountBits: UInt64, extendedL2: Bool)] = [
        (2, 65536, 16, false), (3, 512, 16, false), (3, 4096, 1, false), (3, 65536, 64, false),
        (3, 2 << 20, 16, false), (3, 65536, 16, true),
    ]

    @Test(arguments: 0..<layouts.count)
    func randomWritesPassQemuCheck(layoutIndex: Int) throws {
        let layout = Self.layouts[layoutIndex]
        let dir = try TempDir()
        let path = dir.file("written.qcow2")
        var options = QCOW2CreateOptions(size: 5 * 1024 * 1024 + 512)
        options.version = layout.version
        options.clusterSize = layout.cluster
        options.refcountBits = layout.refcountBits
        options.extendedL2 = layout.extendedL2
        try QCOW2Image.create(path: path, options: options)
        var mirror = [UInt8](repeating: 0, count: Int(options.size))
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            try Self.randomWorkload(image, mirror: &mirror, seed: UInt64(layoutIndex) + 1, operations: 150, maxLength: 200_000)
            #expect(try readAll(image) == mirror)
        }
        try expectQemuAgrees(path, mirror: mirror, dir: dir)
        #expect(try QCOW2Image.check(path: path).exitCode == 0)
    }

    @Test func refcountTableGrowsWithSmallClusters() throws {
        let dir = try TempDir()
        let path = dir.file("grow.qcow2")
        var options = QCOW2CreateOptions(size: 24 << 20)
        options.clusterSize = 512
        try QCOW2Image.create(path: path, options: options)
        // Unlocked: a lock held here could outlive this line in a child a parallel test forks
        // (until its exec closes the descriptor) and refuse the writer below.
        let before = try QCOW2Image(path: path, readOnly: true, sharing: .unlocked).header.refcountTableClusters
        var mirror = [UInt8](repeating: 0, count: Int(options.size))
        var random = TestRandom(state: 3)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            for chunk in 0..<20 {
                let data = random.bytes(1 << 20)
                try data.withUnsafeBytes { try image.write($0, at: UInt64(chunk) << 20) }
                mirror.replaceSubrange(chunk << 20..<(chunk + 1) << 20, with: data)
            }
            try image.flush()
        }
        #expect(try QCOW2Image(path: path, readOnly: true).header.refcountTableClusters > before)
        try expectQemuAgrees(path, mirror: mirror, dir: dir)
    }

    @Test func overlayWritesCopyPartialClustersFromBacking() throws {
        let dir = try TempDir()
        let raw = dir.file("base.raw")
        try writePatternRaw(raw, size: 4 << 20, seed: 11)
        try Qemu.img("convert", "-O", "qcow2", "-c", raw, dir.file("base.qcow2"))
        let overlay = dir.file("overlay.qcow2")
        var options = QCOW2CreateOptions(size: 5 << 20)  // larger than its backing: the tail reads zero
        options.backingFile = "base.qcow2"
        options.backingFormat = "qcow2"
        options.clusterSize = 65536
        try QCOW2Image.create(path: overlay, options: options)
        var mirror = try fileBytes(raw) + [UInt8](repeating: 0, count: 1 << 20)
        do {
            let image = try QCOW2Image(path: overlay, readOnly: false)
            try Self.randomWorkload(image, mirror: &mirror, seed: 5, operations: 80, maxLength: 9000)
        }
        try expectQemuAgrees(overlay, mirror: mirror, dir: dir)
        // The backing file is untouched.
        let baseView = dir.file("base-view.raw")
        try Qemu.img("convert", "-O", "raw", dir.file("base.qcow2"), baseView)
        #expect(try fileBytes(baseView) == fileBytes(raw))
    }

    @Test func writesIntoQemuCompressedAndSnapshottedImages() throws {
        let dir = try TempDir()
        let raw = dir.file("source.raw")
        try writePatternRaw(raw, size: 3 << 20, seed: 13)
        let path = dir.file("snap.qcow2")
        try Qemu.img("convert", "-c", "-O", "qcow2", raw, path)
        try Qemu.img("snapshot", "-c", "before", path)
        var mirror = try fileBytes(raw)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            try Self.randomWorkload(image, mirror: &mirror, seed: 17, operations: 60, maxLength: 100_000)
        }
        try expectQemuAgrees(path, mirror: mirror, dir: dir)
        try Qemu.img("snapshot", "-a", "before", path)
        try expectQemuAgrees(path, mirror: try fileBytes(raw), dir: dir)
    }

    @Test func vireoSnapshotsAreVisibleToQemu() throws {
        let dir = try TempDir()
        let path = dir.file("snapshots.qcow2")
        try QCOW2Image.create(path: path, options: QCOW2CreateOptions(size: 2 << 20))
        var mirror = [UInt8](repeating: 0, count: 2 << 20)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            try Self.randomWorkload(image, mirror: &mirror, seed: 19, operations: 30, maxLength: 70_000)
        }
        let saved = mirror
        try QCOW2Image.createSnapshot(path: path, name: "one")
        try expectQemuAgrees(path, mirror: mirror, dir: dir)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            try Self.randomWorkload(image, mirror: &mirror, seed: 23, operations: 30, maxLength: 70_000)
        }
        try expectQemuAgrees(path, mirror: mirror, dir: dir)
        let (_, listing, _) = try Qemu.run("qemu-img", ["snapshot", "-l", path])
        #expect(listing.contains("one"))
        try QCOW2Image.applySnapshot(path: path, name: "one")
        try expectQemuAgrees(path, mirror: saved, dir: dir)
        try QCOW2Image.deleteSnapshot(path: path, name: "one")
        try expectQemuAgrees(path, mirror: saved, dir: dir)
        #expect(try QCOW2Image.snapshots(path: path).isEmpty)
    }

    @Test func resizeGrowsAndShrinks() throws {
        let dir = try TempDir()
        let path = dir.file("resize.qcow2")
        var options = QCOW2CreateOptions(size: 1 << 20)
        options.clusterSize = 4096  // 512 L2 entries per table: growing to 8 MiB needs a larger L1
        try QCOW2Image.create(path: path, options: options)
        var mirror = [UInt8](repeating: 0, count: 1 << 20)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            try Self.randomWorkload(image, mirror: &mirror, seed: 29, operations: 20, maxLength: 50_000)
        }
        try QCOW2Image.resize(path: path, to: 8 << 20)
        mirror += [UInt8](repeating: 0, count: 7 << 20)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            let tail = [UInt8](repeating: 0xEE, count: 10000)
            try tail.withUnsafeBytes { try image.write($0, at: (8 << 20) - 10000) }
            mirror.replaceSubrange((8 << 20) - 10000..<(8 << 20), with: tail)
        }
        try expectQemuAgrees(path, mirror: mirror, dir: dir)
        #expect(throws: QCOW2Error.self) { try QCOW2Image.resize(path: path, to: 1 << 20) }
        try QCOW2Image.resize(path: path, to: 301_056, allowShrink: true)  // sector multiple, mid-cluster
        try expectQemuAgrees(path, mirror: Array(mirror[0..<301_056]), dir: dir)
    }

    @Test func compressedConvertIsReadByQemu() throws {
        let dir = try TempDir()
        let raw = dir.file("source.raw")
        try writePatternRaw(raw, size: 3 << 20, seed: 31)
        for cluster: UInt64 in [4096, 65536] {
            let path = dir.file("compressed-\(cluster).qcow2")
            let source = try RawImage(path: raw, readOnly: true)
            var options = QCOW2CreateOptions(size: source.size)
            options.clusterSize = cluster
            try QCOW2Image.create(path: path, options: options)
            try ImageOperations.convert(from: source, to: try QCOW2Image(path: path, readOnly: false), compress: true)
            try expectQemuAgrees(path, mirror: try fileBytes(raw), dir: dir)
            let (_, info, _) = try Qemu.run("qemu-img", ["check", path])
            #expect(info.contains("compressed clusters"))
            #expect(try QCOW2Image(path: path, readOnly: true).allocatedBytes < source.size)
        }
    }
}

/// Safe rebase keeps the guest-visible content while switching backing files; commit empties the overlay.
@Suite struct RebaseCommitTests {
    @Test func safeRebaseKeepsContent() throws {
        let dir = try TempDir()
        try writePatternRaw(dir.file("old.raw"), size: 2 << 20, seed: 51)
        try writePatternRaw(dir.file("new.raw"), size: 2 << 20, seed: 52)
        let overlay = dir.file("overlay.qcow2")
        var options = QCOW2CreateOptions(size: 2 << 20)
        options.backingFile = "old.raw"
        options.backingFormat = "raw"
        try QCOW2Image.create(path: overlay, options: options)
        try Qemu.io(overlay, "write -P 0x99 300000 100000")
        let before = try readAll(try DiskImage.open(path: overlay, readOnly: true))
        do {
            let top = try QCOW2Image(path: overlay, readOnly: false)
            let newBacking = try RawImage(path: dir.file("new.raw"), readOnly: true)
            try ImageOperations.copyBackingDifferences(top: top, oldBacking: top.backingDevice, newBacking: newBacking)
        }
        try QCOW2Image.setBacking(path: overlay, name: "new.raw", format: "raw")
        let (_, info, _) = try Qemu.run("qemu-img", ["info", overlay])
        #expect(info.contains("backing file: new.raw"))
        #expect(try Qemu.check(overlay).0 == 0)
        let raw = dir.file("view.raw")
        try Qemu.img("convert", "-O", "raw", overlay, raw)
        #expect(try fileBytes(raw) == before)
    }

    @Test func commitWritesOverlayIntoBacking() throws {
        let dir = try TempDir()
        try Qemu.img("create", "-f", "qcow2", dir.file("base.qcow2"), "4M")
        try Qemu.io(dir.file("base.qcow2"), "write -P 0x10 0 4M")
        var options = QCOW2CreateOptions(size: 4 << 20)
        options.backingFile = "base.qcow2"
        options.backingFormat = "qcow2"
        let overlay = dir.file("overlay.qcow2")
        try QCOW2Image.create(path: overlay, options: options)
        var mirror = [UInt8](repeating: 0x10, count: 4 << 20)
        do {
            let image = try QCOW2Image(path: overlay, readOnly: false)
            try WriteInteropTests.randomWorkload(image, mirror: &mirror, seed: 53, operations: 40, maxLength: 100_000)
        }
        // The top layer alone, as `vireo img commit` opens it: with its backing chain it would
        // hold the base open for reading, which refuses the writer below (image locks).
        do {
            let top = try QCOW2Image(path: overlay, readOnly: true, openBacking: false)
            try ImageOperations.commit(top: top, into: try QCOW2Image(path: dir.file("base.qcow2"), readOnly: false))
        }
        try QCOW2Image.makeEmpty(path: overlay)
        #expect(try Qemu.check(dir.file("base.qcow2")).0 == 0)
        #expect(try Qemu.check(overlay).0 == 0)
        #expect(try readAll(try QCOW2Image(path: dir.file("base.qcow2"), readOnly: true)) == mirror)
        #expect(try ImageOperations.map(try QCOW2Image(path: overlay, readOnly: true)).allSatisfy { $0.depth == 1 })
    }
}

/// The deflate encoder's output decodes with our inflater and with qemu (through compressed convert above).
@Suite struct DeflateRoundTripTests {
    @Test(arguments: [512, 4096, 65536, 2 << 20])
    func roundTrip(size: Int) throws {
        var random = TestRandom(state: UInt64(size))
        var input = [UInt8](repeating: 0, count: size)
        for i in 0..<size { input[i] = i % 3000 < 1000 ? UInt8(truncatingIfNeeded: random.next() & 3) : UInt8(i / 700 % 250) }
        var output = [UInt8](repeating: 0, count: size)
        var decoded = [UInt8](repeating: 0xFF, count: size)
        var deflater = Deflater()
        let length = try #require(input.withUnsafeBytes { i in output.withUnsafeMutableBytes { deflater.compress(i, into: $0) } })
        #expect(length < size * 3 / 4)
        try output.withUnsafeBytes { o in
            try decoded.withUnsafeMutableBytes { try Inflater.inflate(UnsafeRawBufferPointer(rebasing: o[0..<length]), into: $0) }
        }
        #expect(decoded == input)
        // A truncated stream is an error, not a crash.
        #expect(throws: InflateError.self) {
            try output.withUnsafeBytes { o in
                try decoded.withUnsafeMutableBytes { try Inflater.inflate(UnsafeRawBufferPointer(rebasing: o[0..<length / 2]), into: $0) }
            }
        }
    }
}

/// Lazy refcounts: the dirty bit guards unflushed allocations against power loss, and is cleared by flush.
@Suite struct LazyRefcountTests {
    @Test func dirtyBitSpansUnflushedAllocations() throws {
        let dir = try TempDir()
        let path = dir.file("lazy.qcow2")
        var options = QCOW2CreateOptions(size: 4 << 20)
        options.lazyRefcounts = true
        try QCOW2Image.create(path: path, options: options)
        let onDisk = { try fileBytes(path).be64(72) & QCOW2Header.Incompatible.dirty != 0 }
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            let data = [UInt8](repeating: 0x5e, count: 200_000)
            try data.withUnsafeBytes { try image.write($0, at: 12345) }
            #expect(try onDisk())
            let (_, info, _) = try Qemu.run("qemu-img", ["info", "--output", "json", "-U", path])
            #expect(info.contains("\"dirty-flag\": true"))
            try image.flush()
            #expect(try !onDisk())
        }
        #expect(try Qemu.check(path).0 == 0)
    }
}
