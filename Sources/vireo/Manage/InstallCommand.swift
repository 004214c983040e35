import ArgumentParser
import Foundation
import Manager
import Storage
#if canImport(Glibc)
import Glibc
#endif

/// `vireo install --import`: virt-install's way of making a VM from a ready disk image (a cloud
/// image, typically): a qcow2 overlay on the image, a cloud-init NoCloud seed, a definition, a
/// start, the console. Everything is checked before anything is made; whatever this command made
/// is removed again (and the VM undefined) when a later step fails.
struct Install: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "install",
        abstract: "Create a VM from an existing disk image and start it (virt-install --import).",
        discussion: """
            Example:
              vireo install --name vm1 --memory 1G --cpus 2 --import \\
                --disk size=20G,backing=debian-12-genericcloud-amd64.qcow2 \\
                --cloud-init user-data=user.yaml --network bridge=br0

            --disk size=S,backing=B creates a qcow2 overlay on B (B stays untouched; its format is read \
            from its header unless backing-format= says it). The overlay goes to path=, else next to the \
            backing file as NAME.qcow2 (the first disk) or NAME-vdX.qcow2. An existing file is never \
            overwritten. --disk size=S alone creates an empty disk (qcow2, or format=raw) at path= or in \
            the working directory; --disk path=F uses an existing image (format= or read from its header).

            --cloud-init writes a NoCloud seed (an ISO 9660 volume labelled cidata, made with \
            genisoimage or xorriso) next to the first disk as NAME-cidata.iso and attaches it read-only; \
            without meta-data= it holds 'instance-id: <the VM's uuid>' and 'local-hostname: NAME'.

            The VM boots through firmware (default bios) from its first disk. Files are created on this \
            machine: the daemon must see the same paths. If any step fails, the files this command created \
            are removed and the VM is undefined again.
            """)

    @Option(help: "VM name.") var name: String

    @Option(help: ArgumentHelp("Guest memory, e.g. 1G, 512M, 2GiB; a bare number is MiB, as in virt-install.", valueName: "size"))
    var memory = "1G"

    @Option(name: [.customLong("cpus"), .customLong("vcpus")], help: "Number of vCPUs.")
    var cpus = 1

    @Flag(name: .customLong("import"), help: "Boot the given disk image as it is (no installer); the only mode for now, and required.")
    var importImage = false

    @Option(name: .customLong("disk"), help: ArgumentHelp(
        "A disk: size=SIZE,backing=FILE[,backing-format=raw|qcow2][,path=FILE] (a qcow2 overlay), size=SIZE[,format=qcow2|raw][,path=FILE] (a new empty disk) or path=FILE[,format=raw|qcow2] (an existing image); readonly=on makes it read-only. SIZE: 20G, 512M; a bare number is GiB. Repeat for more disks: vda, vdb, ...",
        valueName: "spec"))
    var disks: [String] = []

    @Option(name: .customLong("cloud-init"), help: ArgumentHelp(
        "A NoCloud seed from these files: user-data=FILE (#cloud-config or #! script)[,meta-data=FILE][,network-config=FILE].",
        valueName: "spec"))
    var cloudInit: String?

    @Option(name: .customLong("network"), help: ArgumentHelp(
        "A virtio NIC: bridge=BRIDGE, network=NAME (a daemon network), tap=TAP (an existing tap device), or user[,hostfwd=tcp::2222-:22]... (passt: no root, no bridge), each [,mac=MAC]. Repeat for more; none by default.",
        valueName: "spec"))
    var networks: [String] = []

    @Option(help: ArgumentHelp("bios (SeaBIOS), uefi (OVMF) or a firmware file.", valueName: "bios|uefi|file"))
    var firmware = "bios"

    @Flag(name: .customLong("noautoconsole"), help: "Do not attach to the VM's console once it has started.")
    var noAutoconsole = false

    @Flag(name: .customLong("dry-run"), help: "Check everything, print the definition (YAML) and the files it would create; create, define and start nothing.")
    var dryRun = false

    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        var plan: InstallPlan?
        try manage {
            let made = try InstallPlan(self)
            if dryRun {
                print(made.dryRunReport, terminator: "")
                return
            }
            try made.carryOut(connection: connection)
            plan = made
        }
        if plan != nil, !noAutoconsole { try attachConsole(name: name, connection: connection) }
    }
}

