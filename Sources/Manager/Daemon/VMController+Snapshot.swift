import VMContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// virsh save and restore. A save is the VMM's `PUT /vm/snapshot` with then=stop: the file is the
// VM from then on, recorded as its saved image; a restore resumes the VM from that file. A plain
// start boots from the definition and leaves the saved image alone (virsh save, not managedsave).
extension VMController {
    /// Writes the running or paused VM to `path` (absolute) and stops it: shut off (saved).
    func save(to path: String) throws -> ActionResult {
        guard let running = process else { throw APIError(409, "domain '\(name)' is not running") }
        let image = try Self.saveTarget(path)
        // Set before asking: the VMM may exit before its answer is read.
        running.intent = .save(image)
        let response = try controlCall(running, .snapshot, body: try ContractJSON.encode(SnapshotRequest(path: image, then: .stop)),
                                       timeoutSeconds: SnapshotFileBody.saveTimeoutSeconds)
        guard (200..<300).contains(response.status) else {
            // The VMM left the VM as it was (running or paused).
            running.intent = .none
            let status = response.status == 400 || response.status == 409 ? response.status : 500
            throw APIError(status, "domain '\(name)': save failed: \(response.errorMessage)")
        }
        running.intent = .saved(image)
        // The VMM stops on its own now; the watcher records shut off (saved) with the image.
        if !running.waitForExit(seconds: Self.stopTimeout) {
            environment.log("VM '\(name)' (pid \(running.identity.pid)) saved but did not exit in \(Int(Self.stopTimeout))s; killing it")
            running.kill()
            guard running.waitForExit(seconds: Self.stopTimeout) else {
                throw APIError(500, "domain '\(name)' (pid \(running.identity.pid)) did not exit after SIGKILL")
            }
        }
        return ActionResult(message: "Domain '\(name)' saved to \(path)", state: VMRunState.shutoff.rawValue,
                            reason: VMStateReason.saved.rawValue)
    }

    /// Resumes the VM from its saved image `image` (a canonical path), with the definition's
    /// devices: running (restored).
    func restore(from image: String) throws -> ActionResult {
        let record = try store.record(named: name)
        guard process == nil else { throw APIError(409, "domain '\(name)' is already active") }
        // Checked again on the VM's queue: a save of another VM to the same file may have come between.
        guard try store.savedImage(name: name) == image else { throw APIError(404, "no defined domain was saved to \(image)") }
        try launch(record.definition, restore: RestoreSource(path: image), reason: .restored)
        environment.events.publish(.started, name: name, reason: .restored)
        // Saved while paused: restored paused (the VMM said so when it first answered).
        let state = (try? store.state(named: name).state) ?? .running
        return ActionResult(message: "Domain '\(name)' restored from \(image)", state: state.rawValue,
                            reason: VMStateReason.restored.rawValue)
    }

    /// The file a save writes, as `restore` will name it: the VMM writes beside the target and
    /// renames, so the directory's canonical path and the file name are where the file ends up.
    static func saveTarget(_ path: String) throws -> String {
        guard path.hasPrefix("/") else { throw APIError(400, "path: '\(path)' is not absolute", field: "path") }
        let url = URL(fileURLWithPath: path)
        let name = url.lastPathComponent
        guard !name.isEmpty, name != "/", name != ".", name != ".." else {
            throw APIError(400, "path: '\(path)' does not name a file", field: "path")
        }
        let directory = url.deletingLastPathComponent().path
        guard let canonical = canonicalPath(directory) else {
            let reason = String(cString: strerror(errno))
            throw APIError(400, "cannot save to \(path): directory \(directory): \(reason)", field: "path")
        }
        return (canonical == "/" ? "" : canonical) + "/" + name
    }
}

/// realpath(3): absolute, no symbolic links, no . or ..; nil (errno set) when it does not resolve.
func canonicalPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}
