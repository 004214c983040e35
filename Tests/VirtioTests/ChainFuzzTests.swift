import GuestMemory
import Testing
import TestSupport
@testable import Virtio

@Suite struct ChainFuzzTests {
    /// Random but plausible-looking descriptor: addresses near RAM edges and holes, small lengths,
    /// any flags and next values, so the walk hits every check rather than failing on the first.
    static func randomDescriptor(_ rng: inout SplitMix64) -> (UInt64, UInt32, UInt16, UInt16) {
        let addresses: [UInt64] = [0x8000, 0xfff8, holeStart - 4, 0x30000, 0x40ff0, 0x7000, 0xffff_ffff_ffff_fff8]
        let address = rng.next() % 4 == 0 ? rng.next() : addresses[Int(rng.next() % UInt64(addresses.count))] &+ rng.next() % 64
        let length = rng.next() % 8 == 0 ? UInt32(truncatingIfNeeded: rng.next()) : UInt32(rng.next() % 80)
        let flags = UInt16(truncatingIfNeeded: rng.next()) & (rng.next() % 4 == 0 ? 0xffff : 0x7)
        let next = rng.next() % 8 == 0 ? UInt16(truncatingIfNeeded: rng.next()) : UInt16(rng.next() % 10)
        return (address, length, flags, next)
    }

    @Test func randomTablesYieldValidChainsOrTypedErrors() throws {
        let memory = try makeTestMemory()
        var rng = SplitMix64(state: 0x5eed)
        var valid = 0, invalid = 0
        for _ in 0..<2000 {
            let driver = try MockDriverQueue(memory: memory, size: 8)
            for i in UInt16(0)..<8 {
                let d = Self.randomDescriptor(&rng)
                try driver.writeDescriptor(index: i, address: d.0, length: d.1, flags: d.2, next: d.3)
                // A possible indirect table at 0x7000 with random contents too.
                let t = Self.randomDescriptor(&rng)
                try driver.writeDescriptor(table: GuestAddress(0x7000), index: i, address: t.0, length: t.1, flags: t.2, next: t.3)
            }
            var queue = try driver.makeDeviceQueue()
            for _ in 0..<4 { try driver.publish(UInt16(rng.next() % 10)) }
            for _ in 0..<4 {
                do {
                    guard let chain = try queue.popAvailable(memory: memory) else { break }
                    valid += 1
                    // Whatever was accepted must be safe to use: every buffer inside RAM, totals exact.
                    for buffer in chain.readable + chain.writable {
                        #expect(memory.isValid(buffer.address, length: UInt64(buffer.length)))
                    }
                    #expect(chain.readable.reduce(UInt64(0)) { $0 + UInt64($1.length) } == UInt64(chain.readableLength))
                    #expect(chain.writable.reduce(UInt64(0)) { $0 + UInt64($1.length) } == UInt64(chain.writableLength))
                    #expect(try chain.writeWritable([UInt8](repeating: 0xab, count: 256), to: memory) <= chain.writableLength)
                } catch {
                    invalid += 1
                }
            }
        }
        // Both outcomes must actually occur, or the generator is not exercising the walker.
        #expect(valid > 100)
        #expect(invalid > 100)
    }
}
