import Foundation
import Testing
@testable import Storage

/// Persistent dirty bitmaps made by QEMU (what incremental backups depend on): check counts their
/// clusters, repair keeps them, info lists them like qemu-img; a Vireo write that would make them
/// stale tells QEMU so; hostile directories are errors, not crashes.
@Suite struct QCOW2BitmapTests {
    /// A 64 MiB qcow2 with data and two bitmaps (64 KiB and 128 KiB granularity), both enabled,
    /// written after they were added so that their data clusters exist.
    static func imageWithBitmaps(_ dir: TempDir) throws -> String {
        let path = dir.file("bitmaps.qcow2")
        _ = try Qemu.run("qemu-img", ["create", "-q", "-f", "qcow2", path, "64M"])
        _ = try Qemu.run("qemu-io", ["-c", "write -P 0x11 0 1M", path])
        _ = try Qemu.run("qemu-img", ["bitmap", "--add", path, "b0"])
        _ = try Qemu.run("qemu-img", ["bitmap", "--add", "-g", "128K", path, "b1"])
        _ = try Qemu.run("qemu-io", ["-c", "write -P 0x22 4M 2M", path])
        return path
    }

    /// qemu-img info's JSON bitmaps, each as "name granularity flags" (keys in its order).
    static func qemuBitmaps(_ path: String) throws -> [String] {
        let (_, out, _) = try Qemu.run("qemu-img", ["info", "--output=json", path])
        return bitmapLines(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
    }

    static func bitmapLines(_ info: [String: Any]?) -> [String] {
        let data = (info?["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        return ((data?["bitmaps"] as? [[String: Any]]) ?? []).map { bitmap in
            "\(bitmap["name"] ?? "-") \(bitmap["granularity"] ?? "-") \((bitmap["flags"] as? [String]) ?? [])"
        }
    }

    @Test func checkCountsBitmapClustersAndRepairKeepsThem() throws {
        let dir = try TempDir()
        let path = try Self.imageWithBitmaps(dir)
        // Before: 5 false leaks (the directory, two tables, two data clusters).
        let result = try QCOW2Image.check(path: path)
        #expect(result.leaks == 0 && result.corruptions == 0, "\(result.messages)")
        let before = try fileBytes(path)
        let repaired = try QCOW2Image.check(path: path, repair: .all)
        #expect(repaired.leaksFixed == 0 && repaired.corruptionsFixed == 0)
        // Repair found nothing to do, so it changed nothing: not even the autoclear bit.
        #expect(try fileBytes(path) == before)
        let (status, out, _) = try Qemu.run("qemu-img", ["check", path], allowFailure: true)
        #expect(status == 0, "\(out)")
        #expect(try Self.qemuBitmaps(path) == ["b0 65536 [\"auto\"]", "b1 131072 [\"auto\"]"])
    }

    /// `vireo img bitmap`: what it adds QEMU lists, loads, tracks writes in and checks clean; what
    /// it clears, disables, enables and removes (its own bitmaps and QEMU's) QEMU sees the same way.
    @Test func bitmapsVireoChangesAreTheOnesQEMUSees() throws {
        let dir = try TempDir()
        let path = dir.file("edit.qcow2")
        _ = try Qemu.run("qemu-img", ["create", "-q", "-f", "qcow2", path, "64M"])
        _ = try Qemu.run("qemu-io", ["-c", "write -P 0x11 0 1M", path])
        try QCOW2Image.changeBitmaps(path: path, .add(name: "v0", granularity: nil, enabled: true))
        try QCOW2Image.changeBitmaps(path: path, .add(name: "v1", granularity: 128 << 10, enabled: false))
        #expect(try Self.qemuBitmaps(path) == ["v0 65536 [\"auto\"]", "v1 131072 []"])
        func qemuCheckIsClean() throws -> Bool {
            let (status, out, _) = try Qemu.run("qemu-img", ["check", path], allowFailure: true)
            if status != 0 { Issue.record("qemu-img check: \(out)") }
            return status == 0
        }
        #expect(try qemuCheckIsClean())

        // QEMU loads them, tracks a write in the enabled one and stores its data clusters on close.
        _ = try Qemu.run("qemu-io", ["-c", "write -P 0x22 4M 1M", path])
        func tableEntries(_ name: String) throws -> [UInt64] {
            let bitmap = try #require(try QCOW2Image.bitmaps(path: path).first { $0.name == name })
            let bytes = try fileBytes(path)
            return (0..<Int(bitmap.tableSize)).map { Array(bytes[Int(bitmap.tableOffset) + $0 * 8..<Int(bitmap.tableOffset) + $0 * 8 + 8]).be64(0) }
        }
        #expect(try tableEntries("v0").contains { $0 != 0 }, "QEMU tracked the write in v0")
        #expect(try tableEntries("v1").allSatisfy { $0 == 0 }, "v1 was disabled")
        let result = try QCOW2Image.check(path: path)
        #expect(result.leaks == 0 && result.corruptions == 0, "\(result.messages)")

        try QCOW2Image.changeBitmaps(path: path, .clear(name: "v0"))
        #expect(try tableEntries("v0").allSatisfy { $0 == 0 })
        try QCOW2Image.changeBitmaps(path: path, .disable(name: "v0"))
        try QCOW2Image.changeBitmaps(path: path, .enable(name: "v1"))
        #expect(try Self.qemuBitmaps(path) == ["v0 65536 []", "v1 131072 [\"auto\"]"])
        #expect(try qemuCheckIsClean())

        // Refusals change nothing.
        let before = try fileBytes(path)
        #expect(throws: QCOW2Error.self) { try QCOW2Image.changeBitmaps(path: path, .add(name: "v0", granularity: nil, enabled: true)) }
        #expect(throws: QCOW2Error.self) { try QCOW2Image.changeBitmaps(path: path, .add(name: "odd", granularity: 1000, enabled: true)) }
        #expect(throws: QCOW2Error.self) { try QCOW2Image.changeBitmaps(path: path, .remove(name: "nope")) }
        #expect(try fileBytes(path) == before)

        try QCOW2Image.changeBitmaps(path: path, .remove(name: "v0"))
        try QCOW2Image.changeBitmaps(path: path, .remove(name: "v1"))
        #expect(try Self.qemuBitmaps(path).isEmpty)
        #expect(try qemuCheckIsClean())
        let (_, map, _) = try Qemu.run("qemu-img", ["check", "--output=json", path])
        #expect(!map.contains("\"leaks\""), "\(map)")

        // A table entry pointing past the end of the file: remove and clear refuse, and free
        // nothing (freeing on a hostile entry's word could drop a cluster the guest's data uses).
        let hostile = try Self.imageWithBitmaps(dir)
        let b0 = try #require(try QCOW2Image.bitmaps(path: hostile).first { $0.name == "b0" })
        let file = try PosixFile(path: hostile, mode: .readWrite, sharing: .unlocked)
        try file.write(UInt64(0x0000_7FFF_FFFF_0000).bigEndianBytes, at: b0.tableOffset)
        try file.sync()
        let untouched = try fileBytes(hostile)
        #expect(throws: QCOW2Error.self) { try QCOW2Image.changeBitmaps(path: hostile, .remove(name: "b0")) }
        #expect(throws: QCOW2Error.self) { try QCOW2Image.changeBitmaps(path: hostile, .clear(name: "b0")) }
        #expect(try fileBytes(hostile) == untouched)

        // A bitmap QEMU made, removed by Vireo.
        let theirs = try Self.imageWithBitmaps(dir)
        try QCOW2Image.changeBitmaps(path: theirs, .remove(name: "b0"))
        #expect(try Self.qemuBitmaps(theirs) == ["b1 131072 [\"auto\"]"])
        let (status, out, _) = try Qemu.run("qemu-img", ["check", theirs], allowFailure: true)
        #expect(status == 0, "\(out)")
    }

    @Test func infoListsBitmapsAsQemuImgDoes() throws {
        let dir = try TempDir()
        let path = try Self.imageWithBitmaps(dir)
        let info = try ImageInfo.collect(path: path)
        #expect(info.bitmaps.map(\.name) == ["b0", "b1"])
        #expect(info.bitmaps.map(\.granularity) == [65536, 131072])
        #expect(info.bitmaps.map(\.flagNames) == [["auto"], ["auto"]])
        // Round-tripped through JSON text, as a script would read both.
        let text = try ImageInfo.json(info.jsonObject)
        let ours = Self.bitmapLines(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(ours.count == 2)
        #expect(ours == (try Self.qemuBitmaps(path)))
    }

    /// Vireo does not update bitmaps: a guest write clears the autoclear bit, so QEMU treats
    /// them as stale (its own words: "a program lacking bitmap support modified this file")
    /// instead of backing up from a bitmap that missed the write. Both tools then count the
    /// stale bitmaps' clusters as the same leaks.
    @Test func aWriteMarksTheBitmapsStaleForQEMU() throws {
        let dir = try TempDir()
        let path = try Self.imageWithBitmaps(dir)
        do {
            let image = try QCOW2Image(path: path, readOnly: false)
            let data = [UInt8](repeating: 0x33, count: 65536)
            try data.withUnsafeBytes { try image.write($0, at: 8 << 20) }
            try image.flush()
        }
        let (_, _, err) = try Qemu.run("qemu-img", ["info", path])
        #expect(err.contains("a program lacking bitmap support modified this file"), "\(err)")
        #expect(try Self.qemuBitmaps(path).isEmpty)
        #expect(try QCOW2Image.bitmaps(path: path).isEmpty)
        let ours = try QCOW2Image.check(path: path)
        let (status, out, _) = try Qemu.run("qemu-img", ["check", path], allowFailure: true)
        #expect(status == 3)
        #expect(out.contains("\(ours.leaks) leaked clusters were found"), "ours: \(ours.leaks), qemu-img: \(out)")
    }

    /// The directory comes from the file: every malformed field is a one-line error for info and
    /// a corruption for check, never a crash or a huge allocation.
    @Test(arguments: [
        (18, [0, 0] as [UInt8], "name of 0 bytes"),
        (16, [7], "has type 7"),
        (17, [40], "granularity bits 40"),
        (12, [0, 0, 0, 0x10], "reserved flags 0x10"),
        (8, [0, 0, 0, 0], "has a table of 0 entries"),
        (0, [0x7F, 0, 0, 0, 0, 0, 0, 0], "bitmap 'b0' table"),
    ])
    func aMalformedDirectoryIsReportedNotTrusted(field: Int, bytes: [UInt8], message: String) throws {
        let dir = try TempDir()
        let path = try Self.imageWithBitmaps(dir)
        let file = try PosixFile(path: path, mode: .readWrite, sharing: .unlocked)
        let header = try QCOW2Header.parse(try fileBytes(path).prefix(65536).map { $0 }, path: path)
        let directory = try #require(header.bitmaps).directoryOffset
        try file.write(bytes, at: directory + UInt64(field))
        try file.sync()
        #expect(throws: QCOW2Error.self) { _ = try ImageInfo.collect(path: path) }
        do {
            _ = try ImageInfo.collect(path: path)
        } catch {
            #expect("\(error)".contains(message), "\(error)")
        }
        let result = try QCOW2Image.check(path: path)
        #expect(result.corruptions > 0)
        #expect(result.messages.contains { $0.hasPrefix("ERROR bitmaps:") && $0.contains(message) }, "\(result.messages)")
    }

    @Test func dataFileRawWithoutADataFileIsRefused() throws {
        let dir = try TempDir()
        let path = dir.file("raw-bit.qcow2")
        try QCOW2Image.create(path: path, options: QCOW2CreateOptions(size: 1 << 20), overwrite: true)
        let file = try PosixFile(path: path, mode: .readWrite, sharing: .unlocked)
        try file.write(UInt64(2).bigEndianBytes, at: 88)
        try file.sync()
        #expect(throws: QCOW2Error.invalidHeader(path: path, reason: "data-file-raw is set, but the image has no external data file")) {
            _ = try QCOW2Image(path: path, readOnly: true)
        }
    }
}

/// Entries with reserved bits set are corruptions, reported in qemu-img check's words.
@Suite struct QCOW2ReservedBitsTests {
    @Test func reservedBitsInL1AndL2EntriesAreReportedAsQemuImgDoes() throws {
        let dir = try TempDir()
        let path = dir.file("reserved.qcow2")
        _ = try Qemu.run("qemu-img", ["create", "-q", "-f", "qcow2", path, "16M"])
        _ = try Qemu.run("qemu-io", ["-c", "write -P 1 0 128K", path])
        let header = try QCOW2Header.parse(Array(try fileBytes(path).prefix(65536)), path: path)
        do {
            let file = try PosixFile(path: path, mode: .readWrite, sharing: .unlocked)
            let bytes = try fileBytes(path)
            let l1Entry = bytes.be64(Int(header.l1TableOffset))
            let l2Offset = l1Entry & QCOW2Geometry.offsetMask
            let l2Entry = bytes.be64(Int(l2Offset))
            try file.write((l2Entry | 0x10).bigEndianBytes, at: l2Offset)                       // bit 4
            try file.write((l1Entry | 0x0100_0000_0000_0000).bigEndianBytes, at: header.l1TableOffset)  // bit 56
            try file.sync()
        }
        let ours = try QCOW2Image.check(path: path)
        let (status, _, err) = try Qemu.run("qemu-img", ["check", path], allowFailure: true)
        #expect(status == 2 && ours.exitCode == 2)
        let theirs = err.split(separator: "\n").filter { $0.hasPrefix("ERROR") }.map(String.init)
        #expect(theirs.count == 2)
        #expect(ours.messages == theirs, "qemu-img check: \(err)")
    }
}
