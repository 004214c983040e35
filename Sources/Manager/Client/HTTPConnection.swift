import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One client socket and the HTTP/1.1 response framing read from it (head, then a body delimited
/// by Content-Length, chunked encoding or EOF). Every size read from the peer is bounded.
/// @unchecked: `buffer` is the reading thread's alone; only `closed` is shared (shutdown from
/// another thread), and it is behind its Mutex.
final class HTTPConnection: @unchecked Sendable {
    struct Head {
        var status: Int
        var headers: [String: String]
    }

    static let maximumHead = 64 << 10
    private let fd: Int32
    private var buffer: [UInt8] = []
    /// Held across shutdown and close, so a shutdown never reaches a descriptor number reused
    /// after the close.
    private let closed = Mutex(false)

    init(endpoint: Endpoint, timeoutSeconds: Int) throws {
        switch endpoint {
        case .unix(let path):
            fd = try Self.connectUnix(path)
        case .tcp(let host, let port):
            fd = try Self.connectTCP(host: host, port: port)
        }
        setTimeout(seconds: timeoutSeconds)
    }

    private static func connectUnix(_ path: String) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw ClientError.cannotConnect(endpoint: "unix://\(path)", reason: "socket path longer than \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClientError.cannotConnect(endpoint: "unix://\(path)", reason: errnoText()) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let reason = errnoText()
            Glibc.close(fd)
            throw ClientError.cannotConnect(endpoint: "unix://\(path)", reason: reason)
        }
        return fd
    }

    private static func connectTCP(host: String, port: UInt16) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw ClientError.cannotConnect(endpoint: "http://\(host):\(port)", reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var reason = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.pointee.ai_protocol)
            if fd >= 0 {
                if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
                reason = errnoText()
                Glibc.close(fd)
            }
            entry = info.pointee.ai_next
        }
        throw ClientError.cannotConnect(endpoint: "http://\(host):\(port)", reason: reason)
    }

    private func setTimeout(seconds: Int) {
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func clearTimeout() { setTimeout(seconds: 0) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw ClientError.io(reason: errnoText()) }
            offset += count
        }
    }

    /// Reads more bytes into the buffer; false at EOF.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { throw ClientError.io(reason: "timed out waiting for the server") }
                throw ClientError.io(reason: errnoText())
            }
            if count == 0 { return false }
            buffer += chunk[0..<count]
            return true
        }
    }

    /// A CRLF-terminated line without its CRLF, at most `limit` bytes.
    private func readLine(limit: Int) throws -> String {
        var searchFrom = 0
        while true {
            if let index = buffer[searchFrom...].firstIndex(of: 0x0A) {
                var line = Array(buffer[..<index])
                buffer.removeFirst(index + 1)
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            searchFrom = buffer.count
            guard buffer.count <= limit else { throw ClientError.malformedResponse(reason: "line longer than \(limit) bytes") }
            guard try fill() else { throw ClientError.malformedResponse(reason: "connection closed mid-response") }
        }
    }

    /// The final response head; up to 8 interim (1xx) answers before it are skipped.
    func readHead() throws -> Head {
        for _ in 0..<8 {
            let head = try readOneHead()
            if !(100..<200).contains(head.status) { return head }
        }
        throw ClientError.malformedResponse(reason: "too many interim (1xx) responses")
    }

    private func readOneHead() throws -> Head {
        let statusLine = try readLine(limit: Self.maximumHead)
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]), (100..<600).contains(status) else {
            throw ClientError.malformedResponse(reason: "bad status line")
        }
        var headers: [String: String] = [:]
        var total = statusLine.utf8.count
        while true {
            let line = try readLine(limit: Self.maximumHead)
            total += line.utf8.count
            guard total <= Self.maximumHead else { throw ClientError.malformedResponse(reason: "headers too large") }
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { throw ClientError.malformedResponse(reason: "bad header line") }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return Head(status: status, headers: headers)
    }

    /// Hands the next `count` body bytes to `onData` as they arrive; false when it asked to stop.
    private func forward(_ count: Int, closedMidway: String, to onData: ([UInt8]) throws -> Bool) throws -> Bool {
        var remaining = count
        while remaining > 0 {
            if buffer.isEmpty, try !fill() { throw ClientError.malformedResponse(reason: closedMidway) }
            let piece = Array(buffer.prefix(remaining))
            buffer.removeFirst(piece.count)
            remaining -= piece.count
            guard try onData(piece) else { return false }
        }
        return true
    }

    /// Hands the body to `onData` piece by piece; stops early when it returns false.
    func readBody(head: Head, _ onData: ([UInt8]) throws -> Bool) throws {
        if head.status == 204 || head.status == 304 { return }
        if head.headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
            while true {
                let sizeLine = try readLine(limit: 1024)
                let hex = sizeLine.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                guard let size = Int(hex, radix: 16), size >= 0, size <= HTTPClient.maximumBody else {
                    throw ClientError.malformedResponse(reason: "bad chunk size")
                }
                if size == 0 {
                    _ = try? readLine(limit: 1024)
                    return
                }
                guard try forward(size, closedMidway: "connection closed mid-chunk", to: onData) else { return }
                _ = try readLine(limit: 2)
            }
        } else if let lengthText = head.headers["content-length"] {
            guard let length = Int(lengthText), length >= 0 else { throw ClientError.malformedResponse(reason: "bad Content-Length") }
            guard try forward(length, closedMidway: "connection closed mid-body", to: onData) else { return }
        } else {
            while true {
                if !buffer.isEmpty {
                    let piece = buffer
                    buffer = []
                    guard try onData(piece) else { return }
                }
                guard try fill() else { return }
            }
        }
    }

    /// Wakes a thread blocked in recv on this socket (it then sees EOF).
    func shutdown() {
        closed.withLock { closed in
            if !closed { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    func close() {
        closed.withLock { closed in
            if !closed {
                closed = true
                Glibc.close(fd)
            }
        }
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }
