import VMContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a VM's cgroup could not be made, filled or found; one line each.
public enum CgroupError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The host offers no usable cgroup filesystem (none mounted, /proc unreadable).
    case unavailable(reason: String)
    /// A limit needs a controller the host's layout lacks.
    case missingController(String, field: String)
    case cannotCreate(path: String, reason: String)
    case cannotWrite(path: String, value: String, field: String, reason: String)
    /// A blkiotune device that is not a block device node.
    case badDevice(path: String, reason: String)

    public var description: String {
        switch self {
        case .unavailable(let reason): "cgroups unavailable: \(reason)"
        case .missingController(let controller, let field):
            "\(field) needs the cgroup '\(controller)' controller, which this host does not offer"
        case .cannotCreate(let path, let reason): "cannot create cgroup \(path): \(reason)"
        case .cannotWrite(let path, let value, let field, let reason):
            "\(field): cannot write '\(value)' to \(path): \(reason)"
        case .badDevice(let path, let reason): "blkiotune device \(sanitized(path)): \(reason)"
        }
    }
}

/// The daemon's VM cgroups on one host: each VM's process in `<hierarchy>/<partition>/<vm name>`
/// (one directory on cgroup v2, one per controller hierarchy on v1), with the limits of its
/// definition. `root` prefixes every path, so tests run against a fake tree.
public struct VMCgroups: Sendable {
    public let layout: CgroupLayout
    /// The directory under each hierarchy that holds the VMs' groups ("vireo"); one per daemon.
    public let partition: String
    let root: String
    /// Device numbers of blkiotune paths (stat on the host; tests substitute their own).
    var resolveDevice: @Sendable (String) throws -> DeviceNumber = { try DeviceNumber.of(blockDevice: $0) }

    public init(layout: CgroupLayout, partition: String = "vireo", root: String = "") {
        self.layout = layout
        self.partition = partition
        self.root = root
    }

    /// The host's layout from /proc/self/mountinfo.
    public static func host(partition: String = "vireo", root: String = "") throws(CgroupError) -> VMCgroups {
        do { try checkPartition(partition) } catch {
            throw .unavailable(reason: "\(error)")
        }
        return VMCgroups(layout: try CgroupLayout.detect(root: root), partition: partition, root: root)
    }

    /// A partition is one directory name, as plain as a VM's name.
    public static func checkPartition(_ name: String) throws {
        try Check.identifier(name, field: "cgroup partition", maxLength: DefinitionLimits.maxNameLength)
    }

    /// Where the VM called `name` has (or would have) its group; nothing is created.
    public func group(for name: String) -> VMCgroup {
        let relative = "/\(partition)/\(name)"
        switch layout {
        case .v2(let mount, _):
            let directory = mount + relative
            return VMCgroup(version: 2, directories: Dictionary(uniqueKeysWithValues: CgroupLayout.v2Controllers.map { ($0, directory) }),
                            procPaths: ["": relative], root: root)
        case .v1(let hierarchies):
            var directories: [String: String] = [:]
            var procPaths: [String: String] = [:]
            for (controller, hierarchy) in hierarchies {
                directories[controller] = hierarchy.mount + relative
                procPaths[controller] = (hierarchy.root == "/" ? "" : hierarchy.root) + relative
            }
            return VMCgroup(version: 1, directories: directories, procPaths: procPaths, root: root)
        }
    }