/// Everything `vireo install` will do, worked out (and checked) before it does any of it.
struct InstallPlan {
    /// A file the command creates.
    enum Creation {
        case overlay(path: String, size: UInt64, backing: String, backingFormat: ImageFormat)
        case empty(path: String, size: UInt64, format: ImageFormat)
        case seed(path: String, files: [(name: String, data: Data)], tool: SeedTool)

        var path: String {
            switch self {
            case .overlay(let path, _, _, _), .empty(let path, _, _), .seed(let path, _, _): path
            }
        }

        var summary: String {
            switch self {
            case let .overlay(path, size, backing, backingFormat):
                "\(path) (qcow2, \(ImgSupport.humanSize(size)), backing file \(backing) (\(backingFormat.rawValue)))"
            case let .empty(path, size, format):
                "\(path) (\(format.rawValue), \(ImgSupport.humanSize(size)), empty)"
            case let .seed(path, files, _):
                "\(path) (cloud-init NoCloud seed, volume cidata: \(files.map(\.name).joined(separator: ", ")))"
            }
        }
    }

    var definition: VMDefinition
    var creations: [Creation]

    /// The most user-data, meta-data or network-config a seed takes (cloud-init itself reads far less
    /// in practice; this keeps a wrong file, a disk image say, out of the ISO).
    static let maxSeedFileBytes = 1 << 20

    init(_ command: Install) throws {
        guard command.importImage else {
            throw ManageFailure(["only --import is supported for now: give --import and a --disk with the image to boot"])
        }
        guard !command.disks.isEmpty else {
            throw ManageFailure(["--import needs a --disk: size=SIZE,backing=IMAGE (an overlay) or path=IMAGE"])
        }
        let uuid = UUID()
        // The name goes into file names: it must be a valid VM name before any path is built.
        do { try VMDefinition(name: command.name, memory: 1 << 30, os: OSBoot(firmware: .bios)).validate() } catch {
            throw ManageFailure(["\(error)"])
        }

        var creations: [Creation] = []
        var diskValues: [[String: Any]] = []
        for (index, spec) in command.disks.enumerated() {
            guard index < 26 else { throw ManageFailure(["--disk: at most 26 disks"]) }
            let target = "vd" + String(UnicodeScalar(UInt8(ascii: "a") + UInt8(index)))
            let (disk, creation) = try Self.disk(spec, target: target, vmName: command.name)
            diskValues.append(disk)
            if let creation { creations.append(creation) }
        }
        if let spec = command.cloudInit {
            guard let firstDisk = diskValues.first?["source"] as? String else { throw ManageFailure(["no disk"]) }
            let directory = (firstDisk as NSString).deletingLastPathComponent
            let path = directory + "/" + command.name + "-cidata.iso"
            let files = try Self.seedFiles(spec, uuid: uuid, vmName: command.name)
            guard let tool = SeedTool.find() else {
                throw ManageFailure(["cannot make the cloud-init seed: neither genisoimage nor xorriso is installed (Debian: apt-get install genisoimage)"])
            }
            try Self.checkFree(path, what: "the cloud-init seed", hint: "remove it or move the first disk")
            creations.append(.seed(path: path, files: files, tool: tool))
            guard diskValues.count < 26 else { throw ManageFailure(["--disk: at most 25 disks with --cloud-init"]) }
            let target = "vd" + String(UnicodeScalar(UInt8(ascii: "a") + UInt8(diskValues.count)))
            diskValues.append(["source": path, "device": "cdrom", "format": "raw", "target": target, "readonly": true])
        }
        var seen: Set<String> = []
        for creation in creations where !seen.insert(creation.path).inserted {
            throw ManageFailure(["'\(creation.path)' would be created twice: give the disks different path="])
        }
        let used = diskValues.compactMap { $0["source"] as? String }
        if let duplicate = used.first(where: { path in used.filter { $0 == path }.count > 1 }) {
            throw ManageFailure(["--disk: '\(duplicate)' is given twice"])
        }

        var interfaces: [[String: Any]] = []
        for spec in command.networks { interfaces.append(try Self.interface(spec)) }

        let firmwareChoice = ["bios", "uefi"].contains(command.firmware) ? command.firmware : absolutePath(command.firmware)
        // virt-install's --memory is MiB; a unit says otherwise.
        let memoryText = command.memory.allSatisfy(\.isNumber) && !command.memory.isEmpty ? command.memory + "MiB" : command.memory
        let document: [String: Any] = [
            "name": command.name, "uuid": uuid.uuidString.lowercased(), "memory": memoryText, "vcpus": command.cpus,
            "os": ["firmware": firmwareChoice], "disks": diskValues, "interfaces": interfaces,
        ]
        // Through the native format's own parser: the same checks and messages as `vireo define`.
        do {
            let json = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
            definition = try VMDefinition(yaml: json)
        } catch let error as DefinitionError {
            throw ManageFailure(["\(error)"])
        }
        self.creations = creations
    }

