import Foundation
import Sandbox
import Testing
import VMContract

/// A real process confined as `vireo run` confines itself (Tests/SandboxProbe): a thread of each
/// kind makes one call; a forbidden one must end the process with status 159 and the one-line
/// report naming the thread, its filter and the call.
@Suite struct ViolationReportTests {
    static var probe: String {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("sandbox-probe").path
    }

    struct Outcome { let status: Int32; let output: String; let errors: String }

    func run(_ kind: String, _ call: String, seccomp: String? = nil, before: Bool = false) throws -> Outcome {
        let process = Process()
        var environment = ProcessInfo.processInfo.environment
        environment["VIREO_SECCOMP"] = seccomp
        if before { environment["SANDBOX_PROBE_BEFORE"] = "1" }
        process.environment = environment
        process.executableURL = URL(fileURLWithPath: Self.probe)
        process.arguments = [kind, call]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, output: String(decoding: out, as: UTF8.self),
                       errors: String(decoding: err, as: UTF8.self))
    }

    @Test(arguments: [("vcpu", "openat", 257), ("vcpu", "socket", 41), ("io", "openat", 257), ("io", "socket", 41),
                      ("control", "execve", 59), ("vcpu", "execve", 59)])
    func aForbiddenCallStopsTheProcessWithAReport(kind: String, call: String, number: Int) throws {
        let outcome = try run(kind, call)
        #expect(outcome.status == Sandbox.violationExitStatus, "\(outcome.output) \(outcome.errors)")
        #expect(outcome.errors == "vireo: error: seccomp: thread 'probe-\(kind)' (\(kind) filter) made system call \(call == "openat" ? "openat" : call) (\(number)), which its filter does not allow: the VM is stopped\n")
        #expect(!outcome.output.contains("returned"))
    }

    /// The daemon recognises the stop by this status (VMContract), so the two must agree.
    @Test func theExitStatusIsTheContractsOne() {
        #expect(Sandbox.violationExitStatus == RunStatus.seccompViolationExitStatus)
    }

    @Test func forkIsRefusedToEveryThread() throws {
        // glibc's fork() is clone(SIGCHLD): no CLONE_THREAD, so even the control filter stops it.
        let outcome = try run("control", "fork")
        #expect(outcome.status == Sandbox.violationExitStatus)
        #expect(outcome.errors.contains("made system call clone (56)"))
    }

    @Test func allowedCallsGoThroughAndCapabilitiesAreGone() throws {
        for kind in ["vcpu", "io", "control"] {
            let outcome = try run(kind, "write")
            #expect(outcome.status == 0, "\(kind): \(outcome.errors)")
            #expect(outcome.output == "written\nwrite returned 8, capabilities 0 and 0\n", "\(kind)")
        }
        // Run as root the drop has something to take: the process had capabilities before it.
        if getuid() == 0 {
            let root = try run("vcpu", "write", before: true)
            #expect(root.output.contains("capabilities 0 and 0\nbefore: "), "\(root.output)")
            #expect(!root.output.contains("before: 0\n"), "root had capabilities before the drop: \(root.output)")
        }
        // The control thread may open files (snapshots, logs): its filter lets openat through.
        let outcome = try run("control", "openat")
        #expect(outcome.status == 0, "\(outcome.errors)")
        #expect(outcome.output.hasPrefix("openat returned "))
    }
}

extension ViolationReportTests {
    /// Deriving a policy: in log mode the call is made (the kernel logs it), nothing stops.
    @Test func logModeMakesTheCall() throws {
        let outcome = try run("vcpu", "socket", seccomp: "log")
        #expect(outcome.status == 0, "\(outcome.errors)")
        #expect(outcome.output.hasPrefix("socket returned "))
        #expect(!outcome.output.hasPrefix("socket returned -"))
    }
}
