import VMContract
import Foundation
import Testing
@testable import Manager

/// on_crash = restart against fake VMMs killed with SIGKILL: a VM that keeps dying soon after it
/// starts waits twice as long each time (RestartBackoff), one that ran for the window restarts at
/// once, and destroy cancels a restart that is waiting.
@Suite struct DaemonRestartBackoffTests {
    @Test func aVMThatKeepsCrashingWaitsLongerEachTime() throws {
        let fake = try FakeVMMDaemon(restartBackoff: RestartBackoff(window: 60, firstDelay: 0.4, maximumDelay: 1.0))
        try fake.define("crashy", extraYAML: "onCrash: restart\n")
        #expect(try fake.post("/v1/vms/crashy/start").status == 200)
        var waits: [Double] = []
        for _ in 0..<4 {
            let pid = try #require(try summary(fake, "crashy").id)
            let killed = Date()
            #expect(kill(pid, SIGKILL) == 0)
            let next = try #require(waitForNewProcess(fake, "crashy", after: pid, seconds: 10), "no restart after pid \(pid)")
            waits.append(Date().timeIntervalSince(killed))
            #expect(next != pid)
        }
        // 0.4, 0.8, then capped at 1.0 s (each measured from the kill, so a little longer).
        for (wait, expected) in zip(waits, [0.4, 0.8, 1.0, 1.0]) {
            #expect(wait >= expected - 0.05 && wait < expected + 2, "waits \(waits)")
        }
        #expect(try fake.state("crashy") == VMStateBody(state: "running", reason: "booted"))

        // While a restart waits, destroy keeps the VM down.
        let pid = try #require(try summary(fake, "crashy").id)
        #expect(kill(pid, SIGKILL) == 0)
        #expect(fake.waitForState("crashy", "shutoff"))
        let destroy = try fake.post("/v1/vms/crashy/destroy")
        #expect(destroy.status == 200)
        #expect(try decodeJSON(ActionResult.self, destroy).message == "Domain 'crashy' destroyed (its automatic restart is cancelled)")
        usleep(1_500_000)
        #expect(try fake.state("crashy") == VMStateBody(state: "shutoff", reason: "crashed"))
        #expect(try fake.post("/v1/vms/crashy/destroy").status == 409)
    }

    @Test func aVMThatRanForTheWindowIsRestartedAtOnce() throws {
        let fake = try FakeVMMDaemon(restartBackoff: RestartBackoff(window: 0.3, firstDelay: 30, maximumDelay: 30))
        try fake.define("steady", extraYAML: "onCrash: restart\n")
        #expect(try fake.post("/v1/vms/steady/start").status == 200)
        usleep(500_000)
        let pid = try #require(try summary(fake, "steady").id)
        #expect(kill(pid, SIGKILL) == 0)
        #expect(waitForNewProcess(fake, "steady", after: pid, seconds: 5) != nil)
        // Quick ends would wait 30 s: a user's start does not, and cancels the waiting restart.
        let second = try #require(try summary(fake, "steady").id)
        #expect(kill(second, SIGKILL) == 0)
        #expect(fake.waitForState("steady", "shutoff"))
        #expect(try fake.post("/v1/vms/steady/start").status == 200)
        #expect(try fake.state("steady") == VMStateBody(state: "running", reason: "booted"))
        #expect(try fake.post("/v1/vms/steady/destroy").status == 200)
    }

    @Test func backoffDoublesUpToItsMaximum() {
        let backoff = RestartBackoff()
        #expect((0...11).map { backoff.delay(afterQuickEnds: $0) } == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300])
        #expect(backoff.delay(afterQuickEnds: Int.max) == 300)
    }

    private func summary(_ fake: FakeVMMDaemon, _ name: String) throws -> VMSummary {
        try decodeJSON(VMSummary.self, try fake.client.request("GET", "/v1/vms/\(name)"))
    }

    /// The next process once it is up (its control socket answered the daemon): one killed
    /// before that counts as a VMM that never came up, which is not restarted at all.
    private func waitForNewProcess(_ fake: FakeVMMDaemon, _ name: String, after pid: Int32, seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let process = try? fake.server.daemon.controller(name).process, process.identity.pid != pid, process.hasAnswered {
                return process.identity.pid
            }
            usleep(10_000)
        }
        return nil
    }
}
