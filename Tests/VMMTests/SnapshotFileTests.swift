import Foundation
import KVM
import Testing
import TestSupport
@testable import VMM

extension KVMGuestSuites {
/// Snapshot files are untrusted input: every malformed, truncated, hostile or foreign file gives
/// one clear error, and never a crash or a guest that reaches outside its memory.
@Suite struct SnapshotFileTests {
    /// A real snapshot of the counting guest (32 MiB), made once for the suite.
    static let original: Result<String, any Error> = Result {
        let path = temporarySnapshotPath("original")
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: "ticks=1000000 spin=50000000 fill=8")
        _ = guest.waitForMoreTicks(2)
        _ = try guest.session.snapshot(SnapshotRequest(path: path, then: .stop))
        _ = guest.waitForEnd()
        return path
    }

    static func bytes() throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: try original.get()))) }

    static func write(_ bytes: [UInt8], label: String) throws -> String {
        let path = temporarySnapshotPath(label)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// The error `SnapshotFile.open` gives for these bytes (nil when it accepts them).
    static func openError(_ bytes: [UInt8]) throws -> SnapshotError? {
        let path = try write(bytes, label: "bad")
        defer { unlink(path) }
        do {
            try SnapshotFile.open(path).close()
            return nil
        } catch let error as SnapshotError {
            return error
        }
    }

    /// Rewrites the original snapshot with a changed payload (checksums valid), so the change
    /// reaches the machine builder's own checks.
    static func withPayload(_ change: (inout SnapshotPayload) -> Void) throws -> String {
        let opened = try SnapshotFile.open(try original.get())
        defer { opened.close() }
        var payload = opened.payload
        change(&payload)
        let path = temporarySnapshotPath("hostile")
        try SnapshotFile.write(payload, memory: try opened.memory(.copy), to: path)
        return path
    }

    /// Restores `path` in a new session: the session's exit status and its status file's detail.
    static func restore(_ path: String) throws -> (status: Int32?, error: String) {
        do {
            let guest = try SessionGuest(LaunchSpec(kernelCache: false, restore: RestoreSource(path: path)))
            if guest.session.machine?.runState == .running { usleep(50_000) }
            let status = guest.stop()
            return (status, guest.session.lastOutcome.map { "\($0)" } ?? "")
        } catch {
            return (nil, "\(error)")
        }
    }

    @Test func theOriginalRestores() throws {
        let (status, _) = try Self.restore(try Self.original.get())
        #expect(status == 0)
    }

    @Test func truncatedAndForeignFilesAreRefused() throws {
        let bytes = try Self.bytes()
        let empty = try Self.openError([])
        #expect("\(empty!)".contains("is not a Vireo snapshot"))
        let text = try Self.openError(Array("#!/bin/sh\necho not a snapshot\n".utf8))
        #expect("\(text!)".contains("is not a Vireo snapshot"))
        let halfHeader = try Self.openError(Array(bytes[0..<2000]))
        #expect("\(halfHeader!)".contains("is truncated"))
        let noMemory = try Self.openError(Array(bytes[0..<(bytes.count / 2)]))
        #expect("\(noMemory!)".contains("is truncated"), "\(String(describing: noMemory))")
        #expect(try Self.openError(bytes) == nil)
    }

    @Test func corruptHeaderAndStateAreRefused() throws {
        var header = try Self.bytes()
        header[70] ^= 0x40
        #expect("\(try Self.openError(header)!)".contains("header checksum mismatch"))
        var state = try Self.bytes()
        state[4096 + 100] ^= 0x01
        #expect("\(try Self.openError(state)!)".contains("state section checksum mismatch"))
    }

    /// A file from another format version says so (checked after the header checksum, which the
    /// other version would also have written correctly).
    @Test func versionMismatchIsNamed() throws {
        var bytes = try Self.bytes()
        bytes[8] = 2
        let digest = SnapshotFile.sha256(Array(bytes[0..<4064]))
        bytes.replaceSubrange(4064..<4096, with: digest)
        let error = try Self.openError(bytes)
        #expect("\(error!)".contains("format version 2; this Vireo reads version 1"))
    }

    /// States that decode but describe an impossible machine are refused before anything runs.
    @Test func hostileStatesAreRefusedWithAClearError() throws {
        let cases: [(String, (inout SnapshotPayload) -> Void)] = [
            ("vCPU count", { $0.machine.cpus = 2 }),
            ("RAM regions do not match a 64 MiB machine", { $0.machine.memoryBytes = 64 << 20 }),
            ("PCI function states", { $0.machine.devices.entropy = true }),
            ("wrong shape", { $0.state.vcpus[0].fpu = [1, 2, 3] }),
            ("wrong shape", { $0.state.platform.pit = [] }),
            ("CMOS RTC state: index 0xc8", { $0.state.devices.rtc.index = 200 }),
            ("0xCF8 address latch", { $0.state.pciRoot.configAddress = 0x8000_0001 }),
        ]
        for (expected, change) in cases {
            let path = try Self.withPayload(change)
            defer { unlink(path) }
            let (status, error) = try Self.restore(path)
            #expect(status == nil || status == 1, "\(expected)")
            #expect(error.contains(expected) && error.contains("snapshot"), "expected '\(expected)' in: \(error)")
        }
    }

    /// The header parser on random header fields (with a valid header checksum, so the layout
    /// checks are what is exercised): it refuses or accepts, never crashes or reads out of range.
    @Test func mutatedHeadersNeverCrashTheParser() throws {
        let bytes = try Self.bytes()
        var random = SplitMix64(state: 0x4EAD_E125)
        var refused = 0
        for _ in 0..<2000 {
            var header = Array(bytes[0..<4096])
            for _ in 0..<Int(random.below(4) + 1) {
                // Mostly the layout fields (8..<216: version to the eighth region), sometimes anywhere.
                let index = random.below(4) == 0 ? Int(random.below(4064)) : 8 + Int(random.below(208))
                header[index] = UInt8(truncatingIfNeeded: random.next())
            }
            header.replaceSubrange(4064..<4096, with: SnapshotFile.sha256(Array(header[0..<4064])))
            let fileSize = random.below(2) == 0 ? UInt64(bytes.count) : random.below(UInt64(bytes.count) * 2)
            do {
                _ = try SnapshotFile.parse(header: header, fileSize: fileSize, path: "fuzz") { offset, count in
                    guard offset <= UInt64(bytes.count), UInt64(count) <= UInt64(bytes.count) - offset else {
                        throw SnapshotError.truncated(path: "fuzz", expected: offset + UInt64(count), actual: UInt64(bytes.count))
                    }
                    return Array(bytes[Int(offset)..<(Int(offset) + count)])
                }
            } catch is SnapshotError {
                refused += 1
            }
        }
        #expect(refused > 1000)
    }

    /// Random changes to the numbers of a real state: each is either refused with an error or
    /// restored into a guest that runs and stops; the VMM never crashes or hangs.
    @Test func mutatedStatesNeverCrashTheVMM() throws {
        let opened = try SnapshotFile.open(try Self.original.get())
        let payload = opened.payload
        opened.close()
        let json = Array(try JSONEncoder().encode(payload))
        let digits = json.indices.filter { (0x30...0x39).contains(json[$0]) }
        var random = SplitMix64(state: 0x5EED_0011)
        var refused = 0, restored = 0
        for _ in 0..<40 {
            var mutated = json
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                mutated[digits.randomElement(using: &random)!] = UInt8.random(in: 0x30...0x39, using: &random)
            }
            guard let decoded = try? JSONDecoder().decode(SnapshotPayload.self, from: Data(mutated)) else { refused += 1; continue }
            let path = try Self.withPayload { $0 = decoded }
            defer { unlink(path) }
            let (status, _) = try Self.restore(path)
            if status == 0 { restored += 1 } else { refused += 1 }
        }
        #expect(refused + restored == 40)
    }
}
}
