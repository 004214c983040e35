import VMContract
import Foundation

// Calls on a VM's control API by `ControlRoute`, answers read as VMContract types: a path, a
// method or a field is spelled once, in the contract both sides compile against.
extension HTTPClient {
    func call(_ route: ControlRoute, query: String = "", body: [UInt8] = []) throws -> HTTPResponse {
        try request(route.method, route.path + query, body: body)
    }

    /// The answer to `route` as `type`; nil unless it is a 2xx with that body.
    func answer<T: Decodable>(_ type: T.Type, to route: ControlRoute, body: [UInt8] = []) -> T? {
        guard let response = try? call(route, body: body), (200..<300).contains(response.status) else { return nil }
        return try? ContractJSON.decode(type, from: response.body)
    }
}
