import Foundation
import Testing
@testable import Storage

/// Thousands of random mutations of a valid image's header and tables: every one either works
/// or fails with a typed error; none crashes, hangs or allocates without bound.
@Suite struct FuzzMutationTests {
    @Test func randomMutationsFailCleanly() throws {
        let dir = try TempDir()
        let (_, bytes) = try HostileImageTests.validImage(in: dir)
        // Metadata lives in the first clusters (header, refcount table and block, L1, L2).
        let metadataEnd = min(bytes.count, 6 * 4096)
        var random = TestRandom(state: 2024)
        var failures = 0
        let path = dir.file("fuzz.qcow2")
        for iteration in 0..<3000 {
            var copy = bytes
            for _ in 0..<(1 + random.below(8)) {
                let at = Int(random.below(UInt64(metadataEnd)))
                switch random.below(4) {
                case 0: copy[at] = UInt8(truncatingIfNeeded: random.next())
                case 1: copy[at] ^= 1 << UInt8(random.below(8))
                case 2 where at + 8 <= copy.count: copy.setBE64(at & ~7, random.next() >> random.below(64))
                default: copy[at] = [0, 0xFF, 0x80, 0x01][Int(random.below(4))]
                }
            }
            if random.below(20) == 0 { copy.removeLast(Int(random.below(UInt64(copy.count)))) }
            try Data(copy).write(to: URL(fileURLWithPath: path))
            let readOnly = iteration % 4 != 0
            do {
                let image = try QCOW2Image(path: path, readOnly: readOnly, openBacking: false)
                var buffer = [UInt8](repeating: 0, count: 65536)
                for _ in 0..<4 where image.size > 0 {
                    let offset = random.below(max(1, image.size - UInt64(min(UInt64(buffer.count), image.size))))
                    let length = Int(min(UInt64(buffer.count), image.size - offset))
                    try buffer.withUnsafeMutableBytes { try image.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<length]), at: offset) }
                }
                if !readOnly && image.size >= 8192 {
                    try buffer.withUnsafeBytes { try image.write(UnsafeRawBufferPointer(rebasing: $0[0..<8192]), at: random.below(image.size - 8192)) }
                }
                _ = try QCOW2Image.check(path: path)
            } catch is QCOW2Error {
                failures += 1
            } catch is StorageError {
                failures += 1
            } catch {
                Issue.record("iteration \(iteration): untyped error \(error)")
            }
            let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
            #expect(size < 64 << 20, "iteration \(iteration) grew the file to \(size) bytes")
        }
        #expect(failures > 100, "mutations should mostly be detected (\(failures) errors)")
    }
}
