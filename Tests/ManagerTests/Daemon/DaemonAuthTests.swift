import Foundation
import Testing
@testable import Manager

/// The TCP listener: every request needs the bearer token; the Unix socket is guarded by its mode.
@Suite struct DaemonAuthTests {
    @Test func tcpRefusesAMissingOrWrongToken() throws {
        let server = try InProcessDaemon()
        let missing = try server.tcp(token: nil).request("GET", "/v1/vms")
        #expect(missing.status == 401)
        #expect(missing.headers["www-authenticate"] == "Bearer")
        #expect(try server.tcp(token: "wrong").request("GET", "/v1/vms").status == 401)
        // One character short, and one too many: length differences are refused too.
        #expect(try server.tcp(token: String(InProcessDaemon.token.dropLast())).request("GET", "/v1/vms").status == 401)
        #expect(try server.tcp(token: InProcessDaemon.token + "x").request("GET", "/v1/vms").status == 401)
        // A refused request changes nothing.
        #expect(try server.tcp(token: "wrong").request("POST", "/v1/vms", body: minimalYAML("sneaky")).status == 401)
        let good = try server.tcp(token: InProcessDaemon.token).request("GET", "/v1/vms")
        #expect(good.status == 200)
        #expect(good.text == "[]\n")
    }

    @Test func unixSocketIsPrivate() throws {
        let server = try InProcessDaemon()
        var info = stat()
        #expect(stat(server.directory + "/api.sock", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(try server.unix.request("GET", "/v1/vms").status == 200)
    }

    @Test func aSecondDaemonOnTheSameSocketIsRefused() throws {
        let server = try InProcessDaemon()
        let second = try Daemon(configuration: DaemonConfiguration(
            stateDirectory: server.directory + "/state2", socketPath: server.directory + "/api.sock",
            executable: "/nonexistent"), log: { _ in })
        #expect(throws: APIError.self) { try second.start() }
        #expect(try server.unix.request("GET", "/v1/vms").status == 200)
    }

    @Test func tcpWithoutATokenDoesNotStart() throws {
        let directory = "/tmp/vd-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try Daemon(configuration: DaemonConfiguration(
            stateDirectory: directory, socketPath: directory + "/api.sock", listen: ("127.0.0.1", 0),
            token: nil, executable: "/nonexistent"), log: { _ in })
        #expect(throws: APIError.self) { try daemon.start() }
        daemon.stop()
    }
}

@Suite struct DaemonStateDirectoryLockTests {
    @Test func aSecondDaemonOnTheSameStateDirectoryIsRefused() throws {
        let server = try InProcessDaemon()
        let second = try Daemon(configuration: DaemonConfiguration(
            stateDirectory: server.directory + "/state", socketPath: server.directory + "/other.sock",
            executable: "/nonexistent"), log: { _ in })
        #expect(throws: APIError(500, "another vireo daemon is using the state directory \(server.directory)/state")) {
            try second.start()
        }
    }
}
