import Foundation
import Testing

/// `vireo run --net user`: passt as the guest's network, no TAP, no privileges. The test guest's
/// own virtio-net driver asks for its gateway's MAC and must get passt's ARP answer.
@Suite(.serialized) struct UserNetworkCommandTests {
    @Test func aGuestOnUserNetworkingGetsAnswersFromPasst() throws {
        let result = try VireoBinary.run(["run", "-v", "--kernel", VireoBinary.guest("mb-virtio-net.elf"), "--cmdline", "arp",
                                          "--memory", "32M", "--net", "user,hostfwd=tcp:127.0.0.1:0-:22"].map {
                                              // (port 0 is refused: give one the test does not need to own)
                                              $0.replacingOccurrences(of: "127.0.0.1:0-", with: "127.0.0.1:\(Self.freePort())-")
                                          })
        #expect(result.status == 1, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("virtio-net: arp reply: 10.0.2.2 is at "), "\(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains("virtio-net on user networking (passt pid "), "\(result.stderr)")
        // passt went with the VM (--one-off, and Vireo ends it): none is left behind.
        #expect(!Self.passtRunning(), "a passt process outlived its VM")
    }

    @Test func withoutPasstTheErrorSaysWhatToInstall() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = "/nonexistent"
        environment.removeValue(forKey: "VIREO_PASST")
        let result = try VireoBinary.runProcess(VireoBinary.executable.path, ["run", "--kernel", VireoBinary.guest("mb-hello.elf"),
                                                                              "--memory", "32M", "--net", "user"], environment: environment)
        #expect(result.status != 0)
        #expect(result.stderr.contains("user networking needs passt (Debian: apt install passt), which is not on PATH"), "\(result.stderr)")
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length); return getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether a passt started by a vireo of this test run is still alive.
    static func passtRunning() -> Bool {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for pid in entries where Int(pid) != nil {
            guard let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { continue }
            if command.hasPrefix("passt\0"), command.contains("vireo-passt-") { return true }
        }
        return false
    }
}
