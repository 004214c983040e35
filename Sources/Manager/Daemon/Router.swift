import Foundation

/// One request as the router sees it: the HTTP plumbing has already framed and bounded it.
struct APIRequest: Sendable {
    var method: String
    var path: String
    var query: [String: String]
    var body: [UInt8]
    /// Came in on the TCP listener (another host, perhaps), not the Unix socket.
    var viaTCP = false

    init(method: String, uri: String, body: [UInt8]) {
        self.method = method
        self.body = body
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = String(parts.first ?? "")
        query = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
                query[key] = kv.count == 2 ? (String(kv[1]).removingPercentEncoding ?? String(kv[1])) : ""
            }
        }
    }
}

/// Where a streamed response's bytes go (console follow, events). Safe from any thread.
struct StreamWriter: Sendable {
    let write: @Sendable ([UInt8]) -> Void
    let finish: @Sendable () -> Void
    /// Registers what to do when the client goes away (stop the upstream, unsubscribe).
    let onClose: @Sendable (@escaping @Sendable () -> Void) -> Void
}

struct APIResponse: Sendable {
    enum Body: Sendable {
        case bytes([UInt8])
        case stream(@Sendable (StreamWriter) -> Void)
    }

    var status: Int
    var contentType: String
    var body: Body

    static func json(_ status: Int, _ value: some Encodable) -> APIResponse {
        APIResponse(status: status, contentType: "application/json", body: .bytes(jsonBytes(value)))
    }

    static func error(_ error: APIError) -> APIResponse {
        json(error.status, APIErrorBody(error: error.message, field: error.field))
    }

    static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> APIResponse {
        APIResponse(status: status, contentType: contentType, body: .bytes(Array(text.utf8)))
    }
}

/// The daemon's routes: the one table that both dispatch and the OpenAPI test read.
public struct Route: Hashable, Sendable, CustomStringConvertible {
    public let method: String
    /// Path with `{parameters}`, as in OpenAPI.
    public let template: String

    public var description: String { "\(method) \(template)" }

    /// Every route the daemon serves.
    public static let all: [Route] = [
        Route(method: "GET", template: "/v1/vms"),
        Route(method: "POST", template: "/v1/vms"),
        Route(method: "GET", template: "/v1/vms/{name}"),
        Route(method: "DELETE", template: "/v1/vms/{name}"),
        Route(method: "GET", template: "/v1/vms/{name}/definition"),
        Route(method: "PUT", template: "/v1/vms/{name}/definition"),
        Route(method: "POST", template: "/v1/vms/{name}/start"),
        Route(method: "POST", template: "/v1/vms/{name}/shutdown"),
        Route(method: "POST", template: "/v1/vms/{name}/destroy"),
        Route(method: "POST", template: "/v1/vms/{name}/reboot"),
        Route(method: "POST", template: "/v1/vms/{name}/suspend"),
        Route(method: "POST", template: "/v1/vms/{name}/resume"),
        Route(method: "POST", template: "/v1/vms/{name}/save"),
        Route(method: "GET", template: "/v1/vms/{name}/save/progress"),
        Route(method: "POST", template: "/v1/restore"),
        Route(method: "POST", template: "/v1/vms/{name}/managedsave"),
        Route(method: "DELETE", template: "/v1/vms/{name}/managedsave"),
        Route(method: "POST", template: "/v1/vms/{name}/migrate"),
        Route(method: "GET", template: "/v1/vms/{name}/migration"),
        Route(method: "POST", template: "/v1/vms/{name}/migrate/cancel"),
        Route(method: "POST", template: "/v1/migrations/incoming"),
        Route(method: "DELETE", template: "/v1/migrations/incoming/{name}"),
        Route(method: "PUT", template: "/v1/vms/{name}/autostart"),
        Route(method: "GET", template: "/v1/vms/{name}/state"),
        Route(method: "GET", template: "/v1/vms/{name}/stats"),
        Route(method: "GET", template: "/v1/vms/{name}/console"),
        Route(method: "POST", template: "/v1/vms/{name}/console/input"),
        Route(method: "GET", template: "/v1/pools"),
        Route(method: "POST", template: "/v1/pools"),
        Route(method: "GET", template: "/v1/pools/{name}"),
        Route(method: "DELETE", template: "/v1/pools/{name}"),
        Route(method: "POST", template: "/v1/pools/{name}/build"),
        Route(method: "POST", template: "/v1/pools/{name}/start"),
        Route(method: "POST", template: "/v1/pools/{name}/destroy"),
        Route(method: "PUT", template: "/v1/pools/{name}/autostart"),
        Route(method: "GET", template: "/v1/pools/{name}/volumes"),
        Route(method: "POST", template: "/v1/pools/{name}/volumes"),
        Route(method: "DELETE", template: "/v1/pools/{name}/volumes/{volume}"),
        Route(method: "GET", template: "/v1/events"),
        Route(method: "GET", template: "/metrics"),
    ]

    /// The parameters if `path` fits this route's template.
    func match(_ path: String) -> [String: String]? {
        let want = template.split(separator: "/", omittingEmptySubsequences: false)
        let have = path.split(separator: "/", omittingEmptySubsequences: false)
        guard want.count == have.count else { return nil }
        var parameters: [String: String] = [:]
        for (pattern, segment) in zip(want, have) {
            if pattern.hasPrefix("{") && pattern.hasSuffix("}") {
                guard !segment.isEmpty, let decoded = String(segment).removingPercentEncoding else { return nil }
                parameters[String(pattern.dropFirst().dropLast())] = decoded
            } else if pattern != segment {
                return nil
            }
        }
        return parameters
    }

    enum Resolution: Equatable {
        case found(Route, [String: String])
        case wrongMethod(allowed: [String])
        case notFound
    }

    static func resolve(method: String, path: String) -> Resolution {
        var allowed: [String] = []
        for route in all {
            guard let parameters = route.match(path) else { continue }
            if route.method == method { return .found(route, parameters) }
            allowed.append(route.method)
        }
        return allowed.isEmpty ? .notFound : .wrongMethod(allowed: allowed.sorted())
    }
}
