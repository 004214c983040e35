import Boot
import GuestMemory
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport
@testable import VMM

/// The destination's reading of a migration stream as hostile input: every malformed, truncated,
/// corrupted or version-mismatched stream ends in a one-line error before any machine exists.
@Suite struct MigrationStreamTests {
    /// Two connected channels: what the test writes on `source` is what `receive` reads.
    static func pair() -> (source: MigrationChannel, destination: MigrationChannel) {
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        return (MigrationChannel(fd: fds[0], peer: "test source"), MigrationChannel(fd: fds[1], peer: "test destination"))
    }

    static func hello(memory: UInt64 = 32 << 20, version: UInt32 = MigrationChannel.streamVersion,
                      magic: [UInt8] = MigrationChannel.streamMagic, regions: [[UInt64]]? = nil) throws -> [UInt8] {
        let spec = LaunchSpec(kernel: nil, cmdline: "", cpus: 1, memoryBytes: memory)
        let layout = regions ?? X86Layout.ramRanges(memorySize: memory).map { [$0.start.raw, $0.size] }
        var bytes = magic
        withUnsafeBytes(of: version.littleEndian) { bytes += $0 }
        bytes += try JSONEncoder().encode(MigrationHello(machine: spec, effectiveCmdline: "", regions: layout))
        return bytes
    }

    static func pagesFrame(at address: UInt64, pages: Int, fill: UInt8 = 0xAB) -> [UInt8] {
        var bytes = withUnsafeBytes(of: address.littleEndian, Array.init)
        bytes += [UInt8](repeating: fill, count: pages * 4096)
        return bytes
    }

    /// Runs the destination's reception against what `write` sends, returns the error it ended with.
    static func receptionError(_ write: @escaping @Sendable (MigrationChannel) throws -> Void) -> String {
        let (source, destination) = pair()
        let writer = startThread(name: "hostile-source") {
            try? write(source)
            source.close()
        }
        defer { if let writer { pthread_join(writer, nil) } }
        do {
            _ = try IncomingMigration.receive(from: destination, log: { _ in })
            return "no error"
        } catch {
            destination.close()
            return "\(error)"
        }
    }

    /// Reads (and drops) the destination's answers so that the writer never blocks on them.
    static func drain(_ channel: MigrationChannel) { _ = try? channel.receive(during: "test") }

    @Test func garbageIsNotAStream() {
        let error = Self.receptionError { try $0.sendRaw(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)) }
        #expect(error.contains("bad frame tag"), "\(error)")
    }

    @Test func aStreamWithoutTheMagicIsRefused() {
        let error = Self.receptionError { try $0.send(.hello, bytes: try Self.hello(magic: Array("QEMUMIGR".utf8))) }
        #expect(error.contains("not a Vireo migration stream"), "\(error)")
    }

    @Test func anotherVersionIsRefusedByName() {
        let error = Self.receptionError { try $0.send(.hello, bytes: try Self.hello(version: 99)) }
        #expect(error == "migration stream version 99; this Vireo speaks version 1", "\(error)")
    }

    @Test func anImpossibleMachineIsRefusedBeforeAllocating() {
        var error = Self.receptionError { try $0.send(.hello, bytes: try Self.hello(memory: 1 << 50)) }
        #expect(error.contains("impossible machine"), "\(error)")
        error = Self.receptionError { try $0.send(.hello, bytes: try Self.hello(regions: [[0, 1 << 40]])) }
        #expect(error.contains("RAM regions do not match"), "\(error)")
    }

    @Test func pagesOutsideGuestRAMAreRefused() {
        for address in [UInt64(32 << 20), 0xFFFF_FFFF_FFFF_F000, 0x1001] {
            let error = Self.receptionError { source in
                try source.send(.hello, bytes: try Self.hello())
                Self.drain(source)
                try source.send(.pages, bytes: Self.pagesFrame(at: address, pages: 1))
            }
            #expect(error.contains("outside guest RAM"), "\(address): \(error)")
        }
    }

    @Test func aFlippedBitIsCaughtByTheChecksum() {
        let error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.sendCorrupted(.pages, bytes: Self.pagesFrame(at: 0x10_0000, pages: 2), flippingByte: 5000)
        }
        #expect(error.contains("checksum mismatch in a pages frame"), "\(error)")
    }

    @Test func anOversizedFrameIsRefusedFromItsHeader() {
        let error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.sendHeader(kind: 3, length: 0xFFFF_FFFF)
        }
        #expect(error.contains("(at most"), "\(error)")
    }

    @Test func aTruncatedStreamEndsWithASentence() {
        let error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.send(.pages, bytes: Self.pagesFrame(at: 0x10_0000, pages: 4))
            try source.send(.roundEnd, bytes: [1, 0, 0, 0])
        }
        #expect(error == "the migration connection closed while receiving RAM", "\(error)")
    }

    @Test func anUndecodableStateIsRefused() {
        let error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.send(.state, bytes: Array("{\"machine\": 5}".utf8))
        }
        #expect(error.contains("cannot decode the machine state"), "\(error)")
    }

    @Test func aSourceThatGivesUpIsHeard() {
        let error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            source.sendError("cancelled by the operator")
        }
        #expect(error == "the other side refused the migration: cancelled by the operator", "\(error)")
    }

    /// Seeded mutations of a valid stream's start (machine, RAM, round ends): every one ends in an
    /// error or a clean "closed", never a crash or a hang.
    @Test func mutatedStreamsNeverCrash() throws {
        var stream: [UInt8] = []
        let (a, b) = Self.pair()
        defer { a.close(); b.close() }
        // Serialize frames through a channel pair once to get the exact bytes of a valid stream.
        let frames: [(MigrationFrame, [UInt8])] = [
            (.hello, try Self.hello()), (.pages, Self.pagesFrame(at: 0x10_0000, pages: 3)),
            (.zeros, withUnsafeBytes(of: UInt64(0x20_0000).littleEndian, Array.init) + withUnsafeBytes(of: UInt64(8192).littleEndian, Array.init)),
            (.roundEnd, [1, 0, 0, 0]), (.pages, Self.pagesFrame(at: 0x1F0_0000, pages: 1, fill: 7)),
        ]
        for (kind, bytes) in frames {
            try a.send(kind, bytes: bytes)
            stream += try b.receiveRaw(count: MigrationChannel.headerLength + bytes.count)
        }
        var random = SplitMix64(state: 0x5EED_0012)
        for _ in 0..<300 {
            var mutated = stream
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let at = Int(random.next() % UInt64(mutated.count))
                switch random.next() % 3 {
                case 0: mutated[at] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                case 1: mutated = Array(mutated[..<at])
                default: mutated[at] = UInt8(truncatingIfNeeded: random.next())
                }
                if mutated.isEmpty { break }
            }
            let copy = mutated
            let error = Self.receptionError { source in
                // The destination answers "ready" after a good hello; nobody needs to read it.
                try source.sendRaw(copy)
            }
            #expect(error != "no error")
        }
    }
}