    // MARK: disks

    private static func disk(_ spec: String, target: String, vmName: String) throws -> ([String: Any], Creation?) {
        let values = try keyValues(spec, option: "--disk", allowed: ["path", "size", "backing", "backing-format", "format", "readonly"])
        let format = try values["format"].map { try imageFormat($0, key: "format") }
        let readonly = try values["readonly"].map { try onOff($0, key: "--disk readonly") } ?? false
        let size = try values["size"].map(diskSize)
        var value: [String: Any] = ["target": target, "readonly": readonly]

        if let backingName = values["backing"] {
            guard format == nil || format == .qcow2 else {
                throw ManageFailure(["--disk: an overlay on a backing file is qcow2, not \(format?.rawValue ?? "")"])
            }
            let backing = absolutePath(backingName)
            guard access(backing, F_OK) == 0 else { throw ManageFailure(["backing file '\(backing)' does not exist"]) }
            guard access(backing, R_OK) == 0 else { throw ManageFailure(["cannot read backing file '\(backing)'"]) }
            let backingFormat: ImageFormat
            let backingSize: UInt64
            do {
                backingFormat = try values["backing-format"].map { try imageFormat($0, key: "backing-format") }
                    ?? DiskImage.probeFormat(path: backing)
                backingSize = try DiskImage.open(path: backing, format: backingFormat, readOnly: true).size
            } catch let failure as ManageFailure {
                throw failure
            } catch {
                throw ManageFailure(["cannot use backing file '\(backing)': \(error)"])
            }
            let bytes = size ?? backingSize
            guard bytes >= backingSize else {
                throw ManageFailure(["--disk: size=\(values["size"] ?? "") is smaller than the backing file (\(ImgSupport.humanSize(backingSize)))"])
            }
            let directory = (backing as NSString).deletingLastPathComponent
            let path = values["path"].map(absolutePath) ?? directory + "/" + defaultName(vmName, target: target, format: .qcow2)
            try checkFree(path, what: "the overlay", hint: "remove it or give another path=")
            value["source"] = path
            value["format"] = "qcow2"
            return (value, .overlay(path: path, size: bytes, backing: backing, backingFormat: backingFormat))
        }
        guard values["backing-format"] == nil else { throw ManageFailure(["--disk: backing-format= goes with backing="]) }
        if let bytes = size {
            guard bytes > 0 else { throw ManageFailure(["--disk: size must be more than 0"]) }
            let fmt = format ?? .qcow2
            let path = values["path"].map(absolutePath)
                ?? FileManager.default.currentDirectoryPath + "/" + defaultName(vmName, target: target, format: fmt)
            try checkFree(path, what: "the new disk", hint: "remove it, or give path= alone to use it as it is")
            value["source"] = path
            value["format"] = fmt.rawValue
            return (value, .empty(path: path, size: bytes, format: fmt))
        }
        guard let given = values["path"] else {
            throw ManageFailure(["--disk needs path=FILE (an existing image), size=SIZE (a new disk) or size=SIZE,backing=IMAGE (an overlay)"])
        }
        let path = absolutePath(given)
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw ManageFailure(["disk '\(path)' does not exist (add size= to create it)"])
        }
        guard access(path, R_OK) == 0 else { throw ManageFailure(["cannot read disk '\(path)'"]) }
        let isBlock = info.st_mode & S_IFMT == S_IFBLK
        let fmt: ImageFormat
        do { fmt = try format ?? DiskImage.probeFormat(path: path) } catch {
            throw ManageFailure(["cannot read disk '\(path)': \(error)"])
        }
        value["source"] = path
        value["format"] = fmt.rawValue
        if isBlock { value["type"] = "block" }
        return (value, nil)
    }

    /// NAME.qcow2 for the first disk, NAME-vdX.qcow2 after it (.img for raw).
    private static func defaultName(_ vmName: String, target: String, format: ImageFormat) -> String {
        let suffix = format == .qcow2 ? "qcow2" : "img"
        return target == "vda" ? "\(vmName).\(suffix)" : "\(vmName)-\(target).\(suffix)"
    }

    /// virt-install's size=N is GiB; "20G", "512M" (qemu-img's units) and "20GiB" work too.
    private static func diskSize(_ text: String) throws -> UInt64 {
        var spec = text
        if spec.hasSuffix("iB") { spec.removeLast(2) }
        if !spec.isEmpty, spec.allSatisfy({ $0.isNumber || $0 == "." }) { spec += "G" }
        let bytes: UInt64
        do { bytes = try ImgSupport.parseSize(spec) } catch { throw ManageFailure(["--disk: size '\(text)' is not a size (e.g. 20G, 512M)"]) }
        // Disks are whole 512-byte sectors, as qemu-img rounds them.
        let (rounded, overflow) = bytes.addingReportingOverflow(511)
        guard !overflow else { throw ManageFailure(["--disk: size '\(text)' is too large"]) }
        return rounded & ~511
    }

    private static func imageFormat(_ text: String, key: String) throws -> ImageFormat {
        guard let format = ImageFormat(rawValue: text) else {
            throw ManageFailure(["--disk: \(key) '\(text)' is not raw or qcow2"])
        }
        return format
    }

    private static func onOff(_ text: String, key: String) throws -> Bool {
        switch text {
        case "on", "yes", "true": return true
        case "off", "no", "false": return false
        default: throw ManageFailure(["\(key): '\(text)' is not on or off"])
        }
    }

    /// A file this command is to create must not exist yet: nothing is ever overwritten.
    static func checkFree(_ path: String, what: String, hint: String) throws {
        var info = stat()
        if lstat(path, &info) == 0 {
            throw ManageFailure(["\(what) '\(path)' already exists; \(hint)"])
        }
        let directory = (path as NSString).deletingLastPathComponent
        guard access(directory.isEmpty ? "/" : directory, W_OK | X_OK) == 0 else {
            throw ManageFailure(["cannot create \(what) '\(path)': directory '\(directory)' is missing or not writable"])
        }
    }

    // MARK: cloud-init, networks

    private static func seedFiles(_ spec: String, uuid: UUID, vmName: String) throws -> [(name: String, data: Data)] {
        let values = try keyValues(spec, option: "--cloud-init", allowed: ["user-data", "meta-data", "network-config"])
        guard let userData = values["user-data"] else { throw ManageFailure(["--cloud-init needs user-data=FILE"]) }
        let user = try seedFile(userData, key: "user-data")
        guard user.starts(with: Data("#cloud-config".utf8)) || user.starts(with: Data("#!".utf8)) else {
            throw ManageFailure(["user-data '\(userData)' must start with '#cloud-config' (cloud-config YAML) or '#!' (a script)"])
        }
        let meta = try values["meta-data"].map { try seedFile($0, key: "meta-data") }
            ?? Data("instance-id: \(uuid.uuidString.lowercased())\nlocal-hostname: \(vmName)\n".utf8)
        var files: [(name: String, data: Data)] = [("user-data", user), ("meta-data", meta)]
        if let network = values["network-config"] { files.append(("network-config", try seedFile(network, key: "network-config"))) }
        return files
    }

    private static func seedFile(_ path: String, key: String) throws -> Data {
        var info = stat()
        guard stat(path, &info) == 0 else { throw ManageFailure(["cannot read \(key) '\(path)': \(String(cString: strerror(errno)))"]) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw ManageFailure(["\(key) '\(path)' is not a regular file"]) }
        guard info.st_size <= maxSeedFileBytes else {
            throw ManageFailure(["\(key) '\(path)' is \(info.st_size) bytes; the limit is \(maxSeedFileBytes / 1024) KiB"])
        }
        guard let data = readBounded(path, limit: maxSeedFileBytes) else { throw ManageFailure(["cannot read \(key) '\(path)'"]) }
        return data
    }

    private static func interface(_ spec: String) throws -> [String: Any] {
        // virt-install's unprivileged default: `user`, here on passt, with QEMU-style hostfwd (repeatable).
        let items = spec.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        if items.first == "user" {
            var value: [String: Any] = ["type": "user"]
            let forwards = items.dropFirst().filter { $0.hasPrefix("hostfwd=") }.map { String($0.dropFirst("hostfwd=".count)) }
            if !forwards.isEmpty { value["forwards"] = forwards }
            let rest = items.dropFirst().filter { !$0.hasPrefix("hostfwd=") }
            if !rest.isEmpty {
                let values = try keyValues(rest.joined(separator: ","), option: "--network", allowed: ["mac", "model"])
                if let mac = values["mac"] { value["mac"] = mac }
                if let model = values["model"] { value["model"] = model }
            }
            return value
        }
        let values = try keyValues(spec, option: "--network", allowed: ["bridge", "network", "tap", "mac", "model"])
        let kinds = ["bridge", "network", "tap"].filter { values[$0] != nil }
        guard kinds.count == 1, let kind = kinds.first, let source = values[kind] else {
            throw ManageFailure(["--network needs exactly one of bridge=BRIDGE, network=NAME, tap=TAP, or user"])
        }
        var value: [String: Any] = ["type": kind, "source": source]
        if let mac = values["mac"] { value["mac"] = mac }
        if let model = values["model"] { value["model"] = model }
        return value
    }

    /// "key=value,key=value" with known keys, each at most once.
    private static func keyValues(_ spec: String, option: String, allowed: [String]) throws -> [String: String] {
        var result: [String: String] = [:]
        for item in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[1].isEmpty else {
                throw ManageFailure(["\(option): '\(item)' is not key=value (keys: \(allowed.joined(separator: ", ")))"])
            }
            let key = String(parts[0])
            guard allowed.contains(key) else {
                throw ManageFailure(["\(option): unknown key '\(key)' (expected \(allowed.joined(separator: ", ")))"])
            }
            guard result.updateValue(String(parts[1]), forKey: key) == nil else {
                throw ManageFailure(["\(option): '\(key)' is given twice"])
            }
        }
        return result
    }

    // MARK: doing it

    var dryRunReport: String {
        var text = "# vireo install --dry-run: nothing was created, defined or started.\n"
        for creation in creations { text += "# would create: \(creation.summary)\n" }
        text += (try? definition.yaml()) ?? definition.json()
        return text
    }

    /// Creates the files, defines the VM and starts it; on any failure undoes what it did.
    func carryOut(connection: ConnectionOptions) throws {
        let client = try connection.client()
        let name = definition.name
        let existing = try client.request("GET", "/v1/vms/\(escapedName(name))")
        if existing.status == 200 {
            throw ManageFailure(["domain '\(name)' already exists (vireo undefine \(name), or choose another --name)"])
        }
        guard existing.status == 404 else { throw failure(existing, doing: "Failed to look up", name: name) }

        var created: [String] = []
        var defined = false
        do {
            for creation in creations {
                try Self.claim(creation.path)
                created.append(creation.path)
                try Self.create(creation)
                print("Created \(creation.summary)")
            }
            let body = Array(definition.json().utf8)
            let response = try client.request("POST", "/v1/vms", body: body)
            guard (200..<300).contains(response.status) else {
                throw ManageFailure(["Failed to define domain '\(name)'", response.errorMessage])
            }
            defined = true
            print("Domain '\(name)' defined")
            let answer = try client.decode(ActionResult.self, "POST", "/v1/vms/\(escapedName(name))/start",
                                           action: "Failed to start", name: name)
            print(answer.message + "\n")
            // The console writes straight to fd 1: what was printed must be out before it.
            fflush(nil)
        } catch {
            var kept = false
            if defined {
                _ = try? client.request("POST", "/v1/vms/\(escapedName(name))/destroy")
                let removed = try? client.request("DELETE", "/v1/vms/\(escapedName(name))")
                if !(removed.map { (200..<300).contains($0.status) } ?? false) {
                    // The VM still names the files: keep them rather than pull them from under it.
                    kept = true
                    writeStandardError("warning: could not undefine '\(name)'; kept \(created.joined(separator: ", "))\n")
                }
            }
            if !kept {
                for path in created.reversed() where unlink(path) != 0 && errno != ENOENT {
                    writeStandardError("warning: could not remove \(path): \(String(cString: strerror(errno)))\n")
                }
            }
            throw error
        }
    }

    /// Takes the name (O_EXCL), so a file that appeared since the checks is never overwritten,
    /// and so every file in `created` is one this command made.
    private static func claim(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let reason = errno == EEXIST ? "it already exists" : String(cString: strerror(errno))
            throw ManageFailure(["cannot create '\(path)': \(reason)"])
        }
        close(fd)
    }

    private static func create(_ creation: Creation) throws {
        do {
            switch creation {
            case let .overlay(path, size, backing, backingFormat):
                var options = QCOW2CreateOptions(size: size)
                options.backingFile = backing
                options.backingFormat = backingFormat.rawValue
                try QCOW2Image.create(path: path, options: options)
            case let .empty(path, size, format):
                switch format {
                case .qcow2: try QCOW2Image.create(path: path, options: QCOW2CreateOptions(size: size))
                case .raw: try RawImage.create(path: path, size: size)
                }
            case let .seed(path, files, tool):
                try tool.make(seed: path, files: files)
            }
        } catch let failure as ManageFailure {
            throw failure
        } catch {
            throw ManageFailure(["cannot create '\(creation.path)': \(error)"])
        }
    }
}

