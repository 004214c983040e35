import Foundation

/// How a `vireo run` process ended, as it writes it with `--status-file` just before exiting.
///
/// The daemon learns its own children's exit status from waitpid, but a daemon restarted after a
/// crash is not the parent of the VMs it re-attached to; this file is how it still learns whether
/// the guest powered off or the VMM failed.
public struct RunStatus: Codable, Equatable, Sendable {
    public enum Outcome: String, Codable, Sendable {
        case poweroff, reset, stopped, failed, signal
        case debugExit = "debug-exit"
    }

    public var outcome: Outcome
    /// One line for people: the failure report, the signal number, the debug-exit value.
    public var detail: String
    public var exitStatus: Int32

    public init(outcome: Outcome, detail: String, exitStatus: Int32) {
        self.outcome = outcome
        self.detail = detail
        self.exitStatus = exitStatus
    }

    enum CodingKeys: String, CodingKey {
        case outcome, detail
        case exitStatus = "exit_status"
    }

    /// Writes the file atomically (temporary file, then rename), so a reader never sees half of it.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Reads a status file; nil when it is missing or not one (then the exit is unexplained).
    public static func read(from path: String) -> RunStatus? {
        guard let text = readSmallFile(path, limit: 16 << 10) else { return nil }
        return try? JSONDecoder().decode(RunStatus.self, from: Data(text.utf8))
    }
}

/// What the daemon asked of a VM process, which decides how its exit is recorded.
enum StopIntent: Sendable {
    case none, shutdown, destroy, reboot
}

/// Turns a VM process's end into the state reason virsh would show.
enum ExitClassifier {
    /// `waitStatus` is the raw waitpid status when the daemon is the parent, else nil.
    static func reason(intent: StopIntent, status: RunStatus?, waitStatus: Int32?) -> VMStateReason {
        if intent == .destroy || intent == .reboot { return .destroyed }
        if let status {
            switch status.outcome {
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
        return code == 0 ? .shutdown : .failed
    }
}