    /// Creates the VM's group and writes the definition's limits into it. On failure nothing it
    /// created stays behind (the partition directories excepted: they are shared).
    public func create(for definition: VMDefinition) throws(CgroupError) -> VMCgroup {
        let group = group(for: definition.name)
        var devices: [String: DeviceNumber] = [:]
        for device in definition.blkiotune.devices {
            do { devices[device.path] = try resolveDevice(device.path) } catch let error as CgroupError { throw error } catch {
                throw .badDevice(path: device.path, reason: "\(error)")
            }
        }
        let writes = CgroupSettings.writes(cputune: definition.cputune, memtune: definition.memtune,
                                           blkiotune: definition.blkiotune, devices: devices, version: layout.version)
        for write in writes where group.directories[write.controller] == nil {
            throw .missingController(write.controller, field: write.field)
        }
        if case .v2(_, let available) = layout {
            for write in writes where !available.contains(write.controller) {
                throw .missingController(write.controller, field: write.field)
            }
        }
        var made: [String] = []
        do throws(CgroupError) {
            try makeDirectories(group, made: &made)
            for write in writes {
                guard let directory = group.directories[write.controller] else { continue }
                var path = directory + "/" + write.file
                // Weights live in BFQ's files where the kernel's I/O scheduler is BFQ (as libvirt
                // falls back to them); only when the plain file is absent.
                if let bfq = Self.bfqWeightFiles[write.file], !CgroupFile.exists(path), CgroupFile.exists(directory + "/" + bfq) {
                    path = directory + "/" + bfq
                }
                try CgroupFile.write(write.value, to: path, field: write.field)
            }
        } catch {
            for directory in made.reversed() { _ = CgroupFile.removeDirectory(directory) }
            throw error
        }
        return group
    }

    static let bfqWeightFiles = [
        "io.weight": "io.bfq.weight", "blkio.weight": "blkio.bfq.weight", "blkio.weight_device": "blkio.bfq.weight_device",
    ]

    /// The partition and the VM's directories; on v2 the controllers enabled on the way down.
    private func makeDirectories(_ group: VMCgroup, made: inout [String]) throws(CgroupError) {
        switch layout {
        case .v2(let mount, let available):
            let partitionDirectory = mount + "/" + partition
            try CgroupFile.makeDirectory(partitionDirectory)
            let enable = CgroupLayout.v2Controllers.filter(available.contains).map { "+" + $0 }.joined(separator: " ")
            if !enable.isEmpty {
                // A group's controllers must be enabled in every parent's subtree_control.
                try CgroupFile.write(enable, to: mount + "/cgroup.subtree_control", field: "cgroup")
                try CgroupFile.write(enable, to: partitionDirectory + "/cgroup.subtree_control", field: "cgroup")
            }
        case .v1:
            for directory in Set(group.directories.values) {
                try CgroupFile.makeDirectory(URL(fileURLWithPath: directory).deletingLastPathComponent().path)
            }
        }
        for directory in Set(group.directories.values).sorted() {
            if try CgroupFile.makeDirectory(directory) {
                made.append(directory)
            } else if !CgroupFile.isDirectory(directory) {
                // A VM named like one of the kernel's files there (cgroup.procs, memory.max).
                throw .cannotCreate(path: directory, reason: "a file of that name exists (rename the VM)")
            } else if CgroupFile.removeDirectory(directory) {
                // Left by an earlier run: made afresh, so its counters (OOM kills) start at 0.
                try CgroupFile.makeDirectory(directory)
                made.append(directory)
            } else if errno == EBUSY {
                throw .cannotCreate(path: directory, reason: "it exists and still holds a process")
            }
            // Otherwise (ENOTEMPTY: a plain directory, as in the tests' fake trees) it is used as is.
        }
    }

    /// Removes the VM's group once its process is gone; the kernel may take a moment to see the
    /// group empty, so a busy directory is retried for up to `attempts` × 50 ms. False when a
    /// directory stays (it still holds a process).
    @discardableResult
    public func remove(_ group: VMCgroup, attempts: Int = 40) -> Bool {
        var removed = true
        for directory in Set(group.directories.values) {
            var left = attempts
            while !CgroupFile.removeDirectory(directory) {
                left -= 1
                // EBUSY: processes still listed; anything else will not change by waiting.
                if errno != EBUSY || left <= 0 { removed = false; break }
                usleep(50_000)
            }
        }
        return removed
    }
}

/// One VM's group: its directories and how /proc/PID/cgroup names it.
public struct VMCgroup: Equatable, Sendable {
    public var version: Int
    /// Controller → directory (on v2 every controller has the same one).
    public var directories: [String: String]
    /// v1: controller → path in /proc/PID/cgroup; v2: "" → the path of the "0::" line.
    public var procPaths: [String: String]
    let root: String

