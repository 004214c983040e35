import ArgumentParser
import Foundation
import Manager

struct Define: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Define (or update) a VM from a file: native YAML/JSON or libvirt domain XML.",
        discussion: "XML is recognised by a .xml extension or a first character '<'. See docs/vm-definition.md.")
    @Argument(help: "Definition file.") var file: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let data: Data
            do {
                data = try readInputFile(file, what: "definition file", limit: DefinitionLimits.maxDocumentBytes)
            } catch let failure as ManageFailure {
                throw ManageFailure(["Failed to define domain from \(file)"] + failure.lines)
            }
            let query = file.lowercased().hasSuffix(".xml") ? "?format=xml" : ""
            let response = try connection.client().request("POST", "/v1/vms\(query)", body: Array(data))
            guard (200..<300).contains(response.status) else {
                throw ManageFailure(["Failed to define domain from \(file)", response.errorMessage])
            }
            guard let result = try? JSONDecoder().decode(DefineResult.self, from: Data(response.body)) else {
                throw ManageFailure(["unexpected answer from the daemon"])
            }
            for element in result.unsupported { writeStandardError("warning: not imported (unsupported): \(element)\n") }
            for change in result.adjusted ?? [] { writeStandardError("warning: adjusted: \(change)\n") }
            print("Domain '\(result.vm.name)' defined from \(file)\n")
        }
    }
}

struct DumpXML: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dumpxml", abstract: "Print a VM's definition as libvirt domain XML.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let response = try connection.client().expect("GET", "/v1/vms/\(escapedName(name))/definition?format=xml",
                                                          action: "Failed to get", name: name)
            print(response.text, terminator: response.text.hasSuffix("\n") ? "" : "\n")
        }
    }
}

struct Edit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Edit a VM's definition (native YAML) in $VISUAL / $EDITOR; validated on save.",
        discussion: "An unchanged file changes nothing. A running VM uses the new definition from its next start.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let client = try connection.client()
            let path = "/v1/vms/\(escapedName(name))/definition"
            let original = try client.expect("GET", path + "?format=yaml", action: "Failed to get", name: name).body
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-edit-\(getpid())-\(name).yaml").path
            guard FileManager.default.createFile(atPath: file, contents: Data(original), attributes: [.posixPermissions: 0o600]) else {
                throw ManageFailure(["cannot write temporary file \(file)"])
            }
            let environment = ProcessInfo.processInfo.environment
            let editor = environment["VISUAL"] ?? environment["EDITOR"] ?? "vi"
            // Through the shell, as git and virsh do, so EDITOR may carry arguments.
            let status = try runToCompletion(executable: "/bin/sh", arguments: ["-c", "\(editor) \"$1\"", "sh", file])
            guard status == 0 else {
                throw ManageFailure(["editor '\(editor)' failed (status \(status)); your edits are in \(file)"])
            }
            guard let edited = readBounded(file, limit: DefinitionLimits.maxDocumentBytes) else {
                throw ManageFailure(["cannot read \(file) back (missing, or over \(DefinitionLimits.maxDocumentBytes) bytes)"])
            }
            if Array(edited) == original {
                try? FileManager.default.removeItem(atPath: file)
                print("Domain '\(name)' XML configuration not changed.\n")
                return
            }
            let response = try client.request("PUT", path + "?format=yaml", body: Array(edited))
            guard (200..<300).contains(response.status) else {
                throw ManageFailure(["Failed. Your edits are in \(file)", response.errorMessage])
            }
            try? FileManager.default.removeItem(atPath: file)
            print("Domain '\(name)' XML configuration edited.\n")
        }
    }
}
