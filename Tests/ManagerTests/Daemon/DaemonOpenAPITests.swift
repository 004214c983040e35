import Foundation
import Testing
import Yams
@testable import Manager

/// docs/api/openapi.yaml and the router must agree on every path and method, both ways.
@Suite struct DaemonOpenAPITests {
    static let document: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            let candidate = url.appendingPathComponent("docs/api/openapi.yaml")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
        }
        return URL(fileURLWithPath: "docs/api/openapi.yaml")
    }()

    static func documentedRoutes() throws -> Set<Route> {
        let text = try String(contentsOf: document, encoding: .utf8)
        guard let root = try Yams.load(yaml: text) as? [String: Any], let paths = root["paths"] as? [String: Any] else {
            throw APIError(500, "openapi.yaml has no paths")
        }
        let methods = ["get", "put", "post", "delete", "patch", "head", "options"]
        var routes = Set<Route>()
        for (path, item) in paths {
            guard let operations = item as? [String: Any] else { continue }
            for key in operations.keys where methods.contains(key) {
                routes.insert(Route(method: key.uppercased(), template: path))
            }
        }
        return routes
    }

    @Test func everyServedRouteIsDocumentedAndViceVersa() throws {
        let documented = try Self.documentedRoutes()
        let served = Set(Route.all)
        #expect(served.subtracting(documented).isEmpty, "served but not documented: \(served.subtracting(documented))")
        #expect(documented.subtracting(served).isEmpty, "documented but not served: \(documented.subtracting(served))")
        #expect(served.count == Route.all.count, "a route is listed twice")
    }

    /// The table is what the daemon dispatches on: every documented route reaches a handler
    /// (never the router's own 404/405).
    @Test func everyDocumentedRouteReachesAHandler() throws {
        let server = try InProcessDaemon()
        for route in try Self.documentedRoutes() where route.template != "/v1/events" && !route.template.hasSuffix("/console") {
            let path = route.template.replacingOccurrences(of: "{name}", with: "nosuchvm").replacingOccurrences(of: "{volume}", with: "v")
            let response = try server.unix.request(route.method, path, body: [])
            #expect(response.status != 405, "\(route)")
            let missing = route.template.hasPrefix("/v1/pools/") ? "no storage pool named 'nosuchvm'" : "no VM named 'nosuchvm'"
            if response.status == 404 { #expect(response.errorMessage == missing, "\(route)") }
        }
    }

    @Test func routeTemplatesMatchOnlyWholeSegments() {
        #expect(Route.resolve(method: "GET", path: "/v1/vms/a/state") == .found(Route(method: "GET", template: "/v1/vms/{name}/state"), ["name": "a"]))
        #expect(Route.resolve(method: "GET", path: "/v1/vms//state") == .notFound)
        #expect(Route.resolve(method: "GET", path: "/v1/vms/a/state/x") == .notFound)
        #expect(Route.resolve(method: "DELETE", path: "/v1/vms/a/state") == .wrongMethod(allowed: ["GET"]))
    }
}
