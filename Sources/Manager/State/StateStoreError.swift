import Foundation

/// Why the state store refused an operation; each description is one line naming the VM or file.
public enum StateStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The state file exists but is not an SQLite database; it was left untouched.
    case notADatabase(path: String)
    /// The state directory or database could not be opened or created.
    case cannotOpen(path: String, reason: String)
    /// A newer Vireo migrated the database past what this version knows; writing could damage it.
    case newerSchema(path: String)
    case unknownVM(name: String)
    /// Another VM (a different uuid) already has this name.
    case duplicateName(name: String, existingUUID: UUID)
    /// The uuid is defined under another name; renaming is a separate operation, as in libvirt.
    case uuidInUse(uuid: UUID, existingName: String)
    /// The VM has a process (running, paused, in shutdown) so it cannot be undefined.
    case vmActive(name: String, state: VMRunState)
    /// A process id that cannot be one (zero or negative would mean a process group to kill(2)).
    case invalidPID(name: String, pid: Int32)
    /// A stored row no longer decodes (edited by hand, or written by a buggy version).
    case corruptRow(name: String, reason: String)
    /// SQLite itself failed (disk full, I/O error, lock timeout).
    case database(reason: String)

    public var description: String {
        switch self {
        case .notADatabase(let path):
            "state database \(quotedPath(path)) is not an SQLite database; left unchanged"
        case .cannotOpen(let path, let reason):
            "cannot open state database \(quotedPath(path)): \(sanitized(reason))"
        case .newerSchema(let path):
            "state database \(quotedPath(path)) was written by a newer Vireo; refusing to use it"
        case .unknownVM(let name):
            "no VM named \(quoted(name))"
        case .duplicateName(let name, let uuid):
            "a VM named \(quoted(name)) already exists with uuid \(uuid.uuidString.lowercased())"
        case .uuidInUse(let uuid, let existingName):
            "uuid \(uuid.uuidString.lowercased()) is already defined as VM \(quoted(existingName))"
        case .vmActive(let name, let state):
            "VM \(quoted(name)) is \(state.displayName); stop it first"
        case .invalidPID(let name, let pid):
            "VM \(quoted(name)): pid \(pid) is not a process id"
        case .corruptRow(let name, let reason):
            "stored VM \(quoted(name)) is corrupt: \(sanitized(reason))"
        case .database(let reason):
            "state database error: \(sanitized(reason))"
        }
    }
}

/// A path in an error message: quoted and control characters escaped like any user value, but
/// whole (up to PATH_MAX), since a cut path is useless to someone looking for the file.
private func quotedPath(_ path: String) -> String {
    var out = ""
    for scalar in path.unicodeScalars.prefix(4096) {
        if scalar.value < 0x20 || scalar.value == 0x7f {
            out += String(format: "\\x%02x", scalar.value)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return "'\(out)'"
}
