import Foundation
import GRDB

// The saved-image column added by the "v3-saved-image" migration: the snapshot file a VM was last
// saved to (virsh save), by canonical path, so `restore FILE` can tell which VM FILE holds.
extension StateStore {
    /// Records a VM that stopped after saving itself to `image`: shut off (saved), no process, and
    /// `image` as its saved image, in one transaction. Another VM saved earlier to the same file
    /// loses it: the file now holds this one.
    public func setSaved(name: String, image: String) throws {
        try write { db in
            try setState(name: name, state: .shutoff, reason: .saved, pid: nil, socket: nil, in: db)
            try db.execute(sql: "UPDATE vm_state SET saved_image = NULL WHERE saved_image = ?", arguments: [image])
            try db.execute(
                sql: """
                    UPDATE vm_state SET process_start_ticks = NULL, status_file = NULL, saved_image = ?
                    WHERE uuid = (SELECT uuid FROM vm WHERE name = ?)
                    """,
                arguments: [image, name])
        }
    }

    /// The file the VM was last saved to, or nil.
    public func savedImage(name: String) throws -> String? {
        try read { db in
            guard let row = try Row.fetchOne(
                db, sql: "SELECT s.saved_image AS image FROM vm JOIN vm_state s ON s.uuid = vm.uuid WHERE vm.name = ?",
                arguments: [name]) else { throw StateStoreError.unknownVM(name: name) }
            return row["image"] as String?
        }
    }

    /// The defined VM whose saved image is `image` (a canonical path), or nil.
    public func vmName(savedTo image: String) throws -> String? {
        try read { db in
            try String.fetchOne(
                db, sql: "SELECT vm.name FROM vm JOIN vm_state s ON s.uuid = vm.uuid WHERE s.saved_image = ?",
                arguments: [image])
        }
    }

    /// Forgets the VM's saved image (the file itself is the caller's to remove).
    public func clearSavedImage(name: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE vm_state SET saved_image = NULL WHERE uuid = (SELECT uuid FROM vm WHERE name = ?)",
                           arguments: [name])
        }
    }
}
