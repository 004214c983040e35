/// Why a machine stopped running.
public enum MachineExit: Equatable, Sendable, CustomStringConvertible {
    /// The guest powered off.
    case powerOff
    /// The guest reset itself (i8042 pulse, triple fault, KVM reset event).
    case reset
    /// A test guest wrote `value` to the debug-exit port.
    case debugExit(value: UInt32)
    /// The host stopped it (API call, signal).
    case stopped
    /// Something the VMM cannot continue from; the string is the one-line report.
    case failed(String)

    /// The `vireo run` exit status for this outcome (debug exit: QEMU's (value << 1) | 1).
    public var processStatus: Int32 {
        switch self {
        case .powerOff, .reset, .stopped: return 0
        case let .debugExit(value): return Int32(truncatingIfNeeded: (value << 1) | 1)
        case .failed: return 1
        }
    }

    public var description: String {
        switch self {
        case .powerOff: return "guest powered off"
        case .reset: return "guest reset"
        case let .debugExit(value): return "guest wrote \(value) to the debug-exit port"
        case .stopped: return "stopped by the host"
        case let .failed(why): return why
        }
    }
}
