import Foundation
import Testing
@testable import VMM
#if canImport(Glibc)
import Glibc
#endif

/// User networking: `--net user[,hostfwd=...]`, the launch contract, and the stream protocol to
/// passt (a 4-byte big-endian length before each Ethernet frame; virtio-net's 12-byte header
/// stays on this side). The framing is tested against this end of a socket pair, so that
/// partial reads, several frames per read and broken lengths are all exercised.
@Suite struct PasstNetworkTests {
    @Test func userNetworkingOptionsParseAndRoundTrip() throws {
        let plain = try NetworkOptions.parse("user")
        #expect(plain.attachment == .user(forwards: []))
        let forwarded = try NetworkOptions.parse("user,hostfwd=tcp::2222-:22,mac=52:54:00:aa:bb:cc,hostfwd=udp:127.0.0.1:5353-:53")
        #expect(forwarded.attachment == .user(forwards: [PortForward(proto: .tcp, hostPort: 2222, guestPort: 22),
                                                         PortForward(proto: .udp, hostAddress: "127.0.0.1", hostPort: 5353, guestPort: 53)]))
        #expect(forwarded.mac == [0x52, 0x54, 0, 0xAA, 0xBB, 0xCC])
        let decoded = try JSONDecoder().decode(NetworkOptions.self, from: try JSONEncoder().encode(forwarded))
        #expect(decoded == forwarded)
        #expect(String(decoding: try JSONEncoder().encode(forwarded.attachment), as: UTF8.self)
                == #"{"user":["tcp::2222-:22","udp:127.0.0.1:5353-:53"]}"#)
        for bad in ["user,hostfwd=tcp:2222-:22", "user,hostfwd=icmp::1-:1", "user,hostfwd=tcp::0-:22", "user,hostfwd=tcp::2222-:70000",
                    "user,hostfwd=tcp:host.example:2222-:22", "user,hostfwd=tcp:1.2.3.4;rm:22-:22", "user,tap=x"] {
            #expect(throws: DeviceOptionError.self, "\(bad)") { try NetworkOptions.parse(bad) }
        }
        // A hostile launch file cannot smuggle anything into passt's command line either.
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(NetworkOptions.Attachment.self, from: Data(#"{"user":["tcp:--help:1-:2"]}"#.utf8))
        }
    }

    static func pair() -> (backend: PasstNetworkBackend, peer: Int32) {
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        return (PasstNetworkBackend(connected: fds[0], passt: nil, summary: "test"), fds[1])
    }

    static func framed(_ payload: [UInt8]) -> [UInt8] { withUnsafeBytes(of: UInt32(payload.count).bigEndian, Array.init) + payload }

    @Test func framesCrossWithTheirLengthsAndWithoutTheVirtioHeader() throws {
        let (backend, peer) = Self.pair()
        defer { backend.close(); close(peer) }
        // Guest to passt: the header goes, the length comes.
        let header = [UInt8](repeating: 0xAA, count: 12)
        try backend.send(header + [1, 2, 3, 4, 5])
        var buffer = [UInt8](repeating: 0, count: 64)
        let got = buffer.withUnsafeMutableBytes { recv(peer, $0.baseAddress, $0.count, 0) }
        #expect(Array(buffer[0..<got]) == Self.framed([1, 2, 3, 4, 5]))

        // passt to guest: two frames in one write, then one split across writes.
        #expect(backend.try { try $0.receive(maxLength: 2048) } == .some(nil))
        let two = Self.framed([9, 9, 9]) + Self.framed(Array(repeating: 7, count: 60))
        _ = two.withUnsafeBytes { Glibc.send(peer, $0.baseAddress, $0.count, 0) }
        #expect(try backend.receive(maxLength: 2048) == [UInt8](repeating: 0, count: 12) + [9, 9, 9])
        #expect(try backend.receive(maxLength: 2048) == [UInt8](repeating: 0, count: 12) + Array(repeating: 7, count: 60))
        #expect(try backend.receive(maxLength: 2048) == nil)
        let split = Self.framed(Array(repeating: 5, count: 100))
        _ = split.withUnsafeBytes { Glibc.send(peer, $0.baseAddress, 50, 0) }
        #expect(try backend.receive(maxLength: 2048) == nil)
        _ = split.withUnsafeBytes { Glibc.send(peer, $0.baseAddress! + 50, split.count - 50, 0) }
        #expect(try backend.receive(maxLength: 2048) == [UInt8](repeating: 0, count: 12) + Array(repeating: 5, count: 100))

        // A frame longer than the guest's buffers is dropped whole, and the next one still comes.
        let long = Self.framed(Array(repeating: 1, count: 3000)) + Self.framed([4])
        _ = long.withUnsafeBytes { Glibc.send(peer, $0.baseAddress, $0.count, 0) }
        #expect(try backend.receive(maxLength: 2048) == [UInt8](repeating: 0, count: 12) + [4])
    }

    @Test func aBrokenLengthIsAnErrorNotAHugeAllocation() throws {
        let (backend, peer) = Self.pair()
        defer { backend.close(); close(peer) }
        let bogus: [UInt8] = [0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3]
        _ = bogus.withUnsafeBytes { Glibc.send(peer, $0.baseAddress, $0.count, 0) }
        #expect(throws: (any Error).self) { try backend.receive(maxLength: 2048) }
    }
}

private extension PasstNetworkBackend {
    /// `body`'s result, or .none when it threw.
    func `try`<T>(_ body: (PasstNetworkBackend) throws -> T) -> T? { try? body(self) }
}