extension MigrationChannel {
    /// Test helpers: bytes as they are, a frame with one byte changed after the checksum, a bare header.
    func sendRaw(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let count = bytes[done...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw MigrationError.io("test send", errno: errno) }
            done += count
        }
    }

    func sendCorrupted(_ kind: MigrationFrame, bytes: [UInt8], flippingByte index: Int) throws {
        let (a, b) = MigrationStreamTests.pair()
        defer { a.close(); b.close() }
        try a.send(kind, bytes: bytes)
        var framed = try b.receiveRaw(count: MigrationChannel.headerLength + bytes.count)
        framed[MigrationChannel.headerLength + index] ^= 0x40
        try sendRaw(framed)
    }

    func sendHeader(kind: UInt8, length: UInt32) throws {
        var header = [UInt8](repeating: 0, count: MigrationChannel.headerLength)
        MigrationChannel.put(MigrationChannel.frameTag, at: 0, in: &header)
        header[4] = kind
        MigrationChannel.put(length, at: 8, in: &header)
        try sendRaw(header)
    }

    func receiveRaw(count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + done, count - done, 0) }
            guard got > 0 else { throw MigrationError.closed("in a test") }
            done += got
        }
        return bytes
    }
}

extension MigrationStreamTests {
    /// The post-copy switch's page bitmap: what the source encodes the destination decodes, for
    /// a layout with the MMIO hole (two regions); anything that does not fit the layout is refused.
    @Test func postcopyBitmapsRoundTripAndRefuseWhatDoesNotFit() throws {
        let memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: 4 << 30).map { ($0.start, $0.size) })
        #expect(memory.regions.count == 2)
        var random = SplitMix64(state: 0xB17_3A9)
        let words = memory.regions.map { region in (0..<Int((region.size / 4096 + 63) / 64)).map { _ in random.next() & random.next() } }
        let bitmap = PageBitmap(words: words)
        let encoded = bitmap.encoded
        let decoded = try encoded.withUnsafeBytes { try PageBitmap(decoding: $0, for: memory) }
        #expect(decoded == bitmap)
        #expect(decoded.count == bitmap.count)
        for bad in [Array(encoded.dropLast(8)), encoded + [0], Array(encoded.dropFirst(8)), [UInt8]()] {
            #expect(throws: MigrationError.self) { try bad.withUnsafeBytes { try PageBitmap(decoding: $0, for: memory) } }
        }
        #expect(PostcopyPager.runs([0b1110_0110, 1 << 63, 1]) == [1..<3, 5..<8, 127..<129])
    }

    /// A stream may switch to post-copy once; a second switch, or disk data in a migration that
    /// does not mirror disks, ends it.
    @Test func postcopyAndDiskFramesOutOfPlaceAreRefused() throws {
        let memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: 32 << 20).map { ($0.start, $0.size) })
        let bitmap = PageBitmap(words: memory.regions.map { [UInt64](repeating: 0, count: Int(($0.size / 4096 + 63) / 64)) }).encoded
        var error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.send(.postcopy, bytes: bitmap)
            try source.send(.postcopy, bytes: bitmap)
        }
        #expect(error.contains("a second post-copy switch"), "\(error)")
        error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.send(.diskData, bytes: [UInt8](repeating: 0, count: 16 + 512))
        }
        #expect(error.contains("disk data in a migration without --copy-storage-all"), "\(error)")
    }
}

extension MigrationStreamTests {
    /// "verify": the destination compares each page with the source's checksum and refuses the
    /// switch-over, naming the pages, when one differs; a matching set passes.
    @Test func verifyNamesThePagesThatDiffer() throws {
        let memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: 32 << 20).map { ($0.start, $0.size) })
        let zeros = PageChecksums.compute(memory)
        #expect(try zeros.withUnsafeBytes { try PageChecksums.mismatches($0, memory: memory) }.isEmpty)
        let error = Self.receptionError { source in
            try source.send(.hello, bytes: try Self.hello())
            Self.drain(source)
            try source.send(.pages, bytes: Self.pagesFrame(at: 0x10_0000, pages: 2))
            // Checksums of an all-zero RAM: the two pages just sent differ.
            try source.send(.verify, bytes: zeros)
        }
        #expect(error.contains("verify: 2 pages differ from the source's after the last round (0x100000 0x101000)"), "\(error)")
        #expect(MigrationRequest(destination: "unix:/x", postcopy: true, verify: true).problem != nil)
    }
}
