import Foundation
import GRDB

// The store's operations on VMs. Each public method is one transaction; the `in db:` building
// blocks let a caller (the daemon, a test) combine several into one transaction with `write`.
extension StateStore {
    /// Stores a new definition, or replaces the one with the same uuid (its state is kept).
    @discardableResult
    public func define(_ definition: VMDefinition) throws -> VMRecord {
        try write { try define(definition, in: $0) }
    }

    /// Removes a VM and its state. A VM with a process (running, paused) is refused.
    public func undefine(name: String) throws {
        try write { db in
            let current = try state(named: name, in: db)
            guard !current.state.isActive else { throw StateStoreError.vmActive(name: name, state: current.state) }
            try db.execute(sql: "DELETE FROM vm WHERE uuid = ?", arguments: [current.uuid.storedText])
        }
    }

    public func record(named name: String) throws -> VMRecord {
        try read { try record(named: name, in: $0) }
    }

    /// Every defined VM, by name. A row that no longer decodes fails the call, naming that VM.
    public func all() throws -> [VMRecord] {
        try read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM vm ORDER BY name").map(Self.vmRecord)
        }
    }

    /// Sets the flag in the row and in the stored definition together, so `dumpxml` agrees.
    public func setAutostart(name: String, on: Bool) throws {
        try write { db in
            var current = try record(named: name, in: db)
            current.definition.autostart = on
            try db.execute(
                sql: "UPDATE vm SET definition = ?, autostart = ?, updated_at = ? WHERE uuid = ?",
                arguments: [try Self.encode(current.definition), on, Date(), current.uuid.storedText])
        }
    }

    public func setState(
        name: String, state: VMRunState, reason: VMStateReason, pid: Int32? = nil, socket: String? = nil
    ) throws {
        try write { try setState(name: name, state: state, reason: reason, pid: pid, socket: socket, in: $0) }
    }

    public func state(named name: String) throws -> VMStateRecord {
        try read { try state(named: name, in: $0) }
    }

    /// Every VM's last recorded state, by name: what a restarting daemon re-attaches to.
    public func allStates() throws -> [VMStateRecord] {
        try read { db in
            try Row.fetchAll(db, sql: Self.stateQuery + " ORDER BY vm.name").map(Self.stateRecord)
        }
    }

    /// Names of the VMs to start when the daemon starts, sorted.
    public func autostartNames() throws -> [String] {
        try read { db in
            try String.fetchAll(db, sql: "SELECT name FROM vm WHERE autostart ORDER BY name")
        }
    }

    // MARK: building blocks, each inside a caller's transaction

    func define(_ definition: VMDefinition, in db: Database) throws -> VMRecord {
        let uuid = definition.uuid.storedText
        if let owner = try String.fetchOne(db, sql: "SELECT uuid FROM vm WHERE name = ?", arguments: [definition.name]),
           owner != uuid {
            guard let ownerUUID = UUID(uuidString: owner) else {
                throw StateStoreError.corruptRow(name: definition.name, reason: "uuid \(quoted(owner)) is malformed")
            }
            throw StateStoreError.duplicateName(name: definition.name, existingUUID: ownerUUID)
        }
        let existingName = try String.fetchOne(db, sql: "SELECT name FROM vm WHERE uuid = ?", arguments: [uuid])
        if let existingName, existingName != definition.name {
            throw StateStoreError.uuidInUse(uuid: definition.uuid, existingName: existingName)
        }
        let json = try Self.encode(definition)
        let now = Date()
        if existingName != nil {
            try db.execute(
                sql: "UPDATE vm SET definition = ?, autostart = ?, updated_at = ? WHERE uuid = ?",
                arguments: [json, definition.autostart, now, uuid])
        } else {
            try db.execute(
                sql: "INSERT INTO vm (uuid, name, definition, autostart, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [uuid, definition.name, json, definition.autostart, now, now])
            try db.execute(
                sql: "INSERT INTO vm_state (uuid, state, reason, updated_at) VALUES (?, ?, ?, ?)",
                arguments: [uuid, VMRunState.shutoff.rawValue, VMStateReason.unknown.rawValue, now])
        }
        return try record(named: definition.name, in: db)
    }

    func record(named name: String, in db: Database) throws -> VMRecord {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM vm WHERE name = ?", arguments: [name]) else {
            throw StateStoreError.unknownVM(name: name)
        }
        return try Self.vmRecord(row)
    }

    func setState(
        name: String, state: VMRunState, reason: VMStateReason, pid: Int32?, socket: String?, in db: Database
    ) throws {
        // Read back as corrupt otherwise: refuse it here, where the caller can still fix it.
        if let pid, pid <= 0 { throw StateStoreError.invalidPID(name: name, pid: pid) }
        guard let uuid = try String.fetchOne(db, sql: "SELECT uuid FROM vm WHERE name = ?", arguments: [name]) else {
            throw StateStoreError.unknownVM(name: name)
        }
        try db.execute(
            sql: """
                INSERT INTO vm_state (uuid, state, reason, pid, control_socket, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(uuid) DO UPDATE SET state = excluded.state, reason = excluded.reason,
                    pid = excluded.pid, control_socket = excluded.control_socket, updated_at = excluded.updated_at
                """,
            arguments: [uuid, state.rawValue, reason.rawValue, pid.map { Int64($0) }, socket, Date()])
    }

    func state(named name: String, in db: Database) throws -> VMStateRecord {
        guard let row = try Row.fetchOne(db, sql: Self.stateQuery + " WHERE vm.name = ?", arguments: [name]) else {
            throw StateStoreError.unknownVM(name: name)
        }
        return try Self.stateRecord(row)
    }
}

extension UUID {
    /// One spelling in the database, so lookups by uuid text never miss on case.
    var storedText: String { uuidString.lowercased() }
}
