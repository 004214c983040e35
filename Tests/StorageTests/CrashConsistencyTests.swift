import Foundation
import Testing
@testable import Storage
#if canImport(Glibc)
import Glibc
#endif

/// A writer killed with SIGKILL at random points never leaves an image the real qemu-img calls corrupt
/// (leaks are allowed: they waste space and `check -r leaks` reclaims them).
@Suite struct CrashConsistencyTests {
    static let imageVariable = "VIREO_CRASH_WRITER_IMAGE"
    static let seedVariable = "VIREO_CRASH_WRITER_SEED"

    /// The child side: started by `killedWritersLeaveConsistentImages` in a separate process, writes until killed.
    @Test(.enabled(if: ProcessInfo.processInfo.environment[imageVariable] != nil))
    func writerChildProcess() throws {
        let environment = ProcessInfo.processInfo.environment
        guard let path = environment[Self.imageVariable], let seed = environment[Self.seedVariable].flatMap(UInt64.init) else {
            return
        }
        let image = try QCOW2Image(path: path, readOnly: false)
        var random = TestRandom(state: seed)
        let chunk = random.bytes(300_000)
        while true {
            let length = Int(random.below(UInt64(chunk.count))) + 1
            let offset = random.below(image.size - UInt64(length))
            switch random.below(20) {
            case 0: try image.writeZeroes(at: offset, length: UInt64(length))
            case 1: try image.discard(at: offset, length: UInt64(length))
            case 2: try image.flush()
            default: try chunk.withUnsafeBytes { try image.write(UnsafeRawBufferPointer(rebasing: $0[0..<length]), at: offset) }
            }
        }
    }

    func spawnWriter(image: String, seed: UInt64) throws -> Process {
        let process = Process()
        // This very test binary, wherever it was started from (argv[0] may be relative).
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["--testing-library", "swift-testing", "--filter", "writerChildProcess"]
        var environment = ProcessInfo.processInfo.environment
        environment[Self.imageVariable] = image
        environment[Self.seedVariable] = String(seed)
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test func killedWritersLeaveConsistentImages() throws {
        let dir = try TempDir()
        let raw = dir.file("base.raw")
        try writePatternRaw(raw, size: 8 << 20, seed: 43)
        try Qemu.img("convert", "-c", "-O", "qcow2", raw, dir.file("base.qcow2"))
        var options = QCOW2CreateOptions(size: 16 << 20)
        options.clusterSize = 16384  // small clusters: many L2 tables and refcount blocks get allocated
        let plain = dir.file("plain.qcow2")
        try QCOW2Image.create(path: plain, options: options)
        options.backingFile = "base.qcow2"
        options.backingFormat = "qcow2"
        let overlay = dir.file("overlay.qcow2")
        try QCOW2Image.create(path: overlay, options: options)
        try Qemu.img("snapshot", "-c", "shared", overlay)  // later writes must copy shared clusters
        // Lazy refcounts: killed writers leave the dirty bit set; the next writer rebuilds refcounts on open.
        options.backingFile = nil
        options.lazyRefcounts = true
        let lazy = dir.file("lazy.qcow2")
        try QCOW2Image.create(path: lazy, options: options)
        var random = TestRandom(state: 47)
        for iteration in 0..<30 {
            let image = [plain, overlay, lazy][iteration % 3]
            let writer = try spawnWriter(image: image, seed: UInt64(iteration) + 1)
            usleep(UInt32(100_000 + random.below(250_000)))
            kill(writer.processIdentifier, SIGKILL)
            writer.waitUntilExit()
            #expect(writer.terminationReason == .uncaughtSignal, "writer \(iteration) stopped on its own: it failed")
            let (status, output) = try Qemu.check(image)
            #expect(status == 0 || status == 3, "iteration \(iteration): qemu-img check found corruption:\n\(output)")
            #expect(!output.contains("ERROR"), "iteration \(iteration):\n\(output)")
            // Vireo's own checker must agree with qemu-img's verdict.
            let ours = try QCOW2Image.check(path: image)
            #expect(ours.corruptions == 0 && ours.exitCode == status, "iteration \(iteration): \(ours.messages.prefix(5))")
        }
        // The writers must really have written: both images grew well past their empty size.
        #expect(try QCOW2Image(path: plain, readOnly: true).fileLength > 4 << 20)
        #expect(try QCOW2Image.check(path: overlay, repair: .leaks).leaks == 0)
        #expect(try Qemu.check(overlay).0 == 0)
    }
}
