import Foundation
import Testing
@testable import Manager

/// The blocking client's response framing, against a socket that answers with exact bytes.
@Suite struct HTTPClientTests {
    func answer(_ raw: String) throws -> Result<HTTPResponse, ClientError> {
        let path = "/tmp/vdh-\(UUID().uuidString.prefix(8)).sock"
        let server = try ScriptedControlSocket(path: path, raw: raw)
        defer { server.close(); unlink(path) }
        do {
            return .success(try HTTPClient(endpoint: .unix(path: path), timeoutSeconds: 5).request("GET", "/x"))
        } catch let error as ClientError {
            return .failure(error)
        }
    }

    @Test func chunkedAndInterimResponsesAreDecoded() throws {
        let chunked = try answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n")
        let response = try chunked.get()
        #expect(response.status == 200 && response.text == "Wikipedia")
        let untilClose = try answer("HTTP/1.0 404 Not Found\r\nX-A: b\r\n\r\n{\"error\": \"nope\"}").get()
        #expect(untilClose.status == 404 && untilClose.errorMessage == "nope" && untilClose.headers["x-a"] == "b")
    }

    @Test func hostileFramingIsAnErrorNotACrash() throws {
        #expect(throws: ClientError.malformedResponse(reason: "bad status line")) { try answer("SSH-2.0-OpenSSH\r\n\r\n").get() }
        #expect(throws: ClientError.malformedResponse(reason: "bad chunk size")) {
            try answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\n").get()
        }
        #expect(throws: ClientError.malformedResponse(reason: "bad Content-Length")) {
            try answer("HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n").get()
        }
        #expect(throws: ClientError.malformedResponse(reason: "connection closed mid-body")) {
            try answer("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort").get()
        }
        let interim = String(repeating: "HTTP/1.1 100 Continue\r\n\r\n", count: 9)
        #expect(throws: ClientError.malformedResponse(reason: "too many interim (1xx) responses")) { try answer(interim).get() }
        let huge = "HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 70_000) + "\r\n\r\n"
        #expect(throws: ClientError.self) { try answer(huge).get() }
    }

    @Test func connectFailuresNameTheEndpoint() {
        #expect(throws: ClientError.cannotConnect(endpoint: "unix:///nonexistent/x.sock", reason: "No such file or directory")) {
            try HTTPClient(endpoint: .unix(path: "/nonexistent/x.sock")).request("GET", "/")
        }
    }
}
