import Foundation
import Testing
@testable import Storage

/// Broken and malicious images fail with one typed error naming the problem: no crash, hang or huge allocation.
@Suite struct HostileImageTests {
    /// A small valid image (4 KiB clusters, some data) and its bytes.
    static func validImage(in dir: TempDir) throws -> (String, [UInt8]) {
        let path = dir.file("valid.qcow2")
        var options = QCOW2CreateOptions(size: 1 << 20)
        options.clusterSize = 4096
        try QCOW2Image.create(path: path, options: options)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            var random = TestRandom(state: 99)
            let data = random.bytes(40000)
            try data.withUnsafeBytes { try image.write($0, at: 5000) }
        }  // closing returns the unused reserved clusters
        return (path, try fileBytes(path))
    }

    static func mutated(_ bytes: [UInt8], in dir: TempDir, _ change: (inout [UInt8]) -> Void) throws -> String {
        var copy = bytes
        change(&copy)
        let path = dir.file("mutated-\(UUID().uuidString).qcow2")
        try Data(copy).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Opens and reads the first MiB; returns the error raised, if any.
    static func openAndRead(_ path: String, readOnly: Bool = true) -> Error? {
        do {
            let image = try QCOW2Image(path: path, readOnly: readOnly)
            var buffer = [UInt8](repeating: 0, count: Int(min(image.size, 1 << 20)))
            try buffer.withUnsafeMutableBytes { try image.read(into: $0, at: 0) }
            return nil
        } catch {
            return error
        }
    }

    func expectError(_ path: String, containing text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let error = Self.openAndRead(path)
        #expect(error is QCOW2Error || error is StorageError, "untyped or missing error: \(String(describing: error))",
                sourceLocation: sourceLocation)
        #expect("\(error.map { "\($0)" } ?? "no error")".contains(text), "\(String(describing: error))", sourceLocation: sourceLocation)
    }

    @Test func headerAndTableDamageIsNamed() throws {
        let dir = try TempDir()
        let (_, bytes) = try Self.validImage(in: dir)
        let l1Offset = Int(bytes.be64(40)), refcountTable = Int(bytes.be64(48))
        expectError(try Self.mutated(bytes, in: dir) { $0.removeLast($0.count - 50) }, containing: "too short")
        expectError(try Self.mutated(bytes, in: dir) { $0.removeLast($0.count - 6000) }, containing: "past the end of the file")
        expectError(try Self.mutated(bytes, in: dir) { $0[0] = 0x51; $0[3] = 0 }, containing: "not a qcow2 image")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE32(4, 4) }, containing: "version 4")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE32(20, 30) }, containing: "cluster_bits")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(40, 1 << 40) }, containing: "L1 table")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(40, 0) }, containing: "points into the image header")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(40, 4097) }, containing: "not cluster aligned")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(24, UInt64.max) }, containing: "exceeds")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE32(36, UInt32.max) }, containing: "exceeds 32 MiB")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE32(56, UInt32.max) }, containing: "exceeds 8 MiB")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE32(60, UInt32.max) }, containing: "snapshots exceed")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(72, 1 << 40) }, containing: "unknown incompatible feature")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE32(32, 1) }, containing: "encryption")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(48, UInt64(l1Offset)) }, containing: "overlaps")
        // Refcount "loops": a refcount block that is the refcount table itself, or the L1 table.
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(refcountTable, UInt64(refcountTable)) }, containing: "overlaps the refcount table")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(refcountTable, UInt64(l1Offset)) }, containing: "overlaps the L1 table")
    }

    @Test func mappingDamageIsNamedOnRead() throws {
        let dir = try TempDir()
        let (_, bytes) = try Self.validImage(in: dir)
        let l1Offset = Int(bytes.be64(40)), refcountTable = Int(bytes.be64(48))
        let l2Offset = Int(bytes.be64(l1Offset) & QCOW2Geometry.offsetMask)
        #expect(Self.openAndRead(try Self.mutated(bytes, in: dir) { $0.setBE64(l1Offset, 1 << 63) }) == nil)  // offset 0: unallocated
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(l1Offset, UInt64(refcountTable)) }, containing: "overlaps the refcount table")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(l1Offset, UInt64(l1Offset)) }, containing: "overlaps the L1 table")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(l1Offset, 1 << 45) }, containing: "past the end of the file")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(l2Offset + 8, 1 << 63 | 1 << 44) }, containing: "past the end of the file")
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(l2Offset + 8, 1 << 63 | 512) }, containing: "not cluster aligned")
        #expect(Self.openAndRead(try Self.mutated(bytes, in: dir) { $0.setBE64(l2Offset + 8, 1 << 63) }) == nil)
        // A compressed descriptor pointing at plain data: inflate must fail cleanly.
        let dataCluster = bytes.be64(l2Offset + 8) & QCOW2Geometry.offsetMask
        expectError(try Self.mutated(bytes, in: dir) { $0.setBE64(l2Offset + 8, 1 << 62 | 3 << 58 | dataCluster) },
                    containing: "compressed cluster")
    }

    @Test func backingLoopsAndDepthAreRefused() throws {
        let dir = try TempDir()
        func make(_ name: String, backing: String?) throws {
            var options = QCOW2CreateOptions(size: 1 << 20)
            options.backingFile = backing
            options.backingFormat = backing == nil ? nil : "qcow2"
            try QCOW2Image.create(path: dir.file(name), options: options)
        }
        try make("self.qcow2", backing: "self.qcow2")
        try make("a.qcow2", backing: "b.qcow2")
        try make("b.qcow2", backing: "a.qcow2")
        for name in ["self.qcow2", "a.qcow2"] {
            #expect(throws: QCOW2Error.self) { try QCOW2Image(path: dir.file(name), readOnly: true) }
            #expect("\(Self.openAndRead(dir.file(name)).map { "\($0)" } ?? "")".contains("backing file loop"))
        }
        try make("chain0.qcow2", backing: nil)
        for i in 1...70 { try make("chain\(i).qcow2", backing: "chain\(i - 1).qcow2") }
        #expect("\(Self.openAndRead(dir.file("chain70.qcow2")).map { "\($0)" } ?? "")".contains("deeper than 64"))
        #expect(Self.openAndRead(dir.file("chain60.qcow2")) == nil)
        try make("missing.qcow2", backing: "nowhere.qcow2")
        #expect("\(Self.openAndRead(dir.file("missing.qcow2")).map { "\($0)" } ?? "")".contains("does not exist"))
    }

    @Test func flagsAreHonoured() throws {
        let dir = try TempDir()
        let (_, bytes) = try Self.validImage(in: dir)
        let corrupt = try Self.mutated(bytes, in: dir) { $0.setBE64(72, QCOW2Header.Incompatible.corrupt) }
        #expect(Self.openAndRead(corrupt) == nil)
        #expect(Self.openAndRead(corrupt, readOnly: false) as? QCOW2Error == .markedCorrupt(path: corrupt))
        // Unknown autoclear bits are cleared by a writer, as the spec asks.
        let autoclear = try Self.mutated(bytes, in: dir) { $0.setBE64(88, 1 << 7 | 1) }
        _ = try QCOW2Image(path: autoclear, readOnly: false)
        #expect(try QCOW2Image(path: autoclear, readOnly: true).header.autoclearFeatures == 0)
        // Dirty (lazy refcounts) with a leaked cluster: a writer rebuilds refcounts before allocating.
        let refcountBlock = Int(bytes.be64(Int(bytes.be64(48))))
        let dirty = try Self.mutated(bytes, in: dir) {
            $0.setBE64(72, QCOW2Header.Incompatible.dirty)
            $0.setBE16(refcountBlock, 7)
        }
        _ = try QCOW2Image(path: dirty, readOnly: false)
        #expect(try QCOW2Image(path: dirty, readOnly: true).header.incompatibleFeatures == 0)
        #expect(try Qemu.check(dirty).0 == 0)
    }
}

