import Foundation
import Testing
@testable import Storage

/// Runs the built `vireo` binary (VIREO_BIN overrides where it is) against qemu-img.
@Suite struct CommandLineTests {
    static func vireoPath() throws -> String {
        if let override = ProcessInfo.processInfo.environment["VIREO_BIN"] { return override }
        let testBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        if directory.lastPathComponent.hasSuffix(".xctest") { directory.deleteLastPathComponent() }
        return directory.appendingPathComponent("vireo").path
    }

    func vireo(_ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        let path = try Self.vireoPath()
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw Qemu.Missing(tool: "vireo executable at \(path) (build the vireo product or set VIREO_BIN)")
        }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func imgCommandsInteroperateWithQemuImg() throws {
        let dir = try TempDir()
        let (helpStatus, help) = try vireo(["img", "--help"])
        try #require(helpStatus == 0 && help.contains("snapshot") && help.contains("convert"),
                     "`vireo img` is not registered (add Img.self to Vireo's subcommands): \(help)")
        let raw = dir.file("source.raw")
        try writePatternRaw(raw, size: 2 << 20, seed: 41)
        let image = dir.file("image.qcow2")
        #expect(try vireo(["img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw, image]).0 == 0)
        #expect(try Qemu.check(image).0 == 0)
        #expect(try Qemu.run("qemu-img", ["compare", raw, image], allowFailure: true).0 == 0)
        #expect(try vireo(["img", "compare", raw, image]) == (0, "Images are identical.\n"))
        let overlay = dir.file("overlay.qcow2")
        #expect(try vireo(["img", "create", "-q", "-f", "qcow2", "-b", image, "-F", "qcow2", overlay]).0 == 0)
        try Qemu.io(overlay, "write -P 0x42 1000 70000")
        #expect(try vireo(["img", "compare", raw, overlay]).0 == 1)
        #expect(try vireo(["img", "snapshot", "-c", "s1", overlay]).0 == 0)
        #expect(try Qemu.run("qemu-img", ["snapshot", "-l", overlay]).1.contains("s1"))
        #expect(try vireo(["img", "check", overlay]).0 == 0)
        #expect(try vireo(["img", "resize", overlay, "+1M"]).0 == 1)  // qemu-img refuses too: it has snapshots
        #expect(try vireo(["img", "snapshot", "-d", "s1", overlay]).0 == 0)
        #expect(try vireo(["img", "resize", "-q", overlay, "+1M"]).0 == 0)
        #expect(try Qemu.run("qemu-img", ["info", "--output", "json", overlay]).1.contains("\"virtual-size\": 3145728"))
        #expect(try vireo(["img", "commit", "-q", overlay]).0 == 0)
        #expect(try Qemu.check(image).0 == 0)
        #expect(try vireo(["img", "compare", image, overlay]).0 == 0)
        #expect(try vireo(["img", "compare", raw, image]).0 == 1)  // the overlay's write now lives in the base
        let (mapStatus, map) = try vireo(["img", "map", "--output", "json", overlay])
        #expect(mapStatus == 0 && map.contains("\"depth\": 1"))
        let (badStatus, bad) = try vireo(["img", "info", dir.file("missing.qcow2")])
        #expect(badStatus == 1 && bad.hasPrefix("vireo img: ") && bad.split(separator: "\n").count == 1)
    }

    @Test func checkExitCodesFollowQemuImg() throws {
        let dir = try TempDir()
        let (helpStatus, help) = try vireo(["img", "check", "--help"])
        try #require(helpStatus == 0 && help.contains("leaks"), "`vireo img` is not registered: \(help)")
        let image = dir.file("leaky.qcow2")
        try Qemu.img("create", "-f", "qcow2", image, "1M")
        // Bump the refcount of the header cluster (refcount block at 0x20000, entry 0): a leak.
        let file = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try file.seek(toOffset: 0x20000)
        try file.write(contentsOf: Data([0, 2]))
        try file.close()
        #expect(try Qemu.check(image).0 == 3)
        #expect(try vireo(["img", "check", image]).0 == 3)
        #expect(try vireo(["img", "check", "-r", "leaks", image]).0 == 0)
        #expect(try Qemu.check(image).0 == 0)
    }
}
