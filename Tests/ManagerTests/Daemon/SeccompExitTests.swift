import Foundation
import Testing
import VMContract
@testable import Manager

/// A VMM stopped by its seccomp filter writes no status file (it ends from a signal handler): the
/// daemon takes the report from its log, so `vireo start`'s error and the daemon's log name the call.
@Suite struct SeccompExitTests {
    @Test func theReportComesFromTheProcessLog() throws {
        let log = NSTemporaryDirectory() + "vireo-seccomp-\(UUID().uuidString).log"
        defer { unlink(log) }
        let report = "seccomp: thread 'vcpu0' (vcpu filter) made system call openat (257), which its filter does not allow: the VM is stopped"
        try "vireo: booting\nvireo: error: \(report)\n".write(toFile: log, atomically: true, encoding: .utf8)
        let status = try #require(RunStatus.seccompViolation(waitStatus: RunStatus.seccompViolationExitStatus << 8, log: log))
        #expect(status.outcome == .failed && status.detail == report && status.exitStatus == 159)
        #expect(ExitClassifier.reason(intent: .none, status: status, waitStatus: 159 << 8) == .crashed)
        // Any other end is not a seccomp stop.
        #expect(RunStatus.seccompViolation(waitStatus: 1 << 8, log: log) == nil)
        #expect(RunStatus.seccompViolation(waitStatus: 9, log: log) == nil)  // SIGKILL
        #expect(RunStatus.seccompViolation(waitStatus: nil, log: log) == nil)
        // A log without the report still says what happened.
        let missing = RunStatus.seccompViolation(waitStatus: 159 << 8, log: log + ".missing")
        #expect(missing?.detail.hasPrefix("seccomp: stopped by a system call outside its filter") == true)
    }
}
