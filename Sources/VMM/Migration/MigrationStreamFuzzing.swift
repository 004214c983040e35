import Boot
import CZlib
import Foundation
import GuestMemory
#if canImport(Glibc)
import Glibc
#endif

/// The destination's side of a live migration on bytes, for the libFuzzer target in Fuzz/Snapshot
/// (`VIREO_FUZZ_TARGET=migration`) and its seed test: the bytes are a source's stream, read by
/// `IncomingMigration.receive` over a socket pair exactly as from a real source (no KVM), and a
/// machine state that arrives goes on through the same restore checks as a snapshot's
/// (`SnapshotFuzzing.restoreWithoutKVM`).
///
/// Frames carry a CRC-32, so an input is a list of frames the entry frames itself:
///
/// ```
///   0      1  mode: low 3 bits zero, the rest of the input is the raw stream; otherwise frames follow
///   1         frames: kind (1 byte), payload length (3 bytes, little-endian; cut at the input's
///             end), payload; each is sent with a correct header and checksum
/// ```
///
/// Left out: disk mirroring (`--copy-storage-all` streams are refused here: their targets would be
/// files on this host), and what happens after the machine is built (post-copy page requests are
/// answered by no one: the pager is stopped at once).
public enum MigrationStreamFuzzing {
    /// Runs one input; throws where a destination would refuse the stream. Returns the state received.
    @discardableResult
    public static func run(_ input: [UInt8]) throws -> SnapshotPayload {
        let stream = bytes(for: input)
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw MigrationError.io("socketpair", errno: errno)
        }
        let source = fds[1]
        let channel = MigrationChannel(fd: fds[0], peer: "fuzz-source")
        // The source writes while the destination reads; it stops when the destination hangs up.
        let writer = Background(name: "fuzz-source") {
            stream.withUnsafeBytes { raw in
                var done = 0
                while done < raw.count {
                    let sent = Glibc.send(source, raw.baseAddress! + done, raw.count - done, Int32(MSG_NOSIGNAL))
                    if sent < 0 && errno == EINTR { continue }
                    guard sent > 0 else { break }
                    done += sent
                }
            }
            _ = Glibc.shutdown(source, Int32(SHUT_WR))
        }
        defer {
            _ = try? writer.wait()
            Glibc.close(source)
        }
        let incoming: IncomingMigration
        do {
            incoming = try IncomingMigration.receive(from: channel, system: nil, diskTargets: { _ in
                throw MigrationError.busy("fuzz: mirrored disks are not received here")
            }, log: { _ in })
        } catch {
            channel.close()
            throw error
        }
        // Hangs up (and stops a post-copy pager): the rest of the stream goes unread.
        incoming.reportFailure("fuzz: done")
        let regions = incoming.memory.regions.map { SnapshotFile.Region(start: $0.start.raw, size: $0.size, fileOffset: 0) }
        try SnapshotFuzzing.restoreWithoutKVM(incoming.payload, regions: regions)
        return incoming.payload
    }

    /// The stream an input describes.
    static func bytes(for input: [UInt8]) -> [UInt8] {
        guard let mode = input.first, mode & 7 != 0 else { return Array(input.dropFirst()) }
        var stream: [UInt8] = []
        var rest = input.dropFirst()
        while rest.count >= 4 {
            let kind = rest[rest.startIndex]
            let length = Int(rest[rest.startIndex + 1]) | Int(rest[rest.startIndex + 2]) << 8 | Int(rest[rest.startIndex + 3]) << 16
            let payload = Array(rest.dropFirst(4).prefix(length))
            rest = rest.dropFirst(4 + payload.count)
            stream += frame(kind, payload)
        }
        return stream
    }

    /// A frame as `MigrationChannel.send` puts it on the wire.
    static func frame(_ kind: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: MigrationChannel.headerLength)
        MigrationChannel.put(MigrationChannel.frameTag, at: 0, in: &header)
        header[4] = kind
        MigrationChannel.put(UInt32(truncatingIfNeeded: payload.count), at: 8, in: &header)
        let crc = payload.withUnsafeBytes { raw in
            raw.isEmpty ? crc32(0, nil, 0) : crc32(crc32(0, nil, 0), raw.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(raw.count))
        }
        MigrationChannel.put(UInt32(truncatingIfNeeded: crc), at: 12, in: &header)
        return header + payload
    }

    /// A structured input of `frames` (kind, payload).
    public static func input(_ frames: [(MigrationFrameKind, [UInt8])]) -> [UInt8] {
        var input: [UInt8] = [1]
        for (kind, payload) in frames {
            let length = UInt32(payload.count)
            input += [kind.rawValue, UInt8(length & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length >> 16 & 0xFF)] + payload
        }
        return input
    }

    /// The frame kinds a source sends, for building inputs.
    public enum MigrationFrameKind: UInt8 {
        case hello = 1, pages = 3, zeros = 4, roundEnd = 5, state = 6, complete = 7, postcopy = 12, verify = 15
    }

    /// Valid streams (each is received and restores): SnapshotFuzzing's running machine with a
    /// page of data, a run of zero pages and two rounds; once plain, once switching to post-copy.
    public static func seeds() throws -> [[UInt8]] {
        let payload = try SnapshotFuzzing.seedPayload(running: true)
        let regions = X86Layout.ramRanges(memorySize: payload.machine.memoryBytes).map { [$0.start.raw, $0.size] }
        let hello = MigrationChannel.streamMagic + le(MigrationChannel.streamVersion)
            + Array(try JSONEncoder().encode(MigrationHello(machine: payload.machine, effectiveCmdline: payload.effectiveCmdline,
                                                            regions: regions, mirroredDisks: nil)))
        let page = le(UInt64(0x10_0000)) + (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let zeros = le(UInt64(0x20_0000)) + le(UInt64(0x4000))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let state = Array(try encoder.encode(payload))
        // One page (at 3 MiB) still on the source when the guest starts here.
        var words = X86Layout.ramRanges(memorySize: payload.machine.memoryBytes).map { [UInt64](repeating: 0, count: Int(($0.size / 4096 + 63) / 64)) }
        words[0][(0x30_0000 >> 12) / 64] |= 1 << UInt64((0x30_0000 >> 12) % 64)
        let pending = PageBitmap(words: words)
        let plain: [(MigrationFrameKind, [UInt8])] = [(.hello, hello), (.pages, page), (.zeros, zeros), (.roundEnd, []),
                                                      (.pages, page), (.roundEnd, []), (.state, state), (.complete, [])]
        let postcopy: [(MigrationFrameKind, [UInt8])] = [(.hello, hello), (.pages, page), (.roundEnd, []),
                                                         (.postcopy, pending.encoded), (.state, state), (.complete, [])]
        return [input(plain), input(postcopy)]
    }

    private static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
}
