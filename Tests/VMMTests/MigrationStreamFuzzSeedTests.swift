import Foundation
import Testing
import TestSupport
@testable import VMM

/// The migration-stream fuzz entry (`MigrationStreamFuzzing`, Fuzz/MigrationStream): its seeds are
/// streams a destination accepts, so the fuzzer starts past the frame checks and the decoders, and
/// broken streams end in errors, never in a hang.
@Suite struct MigrationStreamFuzzSeedTests {
    @Test func seedsAreReceivedAndRestored() throws {
        let seeds = try MigrationStreamFuzzing.seeds()
        #expect(seeds.count == 2)
        for seed in seeds {
            let payload = try MigrationStreamFuzzing.run(seed)
            #expect(payload.state.pci.map(\.name) == ["vblk0", "vnet0", "vcon", "vrng"])
        }
    }

    @Test func brokenStreamsAreRefused() throws {
        let seed = try MigrationStreamFuzzing.seeds()[0]
        // Raw mode, the seed's own frames with one payload byte flipped: the checksum catches it.
        var raw = [0] + MigrationStreamFuzzing.bytes(for: seed)
        raw[200] ^= 0x40
        #expect(throws: MigrationError.self) { try MigrationStreamFuzzing.run(raw) }
        // Cut short: the source went away.
        let cut = MigrationStreamFuzzing.bytes(for: seed)
        let error = #expect(throws: MigrationError.self) { try MigrationStreamFuzzing.run([0] + cut.prefix(cut.count - 20)) }
        #expect("\(error.map { "\($0)" } ?? "")".contains("closed"))
    }

    /// Seeded mutations of the seeds (bytes flipped, frames cut, lengths changed) finish, one way
    /// or the other, and never crash.
    @Test func mutatedStreamsEnd() throws {
        var random = SplitMix64(state: 2026_12_07)
        let seeds = try MigrationStreamFuzzing.seeds()
        for round in 0..<60 {
            var input = seeds[round % seeds.count]
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let index = Int.random(in: 1..<input.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: input[index] ^= UInt8.random(in: 1...255, using: &random)
                case 1: input.removeSubrange(index..<min(input.count, index + Int.random(in: 1...64, using: &random)))
                default: input.insert(contentsOf: [UInt8](repeating: UInt8.random(in: 0...255, using: &random), count: 8), at: index)
                }
                if input.count < 2 { break }
            }
            _ = try? MigrationStreamFuzzing.run(input)
        }
    }
}
