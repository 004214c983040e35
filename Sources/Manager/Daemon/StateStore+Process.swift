import Foundation
import GRDB

/// How the daemon finds a VM's `vireo run` process again after a restart.
public struct ProcessIdentity: Equatable, Sendable {
    public var pid: Int32
    public var startTicks: UInt64
    public var controlSocket: String
    public var statusFile: String
}

// The process columns added by the "v2-process-identity" migration, written in the same
// transaction as the state they belong to, so a killed daemon never leaves a pid without its
// start time (which would let a recycled pid pass for the VM).
extension StateStore {
    /// Records a live process for the VM together with its state.
    public func setActive(name: String, state: VMRunState, reason: VMStateReason, process: ProcessIdentity) throws {
        guard process.startTicks <= UInt64(Int64.max) else {
            throw StateStoreError.corruptRow(name: name, reason: "process start time out of range")
        }
        try write { db in
            try setState(name: name, state: state, reason: reason, pid: process.pid, socket: process.controlSocket, in: db)
            try db.execute(
                sql: """
                    UPDATE vm_state SET process_start_ticks = ?, status_file = ?
                    WHERE uuid = (SELECT uuid FROM vm WHERE name = ?)
                    """,
                arguments: [Int64(process.startTicks), process.statusFile, name])
        }
    }

    /// Records that the VM has no process any more (and forgets the old one's identity).
    public func setInactive(name: String, state: VMRunState, reason: VMStateReason) throws {
        try write { db in
            try setState(name: name, state: state, reason: reason, pid: nil, socket: nil, in: db)
            try db.execute(
                sql: """
                    UPDATE vm_state SET process_start_ticks = NULL, status_file = NULL
                    WHERE uuid = (SELECT uuid FROM vm WHERE name = ?)
                    """,
                arguments: [name])
        }
    }

    /// The recorded process of a VM, or nil when none (or when a part of it is missing).
    public func processIdentity(name: String) throws -> ProcessIdentity? {
        try read { db in
            guard let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT s.pid AS pid, s.process_start_ticks AS ticks, s.control_socket AS socket,
                        s.status_file AS status_file
                    FROM vm JOIN vm_state s ON s.uuid = vm.uuid WHERE vm.name = ?
                    """,
                arguments: [name]) else { throw StateStoreError.unknownVM(name: name) }
            guard let pid = row["pid"] as Int64?, let narrowed = Int32(exactly: pid), narrowed > 0,
                  let ticks = row["ticks"] as Int64?, ticks >= 0,
                  let socket = row["socket"] as String?, let statusFile = row["status_file"] as String? else { return nil }
            return ProcessIdentity(pid: narrowed, startTicks: UInt64(ticks), controlSocket: socket, statusFile: statusFile)
        }
    }
}
