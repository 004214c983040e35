import Foundation

/// A VM's run state as virsh names it (`domstate`); the stored text is the raw value.
public enum VMRunState: String, CaseIterable, Sendable, Codable {
    case running, paused, shutdown, shutoff, crashed

    /// True while a VM process exists: such a VM may not be undefined.
    public var isActive: Bool {
        switch self {
        case .running, .paused, .shutdown: true
        case .shutoff, .crashed: false
        }
    }

    /// The words virsh prints ("shut off", "in shutdown").
    public var displayName: String {
        switch self {
        case .running: "running"
        case .paused: "paused"
        case .shutdown: "in shutdown"
        case .shutoff: "shut off"
        case .crashed: "crashed"
        }
    }
}

/// Why a VM is in its state, as `virsh domstate --reason` reports it.
public enum VMStateReason: String, CaseIterable, Sendable, Codable {
    case unknown, booted, unpaused, restored, user, shutdown, destroyed, crashed, failed, saved, panicked
    /// Handed to another VMM by live migration (virsh's "shut off (migrated)" / "running (migrated)"),
    /// or being migrated ("paused (migrating)").
    case migrated, migrating
}

/// One defined VM as stored: the definition is the user's, the rest is the daemon's bookkeeping.
public struct VMRecord: Equatable, Sendable {
    public var uuid: UUID
    public var name: String
    /// `definition.autostart` always equals `autostart`: both are written in one transaction.
    public var definition: VMDefinition
    public var autostart: Bool
    public var createdAt: Date
    public var updatedAt: Date
}

/// The last state the daemon recorded for a VM, and how to reach its process.
public struct VMStateRecord: Equatable, Sendable {
    public var uuid: UUID
    public var name: String
    public var state: VMRunState
    public var reason: VMStateReason
    /// The `vireo run` process, so a restarted daemon can re-attach to it.
    public var pid: Int32?
    /// The per-VM control socket of that process.
    public var controlSocket: String?
    public var updatedAt: Date
}