/// The program that writes the NoCloud seed: an ISO 9660 volume labelled cidata with Joliet and
/// Rock Ridge, as cloud-localds (genisoimage) makes it.
struct SeedTool {
    var executable: String
    var leadingArguments: [String]

    /// genisoimage, else xorriso's mkisofs emulation, from $PATH.
    static func find() -> SeedTool? {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":").map(String.init)
        func lookup(_ program: String) -> String? {
            directories.lazy.map { "\($0)/\(program)" }.first { access($0, X_OK) == 0 }
        }
        if let path = lookup("genisoimage") { return SeedTool(executable: path, leadingArguments: []) }
        if let path = lookup("xorriso") { return SeedTool(executable: path, leadingArguments: ["-as", "mkisofs"]) }
        return nil
    }

    var name: String { (executable as NSString).lastPathComponent }

    func make(seed: String, files: [(name: String, data: Data)]) throws {
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-seed-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: staging) }
        for file in files {
            guard FileManager.default.createFile(atPath: staging + "/" + file.name, contents: file.data,
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw ManageFailure(["cannot write \(staging)/\(file.name)"])
            }
        }
        let log = staging + "/.tool-output"
        let arguments = leadingArguments + ["-output", seed, "-volid", "cidata", "-joliet", "-rock", "-input-charset", "utf-8",
                                            "-quiet", "-graft-points"] + files.map { "\($0.name)=\(staging)/\($0.name)" }
        let status = try runToCompletion(executable: executable, arguments: arguments, outputPath: log)
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard status == 0 else {
            let last = text.split(whereSeparator: \.isNewline).last.map(String.init) ?? "no output"
            throw ManageFailure(["\(name) failed to write the cloud-init seed '\(seed)' (status \(status)): \(last)"])
        }
    }
}
