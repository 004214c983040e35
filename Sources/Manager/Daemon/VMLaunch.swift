import VMContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The files of one VM under the state dir: `<state>/vms/<name>/`.
struct VMPaths: Sendable {
    let directory: String
    var controlSocket: String { directory + "/control.sock" }
    var serialLog: String { directory + "/serial.log" }
    /// The `vireo run` process's own stdout and stderr (its error lines land here).
    var processLog: String { directory + "/vireo-run.log" }
    var statusFile: String { directory + "/status.json" }
    /// The `LaunchSpec` the VM's current process was started from (`vireo run --launch-spec`).
    var launchSpec: String { directory + "/launch.json" }
    /// Where a VM arriving by migration from a daemon on the same host listens for the stream.
    var migrationSocket: String { directory + "/migration.sock" }
    /// The daemon's own save of the VM (virsh managedsave): `start` resumes from it.
    var managedSave: String { directory + "/managed.save" }
    /// A UEFI VM's variable store when its definition names none (libvirt keeps one per VM too,
    /// made from the firmware's empty store at the first start); removed with the VM.
    var nvram: String { directory + "/nvram.fd" }

    /// `name` is a validated definition name (letters, digits, . _ -; no leading dot), so it is
    /// one path component.
    init(stateDirectory: String, name: String) {
        directory = stateDirectory + "/vms/" + name
    }
}

enum LaunchSpecError: Error, CustomStringConvertible {
    case cannotWrite(path: String, reason: String)
    var description: String {
        switch self {
        case .cannotWrite(let path, let reason): "cannot write launch specification \(path): \(reason)"
        }
    }
}

/// How the daemon starts a VM: a `LaunchSpec` built from a validated definition, written to the
/// VM's directory, and `vireo run --launch-spec FILE`. The VMM decodes the same Codable type, so
/// no value is ever turned into a flag string on this side and parsed back on the other.
enum VMLaunch {
    /// The VM the definition describes; with `restore`, the VM saved in that snapshot file, and
    /// with `incoming`, the VM a migration source sends to that address: their devices
    /// re-attached to the definition's host paths. A firmware definition boots (and restores)
    /// with the firmware named and, for UEFI, its variable store (`os.nvram`, else one in the VM's
    /// directory); what the VMM cannot do yet (a boot order other than the disks) refuses the
    /// start, with a one-line reason.
    static func spec(for definition: VMDefinition, paths: VMPaths, restore: RestoreSource? = nil,
                     incoming: String? = nil) throws -> LaunchSpec {
        try checkSupported(definition)
        let boots = restore == nil && incoming == nil
        let disks = definition.disks.map { disk in
            DiskOptions(path: disk.source, readOnly: disk.readonly, format: DiskOptions.Format(disk.format), serial: disk.serial)
        }
        let networks = definition.interfaces.map { interface in
            NetworkOptions(attachment: .init(interface), mac: interface.mac.octets)
        }
        var spec = LaunchSpec(
            kernel: boots ? definition.os.kernel : nil,
            initrd: boots ? definition.os.initrd : nil,
            cmdline: definition.os.cmdline, cpus: definition.vcpus, memoryBytes: definition.memory,
            // libvirt's on_reboot=restart is the VMM's own restart loop; destroy and preserve end
            // the process (preserve is not supported: the VM is recorded as shut off).
            onReboot: definition.onReboot == .restart ? .restart : .exit,
            devices: DeviceOptions(disks: disks, networks: networks, entropy: definition.rng),
            apiSocket: paths.controlSocket, serialLog: paths.serialLog, statusFile: paths.statusFile,
            restore: restore, incoming: incoming,
            // Also for a restore or an arrival: the firmware ROM is part of the machine.
            firmware: definition.os.firmware?.choice,
            efivars: definition.os.nvram ?? (definition.os.firmware?.choice == "uefi" ? paths.nvram : nil))
        // The guest's output goes to the serial log alone, rotated (as virtlogd does for libvirt):
        // a guest cannot fill the state directory's disk.
        spec.serialLogLimit = serialLogLimit
        spec.consoleToStdout = false
        return spec
    }

    /// Where a VM's serial log is rotated (serial.log.1 keeps the previous part).
    static let serialLogLimit: UInt64 = 8 << 20
    /// A VM's process log (vireo-run.log: the VMM's own lines) is moved aside to
    /// vireo-run.log.1 at a start that finds it larger than this.
    static let processLogLimit: UInt64 = 1 << 20

    /// Rotates `path` to `path.1` when it holds more than `limit` bytes.
    static func rotate(_ path: String, above limit: UInt64) {
        var info = stat()
        guard stat(path, &info) == 0, UInt64(max(0, info.st_size)) > limit else { return }
        _ = rename(path, path + ".1")
    }

    /// Refuses a definition that asks for what the VMM does not implement yet. Defining such a
    /// VM is fine (its XML round-trips); starting it is not, rather than booting it differently.
    static func checkSupported(_ definition: VMDefinition) throws {
        let refused = "cannot start domain '\(definition.name)'"
        if definition.os.bootOrder != [.hd] {
            let order = definition.os.bootOrder.map(\.rawValue).joined(separator: ", ")
            throw APIError(501, "\(refused): boot order [\(order)] is not supported by the VMM yet (the firmware chooses the boot device itself); set os.boot to [hd] to start", field: "os.boot")
        }
    }

    /// Writes the spec where `vireo run` will read it: mode 0600 (it names the VM's files), written
    /// beside the target and renamed, so a VMM never reads half of it.
    static func write(_ spec: LaunchSpec, to path: String) throws {
        let bytes: [UInt8]
        do { bytes = try ContractJSON.encode(spec) } catch {
            throw LaunchSpecError.cannotWrite(path: path, reason: "\(error)")
        }
        guard bytes.count <= LaunchSpec.maximumEncodedBytes else {
            throw LaunchSpecError.cannotWrite(path: path, reason: "\(bytes.count) bytes is over the \(LaunchSpec.maximumEncodedBytes)-byte limit")
        }
        let temporary = path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw LaunchSpecError.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        var offset = 0
        var failure: Int32 = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { failure = count < 0 ? errno : EIO; break }
            offset += count
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        if failure == 0 && rename(temporary, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary)
            throw LaunchSpecError.cannotWrite(path: path, reason: String(cString: strerror(failure)))
        }
    }

    /// `vireo run`'s whole command line: everything else is in the file.
    static func arguments(specFile: String) -> [String] {
        ["run", "--launch-spec", specFile]
    }
}

extension DiskOptions.Format {
    init(_ format: Disk.Format) {
        switch format {
        case .raw: self = .raw
        case .qcow2: self = .qcow2
        }
    }
}

extension NetworkOptions.Attachment {
    init(_ interface: NetworkInterface) {
        switch interface.type {
        case .tap: self = .tap(interface.source)
        case .bridge: self = .bridge(interface.source)
        // A named network would be a bridge the daemon manages; until then the name is the bridge.
        case .network: self = .bridge(interface.source)
        // Validated with the definition: every forward parses.
        case .user: self = .user(forwards: interface.forwards.compactMap { try? PortForward.parse($0) })
        }
    }
}
