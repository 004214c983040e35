import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What one API listener allows a client, so that clients (on TCP: before they prove anything)
/// cannot hold the daemon's memory or descriptors: libvirtd's max_clients and keepalive, nginx's
/// client_header_timeout and client_max_body_size.
public struct APILimits: Sendable, Equatable {
    /// Connections open at once; one more is answered 503 and closed.
    public var maxConnections: Int
    /// Seconds a connection has to deliver each whole request (head and body), counted from its
    /// accept or from the previous answer; it is closed after that. Streams (console, events)
    /// are not timed once they answer.
    public var requestTimeoutSeconds: Double
    /// Request bodies larger than this are refused (413) by their Content-Length, before any of
    /// the body is read, or as soon as a chunked one goes past it. Definitions are at most 1 MiB.
    public var maximumBody: Int

    public init(maxConnections: Int = 256, requestTimeoutSeconds: Double = 30, maximumBody: Int = 2 << 20) {
        self.maxConnections = maxConnections
        self.requestTimeoutSeconds = requestTimeoutSeconds
        self.maximumBody = maximumBody
    }
}

/// The connections open on one listener. A class, because the channel initializer and each
/// connection's close callback share it (a Mutex cannot be captured by an escaping closure).
private final class ConnectionCount: Sendable {
    private let count = Mutex(0)

    var value: Int { count.withLock { $0 } }

    /// Counts one more connection, unless `limit` are open already.
    func admit(limit: Int) -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func release() { count.withLock { $0 -= 1 } }
}

/// Serves the daemon's REST API over HTTP/1.1 on a Unix socket (mode 0600: the file mode is the
/// access control) or on TCP, where every request must carry `Authorization: Bearer <token>`.
final class APIServer: @unchecked Sendable {
    private let daemon: Daemon
    private let requiredToken: [UInt8]?
    private let limits: APILimits
    private let connections = ConnectionCount()
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?
    private var socketPath: String?

    init(daemon: Daemon, requiredToken: String?, limits: APILimits = APILimits()) {
        self.daemon = daemon
        self.requiredToken = requiredToken.map { Array($0.utf8) }
        self.limits = limits
    }

    var boundPort: Int? { socketPath == nil ? channel?.localAddress?.port : nil }

    /// Connections open now (for tests).
    var openConnections: Int { connections.value }

    private var bootstrap: ServerBootstrap {
        let daemon = self.daemon, token = self.requiredToken, limits = self.limits, connections = self.connections
        return ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 128)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.writeBufferWaterMark, value: .init(low: 1 << 20, high: 4 << 20))
            .childChannelInitializer { channel in
                guard connections.admit(limit: limits.maxConnections) else {
                    // No HTTP pipeline for it: one canned answer, then the connection goes.
                    let body = String(decoding: jsonBytes(APIErrorBody(
                        error: "too many connections (\(limits.maxConnections) open); try again later", field: nil)), as: UTF8.self)
                    let answer = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                        + "content-length: \(body.utf8.count)\r\nconnection: close\r\nretry-after: 1\r\n\r\n" + body
                    channel.writeAndFlush(channel.allocator.buffer(string: answer)).whenComplete { _ in channel.close(promise: nil) }
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                channel.closeFuture.whenComplete { _ in connections.release() }
                return channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(APIHandler(daemon: daemon, requiredToken: token, limits: limits))
                }
            }
    }

    /// Refuses a path that is not a socket or that another daemon still answers on; removes a
    /// socket file left by a daemon that was killed.
    static func claim(unixSocket path: String) throws {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw APIError(500, "\(path) exists and is not a socket; refusing to replace it")
            }
            // A socket file that still answers belongs to a running daemon; one that does not is
            // left over from a daemon that was killed.
            if (try? HTTPClient(endpoint: .unix(path: path), timeoutSeconds: 2).request("GET", "/v1/vms")) != nil {
                throw APIError(500, "another vireo daemon is listening on \(path)")
            }
            unlink(path)
        }
    }

    func listen(unixSocket path: String) throws {
        try Self.claim(unixSocket: path)
        // Created 0600 from the start: no window in which another user could connect.
        let previous = umask(0o077)
        defer { umask(previous) }
        do {
            channel = try bootstrap.bind(unixDomainSocketPath: path).wait()
        } catch {
            throw APIError(500, "cannot listen on \(path): \(error)")
        }
        chmod(path, 0o600)
        socketPath = path
    }

    func listen(host: String, port: Int) throws {
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            throw APIError(500, "cannot listen on \(host):\(port): \(error)")
        }
    }

    func close() {
        try? channel?.close().wait()
        channel = nil
        try? group.syncShutdownGracefully()
        if let socketPath { unlink(socketPath) }
    }
}

