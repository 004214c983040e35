import Foundation
import Testing
@testable import Manager
#if canImport(Glibc)
import Glibc
#endif

/// A TCP client that sends exactly the bytes it is given, to play the clients the API's limits are
/// for (HTTPClient always sends whole, well-formed requests).
final class RawClient {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, connected == 0 else { throw POSIXError(.ECONNREFUSED) }
    }

    deinit { close(fd) }

    /// False once the server has closed (EPIPE, ECONNRESET).
    @discardableResult
    func send(_ text: String) -> Bool { send(Array(text.utf8)) }

    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }

    /// What arrives until the server closes or `seconds` pass; `closed` says which.
    func receive(for seconds: Double) -> (text: String, closed: Bool) {
        var received: [UInt8] = []
        let end = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = end.timeIntervalSinceNow
            guard left > 0 else { return (String(decoding: received, as: UTF8.self), false) }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, Int32(left * 1000) + 1) > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return (String(decoding: received, as: UTF8.self), true) }
            received += buffer[0..<count]
        }
    }
}

/// The API's limits (issue: 40 unauthenticated connections each buffered 2 MiB, held open without
/// end). Each test fails against a server that reads a whole request before judging it, or never
/// closes a quiet connection.
@Suite struct DaemonLimitsTests {
    static func head(_ method: String, _ path: String, token: String?, extra: String = "") -> String {
        var text = "\(method) \(path) HTTP/1.1\r\nhost: vireo\r\n"
        if let token { text += "authorization: Bearer \(token)\r\n" }
        return text + extra + "\r\n"
    }

    @Test func aWrongTokenIsRefusedAtTheHeadBeforeAnyBody() throws {
        let server = try InProcessDaemon()
        let client = try RawClient(port: server.daemon.tcpPort!)
        // 100 MB announced, none sent: the answer must not wait for it.
        client.send(Self.head("POST", "/v1/vms", token: "wrong", extra: "content-length: 100000000\r\n"))
        let (text, closed) = client.receive(for: 5)
        #expect(text.hasPrefix("HTTP/1.1 401"), "\(text)")
        #expect(text.contains("missing or wrong bearer token"))
        #expect(closed)
    }

    @Test func aBodyTooLargeIsRefusedByItsContentLength() throws {
        let server = try InProcessDaemon()
        let client = try RawClient(port: server.daemon.tcpPort!)
        client.send(Self.head("POST", "/v1/vms", token: InProcessDaemon.token, extra: "content-length: \(3 << 20)\r\n"))
        let (text, closed) = client.receive(for: 5)
        #expect(text.hasPrefix("HTTP/1.1 413"), "\(text)")
        #expect(text.contains("request body larger than \(2 << 20) bytes"))
        #expect(closed)
        // Nothing was defined.
        #expect(try server.tcp(token: InProcessDaemon.token).request("GET", "/v1/vms").text == "[]\n")
    }

    @Test func aChunkedBodyIsRefusedAsSoonAsItGrowsPastTheLimit() throws {
        let server = try InProcessDaemon(apiLimits: APILimits(maximumBody: 64 << 10))
        let client = try RawClient(port: server.daemon.tcpPort!)
        client.send(Self.head("POST", "/v1/vms", token: InProcessDaemon.token, extra: "transfer-encoding: chunked\r\n"))
        // 96 KiB in 8 KiB chunks, and no last chunk: the answer comes without the end.
        let chunk = "2000\r\n" + String(repeating: "y", count: 0x2000) + "\r\n"
        for _ in 0..<12 { guard client.send(chunk) else { break } }
        let (text, _) = client.receive(for: 5)
        #expect(text.hasPrefix("HTTP/1.1 413"), "\(text)")
    }

    @Test func aRequestThatDoesNotArriveInTimeIsClosed() throws {
        let server = try InProcessDaemon(apiLimits: APILimits(requestTimeoutSeconds: 1))
        // Half a head, then nothing (slowloris).
        let slow = try RawClient(port: server.daemon.tcpPort!)
        slow.send("GET /v1/vms HTTP/1.1\r\nhost: vireo\r\n")
        let started = Date()
        let (text, closed) = slow.receive(for: 10)
        #expect(closed && text.isEmpty, "\(text)")
        #expect(Date().timeIntervalSince(started) < 5)

        // A kept-alive connection gets its answer, then the same time for its next request.
        let idle = try RawClient(port: server.daemon.tcpPort!)
        idle.send(Self.head("GET", "/v1/vms", token: InProcessDaemon.token))
        let answered = idle.receive(for: 10)
        #expect(answered.text.hasPrefix("HTTP/1.1 200") && answered.closed, "\(answered.text)")

        // A slow daemon answer or a long stream is not the client's fault: the event stream
        // stays open past the timeout.
        let stream = try RawClient(port: server.daemon.tcpPort!)
        stream.send(Self.head("GET", "/v1/events", token: InProcessDaemon.token))
        let streamed = stream.receive(for: 3)
        #expect(streamed.text.hasPrefix("HTTP/1.1 200") && !streamed.closed, "\(streamed.text)")
    }

    @Test func connectionsPastTheCapAreAnswered503() throws {
        let server = try InProcessDaemon(apiLimits: APILimits(maxConnections: 3))
        let port = server.daemon.tcpPort!
        let held = try (0..<3).map { _ in try RawClient(port: port) }
        // Accepted asynchronously: wait until all three count.
        let deadline = Date().addingTimeInterval(5)
        while server.daemon.openConnections.last != 3 && Date() < deadline { usleep(10_000) }
        #expect(server.daemon.openConnections.last == 3)
        let extra = try RawClient(port: port)
        let (text, closed) = extra.receive(for: 5)
        #expect(text.hasPrefix("HTTP/1.1 503"), "\(text)")
        #expect(text.contains("too many connections (3 open)"))
        #expect(closed)
        // The held ones are served, and a slot freed is a slot for the next client.
        held[0].send(Self.head("GET", "/v1/vms", token: InProcessDaemon.token, extra: "connection: close\r\n"))
        #expect(held[0].receive(for: 5).text.hasPrefix("HTTP/1.1 200"))
        while server.daemon.openConnections.last != 2 && Date() < deadline.addingTimeInterval(5) { usleep(10_000) }
        #expect(try server.tcp(token: InProcessDaemon.token).request("GET", "/v1/vms").status == 200)
        // The Unix socket is its own listener with its own count.
        #expect(try server.unix.request("GET", "/v1/vms").status == 200)
    }
}
