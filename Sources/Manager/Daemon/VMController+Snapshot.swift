import VMContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// virsh save, restore and managedsave. A save is the VMM's `PUT /vm/snapshot` with then=stop: the
// file is the VM from then on, recorded as its saved image; a restore resumes the VM from that file.
// A plain start boots from the definition and leaves a user's saved image alone (virsh save). A
// managed save is the same save into the VM's own directory, and `start` resumes from it, then
// removes it (virsh managedsave; `start --force-boot` discards it instead).
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

    /// Saves the VM into its own directory and stops it: shut off (saved); the next start resumes it.
    func managedSave() throws -> ActionResult {
        let saved = try save(to: paths.managedSave)
        return ActionResult(message: "Domain '\(name)' state saved by the daemon", state: saved.state, reason: saved.reason)
    }

    /// The VM's managed save image, when it has one: its saved image is the file in its own
    /// directory, and that file is there.
    func managedSaveImage() throws -> String? {
        guard let image = try store.savedImage(name: name), let own = try? Self.saveTarget(paths.managedSave),
              image == own, access(image, F_OK) == 0 else { return nil }
        return image
    }

    /// `start` of a VM with a managed save image: resumes it, then removes the image (as libvirt
    /// does). The image stays when the restore fails, and the error says how to boot afresh.
    func startFromManagedSave(_ definition: VMDefinition, image: String) throws -> ActionResult {
        do {
            try launch(definition, restore: RestoreSource(path: image), reason: .restored)
        } catch let error as APIError {
            throw APIError(error.status, error.message + " (its managed save image is kept; 'vireo start --force-boot \(name)' discards it and boots afresh)")
        }
        // The VMM holds the file open (its RAM may be mapped from it): the name can go now.
        try? discardManagedSave(image)
        environment.events.publish(.started, name: name, reason: .restored)
        let state = (try? store.state(named: name).state) ?? .running
        return ActionResult(message: "Domain '\(name)' started from its managed save image", state: state.rawValue,
                            reason: VMStateReason.restored.rawValue)
    }

    /// virsh managedsave-remove: the next start boots afresh.
    func removeManagedSave() throws -> String {
        guard let image = try managedSaveImage() else { return "Domain '\(name)' has no managed save image; removal skipped" }
        try discardManagedSave(image)
        return "Removed managed save image for domain '\(name)'"
    }

    func discardManagedSave(_ image: String) throws {
        if unlink(image) != 0 && errno != ENOENT {
            throw APIError(500, "cannot remove managed save image \(image): \(String(cString: strerror(errno)))")
        }
        try store.clearSavedImage(name: name)
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
