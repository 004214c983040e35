import Foundation
@testable import Manager

/// A daemon in this process with a fresh state dir, its API on a Unix socket and on TCP (port
/// chosen by the kernel). It starts no real VMs (the executable does not exist, or is
/// FakeVMMDaemon's script), so it needs no KVM; the suites with real VMs are DaemonVMTests and
/// VireoCLITests.
final class InProcessDaemon {
    let directory: String
    let daemon: Daemon
    static let token = "test-token-0123456789abcdef"

    private let cleanUp: [String]

    /// `executable` is what VMs run as (FakeVMMDaemon's script); `cleanUp` is removed at the end.
    init(executable: String = "/nonexistent/vireo", cleanUp: [String] = [], apiLimits: APILimits = APILimits(),
         restartBackoff: RestartBackoff = RestartBackoff(), confineStorage: Bool = false,
         cgroupPartition: String? = nil) throws {
        // Short: a Unix socket path has at most 107 bytes.
        directory = "/tmp/vd-\(UUID().uuidString.prefix(8))"
        self.cleanUp = cleanUp
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        daemon = try Daemon(configuration: DaemonConfiguration(
            stateDirectory: directory + "/state", socketPath: directory + "/api.sock",
            listen: ("127.0.0.1", 0), token: Self.token, executable: executable, apiLimits: apiLimits,
            restartBackoff: restartBackoff, confineStorage: confineStorage,
            // The host's cgroups only where a test names a partition: by default a tree without any.
            cgroupPartition: cgroupPartition ?? "vireo", cgroupRoot: cgroupPartition == nil ? directory + "/no-cgroups" : ""), log: { if ProcessInfo.processInfo.environment["VIREO_TEST_DAEMON_LOG"] != nil { FileHandle.standardError.write(Data(("daemon: " + $0 + "\n").utf8)) } })
        try daemon.start()
    }

    var unix: HTTPClient { HTTPClient(endpoint: .unix(path: directory + "/api.sock"), timeoutSeconds: 10) }

    func tcp(token: String?) -> HTTPClient {
        HTTPClient(endpoint: .tcp(host: "127.0.0.1", port: UInt16(daemon.tcpPort ?? 0)), token: token, timeoutSeconds: 10)
    }

    deinit {
        daemon.stop()
        try? FileManager.default.removeItem(atPath: directory)
        for path in cleanUp { try? FileManager.default.removeItem(atPath: path) }
    }
}

func minimalYAML(_ name: String, memory: String = "32M") -> [UInt8] {
    Array("name: \(name)\nmemory: \(memory)\nos:\n  kernel: /var/lib/vireo/vmlinux\n".utf8)
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ response: HTTPResponse) throws -> T {
    try JSONDecoder().decode(type, from: Data(response.body))
}
