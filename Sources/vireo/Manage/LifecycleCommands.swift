import ArgumentParser
import Foundation
import Manager

/// The virsh-like commands, in the order `vireo --help` lists them.
let managementCommands: [any ParsableCommand.Type] = [
    DaemonCommand.self, Define.self, Install.self, Undefine.self, List.self, Start.self, ConsoleCommand.self,
    Shutdown.self, Destroy.self, Reboot.self, Suspend.self, Resume.self, Save.self, Restore.self, ManagedSave.self,
    ManagedSaveRemove.self, Autostart.self,
    Migrate.self, DomJobInfo.self, DomInfo.self, DomState.self, DomStats.self, DumpXML.self, Edit.self,
]

/// POST /v1/vms/NAME/ACTION and print the daemon's virsh-worded answer.
func lifecycle(_ action: String, failing: String, name: String, connection: ConnectionOptions) throws {
    try manage {
        let client = try connection.client()
        let answer = try client.decode(ActionResult.self, "POST", "/v1/vms/\(escapedName(name))/\(action)",
                                       action: failing, name: name)
        print(answer.message + "\n")
    }
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a defined VM (boots it in a new vireo run process).",
        discussion: "A VM with a managed save image ('vireo managedsave') resumes from it instead, and the image is removed.")
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Attach to the serial console once started.") var console = false
    @Flag(help: "Boot afresh even if the VM has a managed save image, and discard the image.") var forceBoot = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            // Resuming a managed save takes as long as a restore may.
            let client = try connection.client(timeoutSeconds: SnapshotFileBody.restoreTimeoutSeconds + 60)
            let body = forceBoot ? try JSONEncoder().encode(StartBody(forceBoot: true)) : Data()
            let answer = try client.decode(ActionResult.self, "POST", "/v1/vms/\(escapedName(name))/start", body: body,
                                           action: "Failed to start", name: name)
            print(answer.message + "\n")
        }
        if console { try attachConsole(name: name, connection: connection) }
    }
}

struct Shutdown: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the guest to shut down (ACPI power button).",
        discussion: "Returns once asked; the VM is shut off when the guest has powered off. A VMM without the ACPI power button refuses, and the error says to use destroy. With --save the guest is not asked: its state is saved as by 'vireo managedsave', and the next start resumes it.")
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Save the VM's state and stop it instead (managed save); the next start resumes it.") var save = false
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        if save {
            try saveAction("managedsave", name: name, connection: connection)
        } else {
            try lifecycle("shutdown", failing: "Failed to shutdown", name: name, connection: connection)
        }
    }
}

struct Destroy: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a VM at once, like pulling the plug (the definition is kept).")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try lifecycle("destroy", failing: "Failed to destroy", name: name, connection: connection) }
}

struct Reboot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Restart a VM.",
        discussion: "A cold restart: the VM process is stopped and a new one boots from the current definition.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try lifecycle("reboot", failing: "Failed to reboot", name: name, connection: connection) }
}

struct Suspend: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause every vCPU of a running VM.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try lifecycle("suspend", failing: "Failed to suspend", name: name, connection: connection) }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a suspended VM.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try lifecycle("resume", failing: "Failed to resume", name: name, connection: connection) }
}

struct Save: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Save a running or paused VM's whole state to a file and stop it (virsh save).",
        discussion: "The VM is then shut off (saved); 'vireo restore FILE' resumes it where it was. 'vireo start' boots it afresh and leaves the file alone. The file is written by the daemon's host, and must stay in place while a restored VM runs (its memory is mapped from it).")
    @Argument(help: "VM name.") var name: String
    @Argument(help: "The file to write (created or replaced).") var file: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try saveAction("save", body: try JSONEncoder().encode(SnapshotFileBody(path: absolutePath(file))), name: name,
                       connection: connection)
    }
}

/// POST /v1/vms/NAME/ACTION for a save (save, managedsave). The daemon answers once all guest RAM
/// is on disk: wait as long as it may take, and show how far it has come on a terminal meanwhile.
func saveAction(_ action: String, body: Data = Data(), name: String, connection: ConnectionOptions) throws {
    try manage {
        let client = try connection.client(timeoutSeconds: SnapshotFileBody.saveTimeoutSeconds + 60)
        let progress = isatty(2) != 0 ? ProgressLine.save(client: try connection.client(timeoutSeconds: 5), name: name) : nil
        progress?.start()
        defer { progress?.finish() }
        let answer = try client.decode(ActionResult.self, "POST", "/v1/vms/\(escapedName(name))/\(action)", body: body,
                                       action: "Failed to save", name: name)
        progress?.finish()
        print(answer.message + "\n")
    }
}

struct ManagedSave: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "managedsave",
        abstract: "Save a running or paused VM's state where the daemon keeps it, and stop it (virsh managedsave).",
        discussion: "The VM is then shut off (saved); the next 'vireo start' (or the daemon's autostart) resumes it where it was and removes the saved state. 'vireo start --force-boot' or 'vireo managedsave-remove' discard it.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try saveAction("managedsave", name: name, connection: connection) }
}

struct ManagedSaveRemove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "managedsave-remove",
        abstract: "Discard a VM's managed save image; its next start boots afresh.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let answer = try connection.client().decode([String: String].self, "DELETE", "/v1/vms/\(escapedName(name))/managedsave",
                                                        action: "Failed to remove the managed save image of", name: name)
            print((answer["message"] ?? "") + "\n")
        }
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a VM from a file written by 'vireo save' (virsh restore).",
        discussion: "The VM is the defined one that was last saved to FILE; it runs with its definition's disks and NICs, which must be the same number and kinds as when it was saved.")
    @Argument(help: "The file 'vireo save' wrote.") var file: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let path = absolutePath(file)
            let body = Array(try JSONEncoder().encode(SnapshotFileBody(path: path)))
            let client = try connection.client(timeoutSeconds: SnapshotFileBody.restoreTimeoutSeconds + 60)
            let response = try client.request("POST", "/v1/restore", body: body)
            guard response.status == 200, let answer = try? JSONDecoder().decode(ActionResult.self, from: Data(response.body)) else {
                throw ManageFailure(["Failed to restore domain from \(path)", response.errorMessage])
            }
            print(answer.message + "\n")
        }
    }
}

/// A file named on the command line, made absolute against the working directory: the daemon
/// has a working directory of its own.
func absolutePath(_ file: String) -> String {
    URL(fileURLWithPath: file).standardizedFileURL.path
}

struct Undefine: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove a shut-off VM's definition (disk images are kept).")
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Also remove the VM's managed save image (without it, a VM that has one is refused).") var managedSave = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let query = managedSave ? "?managed_save=true" : ""
            _ = try connection.client().expect("DELETE", "/v1/vms/\(escapedName(name))" + query, action: "Failed to undefine", name: name)
            print("Domain '\(name)' has been undefined\n")
        }
    }
}

struct Autostart: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start the VM whenever the daemon starts.")
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Turn autostart off.") var disable = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let body = Array(try JSONEncoder().encode(AutostartBody(enabled: !disable)))
            _ = try connection.client().expect("PUT", "/v1/vms/\(escapedName(name))/autostart", body: body,
                                               action: "Failed to \(disable ? "unmark" : "mark")", name: name)
            print(disable ? "Domain '\(name)' unmarked as autostarted\n" : "Domain '\(name)' marked as autostarted\n")
        }
    }
}