/// `check` finds what qemu-img check finds, and `-r all` repairs refcount corruption so qemu agrees.
@Suite struct RepairTests {
    @Test func corruptRefcountsAreRepaired() throws {
        let dir = try TempDir()
        let path = dir.file("corrupt.qcow2")
        try Qemu.img("create", "-f", "qcow2", "-o", "cluster_size=4096", path, "4M")
        try Qemu.io(path, "write -P 0x3c 0 1M")
        // Zero the refcount of the first L2 table: referenced but "free" is a corruption (and OFLAG_COPIED).
        var bytes = try fileBytes(path)
        let l2Offset = bytes.be64(Int(bytes.be64(40))) & QCOW2Geometry.offsetMask
        let block = Int(bytes.be64(Int(bytes.be64(48))))
        bytes.setBE16(block + Int(l2Offset / 4096) * 2, 0)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(try Qemu.check(path).0 == 2)
        let found = try QCOW2Image.check(path: path)
        #expect(found.exitCode == 2 && found.messages.contains { $0.contains("refcount=0 reference=1") })
        let repaired = try QCOW2Image.check(path: path, repair: .all)
        #expect(repaired.corruptions == 0 && repaired.corruptionsFixed > 0)
        #expect(try Qemu.check(path).0 == 0)
        let raw = dir.file("view.raw")
        try Qemu.img("convert", "-O", "raw", path, raw)
        #expect(try fileBytes(raw).prefix(1 << 20).allSatisfy { $0 == 0x3c })
    }
}
