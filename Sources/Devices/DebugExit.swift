/// Captured state of `DebugExit`: it has none, but every device snapshots the same way.
public struct DebugExitState: Codable, Sendable, Equatable {
    public init() {}
}

/// QEMU's isa-debug-exit (port 0xF4, 4 ports): a write of V asks the VMM to exit with status
/// (V << 1) | 1, so test guests can report pass/fail without a console. Reads return 0.
public final class DebugExit: BusDevice {
    public static let defaultPort: UInt64 = 0xF4
    public static let portCount: UInt64 = 4

    private let events: any MachineEventSink

    public init(events: any MachineEventSink) {
        self.events = events
    }

    public convenience init(restoring state: DebugExitState, events: any MachineEventSink) {
        self.init(events: events)
    }

    public var state: DebugExitState { DebugExitState() }

    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    /// The value is the access's own width (as QEMU takes it), truncated to 32 bits.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        let width = min(max(size, 1), 4)
        let mask: UInt64 = width == 4 ? 0xFFFF_FFFF : (1 << (8 * UInt64(width))) - 1
        events.machineEvent(.debugExit(value: UInt32(truncatingIfNeeded: value & mask)))
    }
}
