import Manager
import VMM

// `vireo run --status-file PATH`: how the run ended, written just before exit, so a management
// daemon that is not this process's parent (it was restarted) still learns why a VM stopped.
extension Run {
    func recordStatus(_ outcome: MachineExit) {
        let kind: RunStatus.Outcome = switch outcome {
        case .powerOff: .poweroff
        case .reset: .reset
        case .debugExit: .debugExit
        case .stopped: .stopped
        case .failed: .failed
        }
        recordStatus(kind, detail: outcome.description, exitStatus: outcome.processStatus)
    }

    func recordStatus(_ outcome: RunStatus.Outcome, detail: String, exitStatus: Int32) {
        guard let statusFile else { return }
        do {
            try RunStatus(outcome: outcome, detail: detail, exitStatus: exitStatus).write(to: statusFile)
        } catch {
            printError("cannot write status file \(statusFile): \(error)")
        }
    }
}
