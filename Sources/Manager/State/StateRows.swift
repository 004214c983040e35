import Foundation
import GRDB

// Rows to values. Stored rows are input like any other: a hand-edited or damaged row becomes
// `StateStoreError.corruptRow` naming the VM, never a crash.
extension StateStore {
    /// A VM without a state row (impossible through this API) reads as shut off, reason unknown.
    static let stateQuery = """
        SELECT vm.uuid AS uuid, vm.name AS name, s.state AS state, s.reason AS reason, s.pid AS pid,
            s.control_socket AS control_socket, COALESCE(s.updated_at, vm.updated_at) AS updated_at
        FROM vm LEFT JOIN vm_state s ON s.uuid = vm.uuid
        """

    static func encode(_ definition: VMDefinition) throws -> String {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: try encoder.encode(definition), as: UTF8.self)
        } catch {
            throw StateStoreError.corruptRow(name: definition.name, reason: "cannot encode definition: \(error)")
        }
    }

    static func vmRecord(_ row: Row) throws -> VMRecord {
        let name = try column(row, "name", as: String.self, vm: "?")
        let uuid = try uuid(row, vm: name)
        let json = try column(row, "definition", as: String.self, vm: name)
        var definition: VMDefinition
        do {
            definition = try JSONDecoder().decode(VMDefinition.self, from: Data(json.utf8))
        } catch let error as DefinitionError {
            throw StateStoreError.corruptRow(name: name, reason: "definition: \(error)")
        } catch {
            throw StateStoreError.corruptRow(name: name, reason: "definition is not valid JSON")
        }
        guard definition.uuid == uuid, definition.name == name else {
            throw StateStoreError.corruptRow(name: name, reason: "definition's name or uuid differs from its row")
        }
        let autostart = try column(row, "autostart", as: Bool.self, vm: name)
        definition.autostart = autostart
        return VMRecord(
            uuid: uuid, name: name, definition: definition, autostart: autostart,
            createdAt: try column(row, "created_at", as: Date.self, vm: name),
            updatedAt: try column(row, "updated_at", as: Date.self, vm: name))
    }

    static func stateRecord(_ row: Row) throws -> VMStateRecord {
        let name = try column(row, "name", as: String.self, vm: "?")
        let uuid = try uuid(row, vm: name)
        let stateText: String? = row["state"]
        let reasonText: String? = row["reason"]
        guard let state = VMRunState(rawValue: stateText ?? VMRunState.shutoff.rawValue) else {
            throw StateStoreError.corruptRow(name: name, reason: "unknown state \(quoted(stateText ?? ""))")
        }
        guard let reason = VMStateReason(rawValue: reasonText ?? VMStateReason.unknown.rawValue) else {
            throw StateStoreError.corruptRow(name: name, reason: "unknown state reason \(quoted(reasonText ?? ""))")
        }
        var pid: Int32?
        if let stored = row["pid"] as Int64? {
            guard let narrowed = Int32(exactly: stored), narrowed > 0 else {
                throw StateStoreError.corruptRow(name: name, reason: "pid \(stored) out of range")
            }
            pid = narrowed
        }
        return VMStateRecord(
            uuid: uuid, name: name, state: state, reason: reason, pid: pid,
            controlSocket: row["control_socket"],
            updatedAt: try column(row, "updated_at", as: Date.self, vm: name))
    }

    private static func uuid(_ row: Row, vm name: String) throws -> UUID {
        let text = try column(row, "uuid", as: String.self, vm: name)
        guard let uuid = UUID(uuidString: text) else {
            throw StateStoreError.corruptRow(name: name, reason: "uuid \(quoted(text)) is malformed")
        }
        return uuid
    }

    /// A NOT NULL column read without trapping: GRDB's plain subscript crashes on a type mismatch.
    private static func column<T: DatabaseValueConvertible>(_ row: Row, _ column: String, as: T.Type, vm name: String) throws -> T {
        guard let value = T.fromDatabaseValue(row[column] as DatabaseValue) else {
            throw StateStoreError.corruptRow(name: name, reason: "column \(column) is missing or has the wrong type")
        }
        return value
    }
}
