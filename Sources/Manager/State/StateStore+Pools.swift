import Foundation
import GRDB

/// A stored pool: its definition and whether it is started.
public struct StoragePoolRecord: Equatable, Sendable {
    public var definition: StoragePoolDefinition
    public var active: Bool
    public var autostart: Bool
}

// The store's operations on storage pools, each one transaction.
extension StateStore {
    /// Stores a new pool (inactive). A name already taken is refused: pools are not replaced.
    public func definePool(_ definition: StoragePoolDefinition) throws {
        let text = String(decoding: try JSONEncoder().encode(definition), as: UTF8.self)
        try write { db in
            guard try Row.fetchOne(db, sql: "SELECT name FROM pool WHERE name = ?", arguments: [definition.name]) == nil else {
                throw StoragePoolError.duplicatePool(name: definition.name)
            }
            try db.execute(sql: "INSERT INTO pool (name, definition, active, autostart, created_at) VALUES (?, ?, 0, 0, ?)",
                           arguments: [definition.name, text, Date()])
        }
    }

    public func pools() throws -> [StoragePoolRecord] {
        try read { db in try Row.fetchAll(db, sql: "SELECT * FROM pool ORDER BY name").map(Self.poolRecord) }
    }

    public func pool(named name: String) throws -> StoragePoolRecord {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM pool WHERE name = ?", arguments: [name]) else {
                throw StoragePoolError.unknownPool(name: name)
            }
            return try Self.poolRecord(row)
        }
    }

    public func setPoolActive(name: String, _ active: Bool) throws {
        try write { db in
            try db.execute(sql: "UPDATE pool SET active = ? WHERE name = ?", arguments: [active, name])
            guard db.changesCount == 1 else { throw StoragePoolError.unknownPool(name: name) }
        }
    }

    public func setPoolAutostart(name: String, _ on: Bool) throws {
        try write { db in
            try db.execute(sql: "UPDATE pool SET autostart = ? WHERE name = ?", arguments: [on, name])
            guard db.changesCount == 1 else { throw StoragePoolError.unknownPool(name: name) }
        }
    }

    /// Forgets a stopped pool (its directory or volume group stays, as with `virsh pool-undefine`).
    public func undefinePool(name: String) throws {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT active FROM pool WHERE name = ?", arguments: [name]) else {
                throw StoragePoolError.unknownPool(name: name)
            }
            guard !(row["active"] as Bool) else {
                throw StoragePoolError.wrongState(name: name, "storage pool \(quoted(name)) is active; destroy (stop) it first")
            }
            try db.execute(sql: "DELETE FROM pool WHERE name = ?", arguments: [name])
        }
    }

    private static func poolRecord(_ row: Row) throws -> StoragePoolRecord {
        let name: String = row["name"]
        let text: String = row["definition"]
        do {
            let definition = try JSONDecoder().decode(StoragePoolDefinition.self, from: Data(text.utf8))
            return StoragePoolRecord(definition: definition, active: row["active"], autostart: row["autostart"])
        } catch {
            throw StateStoreError.corruptRow(name: name, reason: "storage pool definition: \(error)")
        }
    }
}
