import VMContract
import Foundation

/// What the daemon asked of a VM process, which decides how its exit is recorded.
enum StopIntent: Equatable, Sendable {
    case none, shutdown, destroy, reboot
    /// Asked to save itself to this file and stop (virsh save); not yet confirmed.
    case save(String)
    /// The VMM answered that the file is complete: however the process ends now, the VM is saved.
    case saved(String)
    /// The VMM said the destination runs the guest: however the process ends now, the VM has
    /// been migrated away.
    case migrated

    /// The snapshot file of a save that was asked for.
    var savedImage: String? {
        switch self {
        case .save(let path), .saved(let path): path
        default: nil
        }
    }
}

/// Turns a VM process's end into the state reason virsh would show.
enum ExitClassifier {
    /// `waitStatus` is the raw waitpid status when the daemon is the parent, else nil.
    static func reason(intent: StopIntent, status: RunStatus?, waitStatus: Int32?) -> VMStateReason {
        if intent == .migrated { return .migrated }
        if intent == .destroy || intent == .reboot { return .destroyed }
        if case .saved = intent { return .saved }
        if let status {
            switch status.outcome {
            case .saved: return .saved
            case .migrated: return .migrated
            case .poweroff, .reset, .debugExit: return .shutdown
            // The VMM stopped without the daemon asking: someone used the control API or a signal.
            case .stopped, .signal: return intent == .shutdown ? .shutdown : .destroyed
            case .failed: return .crashed
            }
        }
        guard let waitStatus else { return .unknown }
        let signalled = waitStatus & 0x7f
        if signalled != 0 { return .crashed }
        let code = (waitStatus >> 8) & 0xff
        // A VMM that stopped cleanly after being asked to save (its status file went missing).
        if code == 0, case .save = intent { return .saved }
        return code == 0 ? .shutdown : .failed
    }
}

extension RunStatus {
    /// What a `vireo run` that exited with `seccompViolationExitStatus` ended with: its report (the
    /// last such line of `log`, its stderr) as a failure. nil for any other end.
    static func seccompViolation(waitStatus: Int32?, log: String) -> RunStatus? {
        guard let waitStatus, waitStatus & 0x7F == 0, (waitStatus >> 8) & 0xFF == seccompViolationExitStatus else { return nil }
        let report = (readTail(log, bytes: 4096) ?? "").split(separator: "\n").last { $0.contains("seccomp: ") }
        let detail = report.map { line in line.hasPrefix("vireo: error: ") ? String(line.dropFirst("vireo: error: ".count)) : String(line) }
        return RunStatus(outcome: .failed, detail: detail ?? "seccomp: stopped by a system call outside its filter (no report in \(log))",
                         exitStatus: seccompViolationExitStatus)
    }
}