    /// The cgroup.procs files a process writes "0" to, to join the group.
    public var procsFiles: [String] {
        Set(directories.values).sorted().map { $0 + "/cgroup.procs" }
    }

    /// The group as people name it: "/vireo/vm1".
    public var path: String { procPaths[""] ?? procPaths["memory"] ?? procPaths.values.sorted().first ?? "" }

    /// Whether /proc/PID/cgroup puts `pid` in this group for every controller.
    public func holds(pid: Int32) -> Bool {
        guard let text = readSmallFile(root + "/proc/\(pid)/cgroup") else { return false }
        let lines = text.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false) }
        return procPaths.allSatisfy { controller, path in
            lines.contains { fields in
                guard fields.count == 3, String(fields[2]) == path else { return false }
                return controller.isEmpty ? fields[0] == "0" && fields[1].isEmpty
                    : fields[1].split(separator: ",").contains { $0 == controller }
            }
        }
    }

    /// The group's memory use and limit, and how many times the OOM killer struck in it.
    public func memory() -> CgroupMemory {
        guard let directory = directories["memory"] else { return CgroupMemory() }
        func number(_ file: String) -> UInt64? {
            readSmallFile(directory + "/" + file).flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        func counter(_ file: String, _ key: String) -> UInt64? {
            guard let text = readSmallFile(directory + "/" + file) else { return nil }
            for line in text.split(separator: "\n") {
                let fields = line.split(separator: " ")
                if fields.count == 2, fields[0] == key { return UInt64(fields[1]) }
            }
            return nil
        }
        if version == 2 {
            return CgroupMemory(usageBytes: number("memory.current"), limitBytes: number("memory.max"),
                                oomKills: counter("memory.events", "oom_kill"))
        }
        // v1 writes "no limit" as a huge page-rounded number.
        let limit = number("memory.limit_in_bytes").flatMap { $0 >= 1 << 62 ? nil : $0 }
        return CgroupMemory(usageBytes: number("memory.usage_in_bytes"), limitBytes: limit,
                            oomKills: counter("memory.oom_control", "oom_kill"))
    }
}

/// Memory figures of a VM's group; nil where the host does not say.
public struct CgroupMemory: Equatable, Sendable {
    public var usageBytes: UInt64?
    /// nil: no limit.
    public var limitBytes: UInt64?
    public var oomKills: UInt64?

    public init(usageBytes: UInt64? = nil, limitBytes: UInt64? = nil, oomKills: UInt64? = nil) {
        self.usageBytes = usageBytes
        self.limitBytes = limitBytes
        self.oomKills = oomKills
    }
}

/// The system calls on cgroup files, EINTR retried, errors as `CgroupError`.
enum CgroupFile {
    /// One write of the whole value (a cgroup file takes one value per write()).
    static func write(_ value: String, to path: String, field: String) throws(CgroupError) {
        let fd = retrying { open(path, O_WRONLY | O_TRUNC | O_CLOEXEC) }
        guard fd >= 0 else { throw .cannotWrite(path: path, value: value, field: field, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        let written = bytes.withUnsafeBytes { buffer in retrying { Int32(Glibc.write(fd, buffer.baseAddress, buffer.count)) } }
        guard written == bytes.count else {
            let reason = written < 0 ? String(cString: strerror(errno)) : "short write"
            throw .cannotWrite(path: path, value: value, field: field, reason: reason)
        }
    }

    /// mkdir; true when it made the directory, false when it was there already.
    @discardableResult
    static func makeDirectory(_ path: String) throws(CgroupError) -> Bool {
        if retrying({ mkdir(path, 0o755) }) == 0 { return true }
        if errno == EEXIST { return false }
        throw .cannotCreate(path: path, reason: String(cString: strerror(errno)))
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    /// rmdir; true when the directory is gone (or was never there).
    static func removeDirectory(_ path: String) -> Bool {
        retrying { rmdir(path) } == 0 || errno == ENOENT
    }

    private static func retrying(_ call: () -> Int32) -> Int32 {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }
}
