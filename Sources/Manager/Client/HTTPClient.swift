import VMContract
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where an HTTP server listens: the daemon's Unix socket, its optional TCP port, or a VM's
/// control socket.
public enum Endpoint: Equatable, Sendable, CustomStringConvertible {
    case unix(path: String)
    case tcp(host: String, port: UInt16)

    public var description: String {
        switch self {
        case .unix(let path): "unix://\(path)"
        case .tcp(let host, let port): "http://\(host):\(port)"
        }
    }

    /// A daemon's URI as users write it: `unix:///path/to/socket` or `http://host:port` (IPv6
    /// hosts in brackets); nil for anything else.
    public init?(daemonURI text: String) {
        if text.hasPrefix("unix://") {
            let path = String(text.dropFirst("unix://".count))
            guard path.hasPrefix("/") else { return nil }
            self = .unix(path: path)
            return
        }
        guard text.hasPrefix("http://") else { return nil }
        var rest = text.dropFirst("http://".count)
        if rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
        var host = String(rest[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self = .tcp(host: host, port: port)
    }
}

public enum ClientError: Error, Equatable, Sendable, CustomStringConvertible {
    case cannotConnect(endpoint: String, reason: String)
    case io(reason: String)
    case malformedResponse(reason: String)
    case responseTooLarge(limit: Int)

    public var description: String {
        switch self {
        case .cannotConnect(let endpoint, let reason): "cannot connect to \(endpoint): \(reason)"
        case .io(let reason): "connection failed: \(reason)"
        case .malformedResponse(let reason): "malformed HTTP response: \(reason)"
        case .responseTooLarge(let limit): "response larger than \(limit) bytes"
        }
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]

    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The `error` member of a JSON error body (the VMM's `ControlError`; the daemon's
    /// `APIErrorBody` has the same member), or the body itself.
    public var errorMessage: String {
        if let answer = try? ContractJSON.decode(ControlError.self, from: body) { return answer.error }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// A small blocking HTTP/1.1 client, one connection per request (`Connection: close`).
///
/// The CLI and the daemon (towards each VM's control socket) both use it; it runs on the caller's
/// thread, which keeps the daemon's per-VM operations plain sequential code.
public struct HTTPClient: Sendable {
    public var endpoint: Endpoint
    public var token: String?
    /// Send and receive timeout for ordinary requests; streams wait forever.
    public var timeoutSeconds: Int
    public static let maximumBody = 16 << 20

    public init(endpoint: Endpoint, token: String? = nil, timeoutSeconds: Int = 60) {
        self.endpoint = endpoint
        self.token = token
        self.timeoutSeconds = timeoutSeconds
    }

    /// Sends one request and returns the whole response.
    public func request(_ method: String, _ path: String, body: [UInt8] = [], contentType: String? = nil) throws -> HTTPResponse {
        let connection = try HTTPConnection(endpoint: endpoint, timeoutSeconds: timeoutSeconds)
        defer { connection.close() }
        try connection.send(requestBytes(method, path, body: body, contentType: contentType))
        let head = try connection.readHead()
        var body: [UInt8] = []
        try connection.readBody(head: head) { chunk in
            guard body.count + chunk.count <= Self.maximumBody else { throw ClientError.responseTooLarge(limit: Self.maximumBody) }
            body += chunk
            return true
        }
        return HTTPResponse(status: head.status, headers: head.headers, body: body)
    }

    /// Opens a streaming request (console follow, events). `onData` runs for each piece of the
    /// body as it arrives; return false to stop. A non-2xx answer is returned whole instead.
    public func stream(_ method: String, _ path: String, connection holder: StreamHandle? = nil,
                       onData: ([UInt8]) throws -> Bool) throws -> HTTPResponse {
        let connection = try HTTPConnection(endpoint: endpoint, timeoutSeconds: timeoutSeconds)
        holder?.set(connection)
        defer { connection.close() }
        try connection.send(requestBytes(method, path, body: [], contentType: nil))
        let head = try connection.readHead()
        var errorBody: [UInt8] = []
        guard (200..<300).contains(head.status) else {
            try connection.readBody(head: head) { chunk in
                errorBody += chunk.prefix(max(0, 64 << 10 - errorBody.count))
                return true
            }
            return HTTPResponse(status: head.status, headers: head.headers, body: errorBody)
        }
        connection.clearTimeout()
        try connection.readBody(head: head, onData)
        return HTTPResponse(status: head.status, headers: head.headers, body: [])
    }

    func requestBytes(_ method: String, _ path: String, body: [UInt8], contentType: String?) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: vireo\r\nConnection: close\r\nContent-Length: \(body.count)\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        if let token { head += "Authorization: Bearer \(token)\r\n" }
        head += "\r\n"
        return Array(head.utf8) + body
    }
}

/// Lets another thread end a stream (the console's escape key) by shutting its socket down.
public final class StreamHandle: Sendable {
    private struct State {
        var connection: HTTPConnection?
        var cancelled = false
    }

    private let state = Mutex(State())

    public init() {}

    func set(_ connection: HTTPConnection) {
        state.withLock { state in
            state.connection = connection
            if state.cancelled { connection.shutdown() }
        }
    }

    public func cancel() {
        state.withLock { state in
            state.cancelled = true
            state.connection?.shutdown()
        }
    }

    /// True once `cancel` ran: the stream's end (or its error) was asked for.
    public var isCancelled: Bool {
        state.withLock { $0.cancelled }
    }
}
