import Boot
import Foundation
import GuestMemory
import Testing
@testable import VMM

/// The snapshot fuzz target's entry (`SnapshotFuzzing`, Fuzz/Snapshot): its seeds stay valid as
/// the format changes, so the fuzzer starts past the checksums and the JSON decoder, and the files
/// it makes up are the files `SnapshotFile.write` makes.
@Suite struct SnapshotFuzzSeedTests {
    @Test func seedsRestoreThroughTheFuzzEntry() throws {
        let seeds = try SnapshotFuzzing.seeds()
        #expect(seeds.count == 2)
        for (index, seed) in seeds.enumerated() {
            let payload = try SnapshotFuzzing.run(seed)
            #expect(payload.state.pci.map(\.name) == ["vblk0", "vnet0", "vcon", "vrng"])
            // The second seed has every driver at DRIVER_OK: device and queue states to mutate.
            #expect(payload.state.pci.allSatisfy { ($0.device != nil) == (index == 1) })
            #expect(payload.state.pci.allSatisfy { $0.device?.queues.allSatisfy { $0 != nil } ?? true })
        }
    }

    /// The header the entry builds for a seed is byte for byte the one `SnapshotFile.write` gives
    /// the same payload, and the real file's bytes as a raw input restore too.
    @Test func structuredAndRawInputsAreRealFiles() throws {
        let seed = try SnapshotFuzzing.seeds()[1]
        #expect(try SnapshotFuzzing.seeds()[1] == seed)
        let payload = try SnapshotFuzzing.run(seed)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-fuzz-seed-\(getpid()).snap").path
        defer { unlink(path) }
        let memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: payload.machine.memoryBytes))
        let size = try SnapshotFile.write(payload, memory: memory, to: path)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))

        let (header, fileSize, state) = SnapshotFuzzing.file(for: seed)
        let sameHeader = header == Array(bytes[0..<4096])
        let sameState = Array(state) == Array(bytes[4096..<min(bytes.count, 4096 + state.count)])
        #expect(sameHeader)
        #expect(sameState)
        #expect(fileSize == size)
        let raw = try SnapshotFuzzing.run([0] + bytes[0..<(4096 + state.count)])
        #expect(raw == payload)
        #expect(try SnapshotFile.open(path).payload == payload)
    }

    /// The prefix's switches reach the header checks they are for.
    @Test(arguments: [
        (UInt8(0x08), "format version 0"),              // version field taken from the (zero) bytes 1..<5
        (0x20, "is truncated"),                          // byte 10 pages short
        (0x40, "state section checksum mismatch"),
        (0x80, "impossible header layout"),             // memory offset off the page
    ])
    func prefixSwitches(flag: UInt8, expected: String) throws {
        var input = try SnapshotFuzzing.seeds()[0]
        input[0] |= flag
        if flag == 0x08 { input.replaceSubrange(1..<5, with: [0, 0, 0, 0]) }
        input[10] = 1
        input[11] = 8
        let error = #expect(throws: SnapshotError.self) { try SnapshotFuzzing.run(input) }
        #expect("\(error.map { "\($0)" } ?? "")".contains(expected), "\(String(describing: error))")
    }
}
