import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import VMM

public enum ControlServerError: Error, CustomStringConvertible {
    case pathInUse(String)
    case bindFailed(String, String)

    public var description: String {
        switch self {
        case let .pathInUse(path): return "--api-socket \(path) exists and is not a socket; refusing to replace it"
        case let .bindFailed(path, why): return "cannot listen on \(path): \(why)"
        }
    }
}

/// Serves `ControlAPI` over HTTP/1.1 on a Unix socket (mode 0600), on one event-loop thread.
/// Scriptable with `curl --unix-socket PATH http://vm/vm`.
public final class ControlServer: SessionEndpoint, @unchecked Sendable {
    public let socketPath: String
    private let api: ControlAPI
    private let console: ConsoleLog
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channel: Channel?
    /// Requests being answered: `stop` lets them finish, so the answer to the request that ends
    /// the VM (a save with then=stop) still reaches its caller.
    private let inFlight = InFlightRequests()

    public init(socketPath: String, api: ControlAPI) {
        self.socketPath = socketPath
        self.api = api
        self.console = api.console
    }

    public func start() throws {
        var info = stat()
        if lstat(socketPath, &info) == 0, (info.st_mode & S_IFMT) != S_IFSOCK {
            throw ControlServerError.pathInUse(socketPath)
        }
        let api = self.api, console = self.console, inFlight = self.inFlight
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 16)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(ControlHandler(api: api, console: console, inFlight: inFlight))
                }
            }
        do {
            channel = try bootstrap.bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).wait()
        } catch {
            throw ControlServerError.bindFailed(socketPath, "\(error)")
        }
        chmod(socketPath, 0o600)
    }

    /// Closes the socket (removing its file) and joins the event-loop thread, once the requests
    /// being answered have been (at most 10 s).
    public func stop() {
        inFlight.waitUntilIdle(timeoutSeconds: 10)
        try? channel?.close().wait()
        channel = nil
        try? group.syncShutdownGracefully()
        unlink(socketPath)
    }
}

/// One connection: collects a request, answers it off the event loop (pause may block briefly),
/// and for `GET /console?follow=1` keeps streaming serial output until the client goes away.
final class ControlHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests here carry no bodies worth more than this; larger ones are refused.
    static let maximumBody = 64 << 10

    private let api: ControlAPI
    private let console: ConsoleLog
    private let inFlight: InFlightRequests
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    private var body: [UInt8] = []
    private var subscription: Int?
    /// Console bytes waiting to be written, batched so a burst becomes one write.
    private let pending = Mutex<(bytes: [UInt8], scheduled: Bool)>(([], false))

    init(api: ControlAPI, console: ConsoleLog, inFlight: InFlightRequests) {
        self.api = api
        self.console = console
        self.inFlight = inFlight
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case let .head(requestHead):
            head = requestHead
            bodyBytes = 0
            body = []
        case let .body(buffer):
            bodyBytes += buffer.readableBytes
            // Kept only up to the limit; the total decides the 413 below.
            if bodyBytes <= Self.maximumBody { body += buffer.readableBytesView }
        case .end:
            guard let request = head else { return }
            head = nil
            if bodyBytes > Self.maximumBody {
                write(ControlAPI.Response.error(413, "request body too large"), keepAlive: false, context: context)
                return
            }
            let keepAlive = request.isKeepAlive
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            let api = self.api
            let requestBody = body
            body = []
            let inFlight = self.inFlight
            inFlight.begin()
            DispatchQueue.global().async {
                let response = api.handle(method: request.method.rawValue, uri: request.uri, body: requestBody)
                loop.execute {
                    let (handler, context) = bound.value
                    if response.followConsole {
                        // A stream never ends by itself: it does not hold up a stop.
                        handler.startFollowing(context: context)
                        inFlight.end()
                    } else {
                        handler.write(response, keepAlive: keepAlive, context: context).whenComplete { _ in inFlight.end() }
                    }
                }
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let id = subscription { console.detach(id) }
        subscription = nil
        context.fireChannelInactive()
    }

    @discardableResult
    private func write(_ response: ControlAPI.Response, keepAlive: Bool, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.count))
        if !keepAlive { headers.add(name: "connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
        return done
    }

    /// Chunked response: the recent output, then every byte the guest prints from now on.
    private func startFollowing(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/octet-stream")
        headers.add(name: "transfer-encoding", value: "chunked")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        // The console's thread reaches `pending` through the handler, which `bound` keeps alive
        // anyway (a Mutex cannot be copied into the closure).
        let (id, recent) = console.attach { [self] byte in
            let schedule = pending.withLock { state -> Bool in
                state.bytes.append(byte)
                defer { state.scheduled = true }
                return !state.scheduled
            }
            guard schedule else { return }
            loop.execute {
                let (handler, context) = bound.value
                handler.flushPending(context: context)
            }
        }
        subscription = id
        if !recent.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: recent)))), promise: nil)
        }
        context.flush()
    }

    private func flushPending(context: ChannelHandlerContext) {
        let bytes = pending.withLock { state -> [UInt8] in
            defer { state = ([], false) }
            return state.bytes
        }
        guard !bytes.isEmpty, context.channel.isActive else { return }
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
    }
}

/// A count of requests being answered, and a bounded wait for it to reach zero.
final class InFlightRequests: Sendable {
    private let count = Guarded(0)

    func begin() { count.update { $0 += 1 } }

    func end() { count.update { $0 -= 1 } }

    func waitUntilIdle(timeoutSeconds: Double) {
        _ = count.wait(until: { $0 <= 0 }, timeoutSeconds: timeoutSeconds) { _ in }
    }
}
