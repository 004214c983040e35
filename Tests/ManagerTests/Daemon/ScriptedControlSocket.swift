import Foundation
@testable import Manager

/// One request as a scripted control socket saw it.
struct ScriptedRequest: Sendable {
    var method: String
    var path: String
    var body: [UInt8]
    /// "PUT /vm/shutdown": what the tests compare.
    var line: String { "\(method) \(path)" }
}

/// A stand-in for a VMM's control socket: answers each request on a Unix socket with what
/// `respond` returns (raw HTTP), recording request lines.
final class ScriptedControlSocket: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSLock()
    private var lines: [String] = []
    /// Signalled when the accept thread has returned: only then may the fd number be reused.
    private let finished = DispatchSemaphore(value: 0)

    /// Every request gets the same status and JSON body.
    convenience init(path: String, status: Int, body: String) throws {
        try self.init(path: path, raw: Self.http(status, body))
    }

    /// Sends `raw` verbatim as the answer: for testing how the client copes with odd framing.
    convenience init(path: String, raw answer: String) throws {
        try self.init(path: path) { _ in answer }
    }

    init(path: String, respond: @escaping @Sendable (ScriptedRequest) -> String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw APIError(500, "cannot listen on \(path)") }
        let listener = fd
        Thread { [self] in
            defer { finished.signal() }
            while true {
                let client = accept(listener, nil, nil)
                if client < 0 { return }
                let request = Self.readRequest(client)
                lock.lock(); lines.append(request.line); lock.unlock()
                let answer = respond(request)
                _ = Array(answer.utf8).withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                Glibc.close(client)
            }
        }.start()
    }

    var requests: [String] { lock.lock(); defer { lock.unlock() }; return lines }

    /// shutdown() makes the blocked (or next) accept fail; the fd is closed only after the thread
    /// has left, or the next socket could get the same number and be served by this thread.
    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        finished.wait()
        Glibc.close(fd)
    }

    static func http(_ status: Int, _ body: String) -> String {
        "HTTP/1.1 \(status) X\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    }

    /// The head, then as many body bytes as Content-Length says (requests here are small).
    private static func readRequest(_ client: Int32) -> ScriptedRequest {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var headEnd: Int?
        var wanted = 0
        while data.count < 1 << 20 {
            if let end = headEnd, data.count >= end + wanted { break }
            let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            data += buffer[0..<count]
            if headEnd == nil, let range = findHeadEnd(data) {
                headEnd = range
                let head = String(decoding: data[..<range], as: UTF8.self).lowercased()
                for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
                    wanted = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
                }
            }
        }
        let end = headEnd ?? data.count
        let words = String(decoding: data[..<end], as: UTF8.self).split(separator: "\r\n").first?.split(separator: " ") ?? []
        return ScriptedRequest(method: words.first.map(String.init) ?? "", path: words.dropFirst().first.map(String.init) ?? "",
                               body: Array(data[min(end, data.count)...].prefix(wanted)))
    }

    private static func findHeadEnd(_ data: [UInt8]) -> Int? {
        guard data.count >= 4 else { return nil }
        for index in 0...(data.count - 4) where data[index] == 13 && data[index + 1] == 10 && data[index + 2] == 13 && data[index + 3] == 10 {
            return index + 4
        }
        return nil
    }
}