/// One connection: frames a request, checks the token, hands it to the daemon, writes the answer
/// (whole, or chunked for streams until either side ends it). A request is judged at its head:
/// a wrong token or a too large Content-Length is answered and the connection closed before any
/// of the body is read; each request must arrive whole within the request timeout.
final class APIHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let daemon: Daemon
    private let requiredToken: [UInt8]?
    private let limits: APILimits
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var bodyBytes = 0
    /// Set once a request was refused: the rest of what the client sends is dropped, and the
    /// connection closes after the answer.
    private var refused = false
    /// Closes the connection if the next request does not arrive whole in time.
    private var deadline: Scheduled<Void>?
    private var closeHandlers: [@Sendable () -> Void] = []

    init(daemon: Daemon, requiredToken: [UInt8]?, limits: APILimits = APILimits()) {
        self.daemon = daemon
        self.requiredToken = requiredToken
        self.limits = limits
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        if deadline == nil { armDeadline(context: context) }
        context.fireChannelActive()
    }

    /// Starts the clock for the next request: from the accept, or from the previous answer.
    private func armDeadline(context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: .nanoseconds(Int64(limits.requestTimeoutSeconds * 1e9))) {
            channel.close(promise: nil)
        }
    }

    private func refuse(_ error: APIError, context: ChannelHandlerContext, extraHeaders: [(String, String)] = []) {
        refused = true
        head = nil
        body = []
        write(.error(error), keepAlive: false, context: context, extraHeaders: extraHeaders)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        if refused { return }
        switch part {
        case .head(let requestHead):
            guard authorized(requestHead) else {
                refuse(APIError(401, "missing or wrong bearer token"), context: context, extraHeaders: [("www-authenticate", "Bearer")])
                return
            }
            if let length = requestHead.headers.first(name: "content-length").flatMap({ Int($0) }), length > limits.maximumBody {
                refuse(APIError(413, "request body larger than \(limits.maximumBody) bytes"), context: context)
                return
            }
            head = requestHead
            body = []
            bodyBytes = 0
        case .body(let buffer):
            bodyBytes += buffer.readableBytes
            guard bodyBytes <= limits.maximumBody else {
                refuse(APIError(413, "request body larger than \(limits.maximumBody) bytes"), context: context)
                return
            }
            body += buffer.readableBytesView
        case .end:
            guard let request = head else { return }
            head = nil
            // The daemon may take its time (a save, a migration): not the client's.
            deadline?.cancel()
            deadline = nil
            let keepAlive = request.isKeepAlive
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            var apiRequest = APIRequest(method: request.method.rawValue, uri: request.uri, body: body)
            apiRequest.viaTCP = requiredToken != nil
            body = []
            daemon.handle(apiRequest) { response in
                loop.execute {
                    let (handler, context) = bound.value
                    handler.write(response, keepAlive: keepAlive, context: context)
                }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        let handlers = closeHandlers
        closeHandlers = []
        for handler in handlers { handler() }
        context.fireChannelInactive()
    }

    /// Constant-time comparison, so response timing says nothing about how much of a guess matched.
    private func authorized(_ request: HTTPRequestHead) -> Bool {
        guard let requiredToken else { return true }
        guard let header = request.headers.first(name: "authorization"), header.hasPrefix("Bearer ") else { return false }
        let offered = Array(header.utf8.dropFirst("Bearer ".utf8.count))
        var difference = UInt8(offered.count == requiredToken.count ? 0 : 1)
        for index in 0..<requiredToken.count {
            difference |= requiredToken[index] ^ (index < offered.count ? offered[index] : 0)
        }
        return difference == 0
    }

    private func write(_ response: APIResponse, keepAlive: Bool, context: ChannelHandlerContext,
                       extraHeaders: [(String, String)] = []) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        let status = HTTPResponseStatus(statusCode: response.status)
        switch response.body {
        case .bytes(let bytes):
            headers.add(name: "content-length", value: String(bytes.count))
            if !keepAlive { headers.add(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            if !bytes.isEmpty {
                context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
            }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            } else {
                armDeadline(context: context)
            }
        case .stream(let start):
            headers.add(name: "transfer-encoding", value: "chunked")
            headers.add(name: "cache-control", value: "no-cache")
            context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            start(streamWriter(context: context))
        }
    }

    /// A writer that hops onto the event loop; a client too slow to keep up with its stream
    /// (4 MiB queued) is disconnected rather than buffered without bound.
    private func streamWriter(context: ChannelHandlerContext) -> StreamWriter {
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let channel = context.channel
        return StreamWriter(
            write: { bytes in
                loop.execute {
                    let (handler, context) = bound.value
                    guard channel.isActive else { return }
                    guard channel.isWritable else {
                        channel.close(promise: nil)
                        return
                    }
                    context.writeAndFlush(handler.wrapOutboundOut(.body(.byteBuffer(channel.allocator.buffer(bytes: bytes)))), promise: nil)
                }
            },
            finish: {
                loop.execute {
                    let (handler, context) = bound.value
                    guard channel.isActive else { return }
                    context.writeAndFlush(handler.wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
                }
            },
            onClose: { handler in
                loop.execute {
                    let (apiHandler, _) = bound.value
                    if channel.isActive { apiHandler.closeHandlers.append(handler) } else { handler() }
                }
            })
    }
}
