import ArgumentParser
import Foundation
import Manager
import VMContract

// Storage pools and volumes, spelled as virsh spells them (pool-define-as, pool-build, ...).

let poolCommands: [any ParsableCommand.Type] = [
    PoolDefineAs.self, PoolBuild.self, PoolStart.self, PoolDestroy.self, PoolUndefine.self, PoolAutostart.self,
    PoolList.self, VolCreateAs.self, VolList.self, VolDelete.self,
]

/// The API's error for a pool request, in virsh's two lines.
private func poolFailure(_ response: HTTPResponse, doing action: String, pool: String) -> ManageFailure {
    if response.status == 404 && response.errorMessage.hasPrefix("no storage pool named") {
        return ManageFailure(["failed to get pool '\(pool)'", response.errorMessage])
    }
    return ManageFailure(["\(action)", response.errorMessage])
}

private func poolRequest(_ connection: ConnectionOptions, _ method: String, _ path: String, body: [UInt8] = [],
                         action: String, pool: String) throws -> HTTPResponse {
    let response = try connection.client().request(method, path, body: body)
    guard (200..<300).contains(response.status) else { throw poolFailure(response, doing: action, pool: pool) }
    return response
}

private func daemonMessage(_ response: HTTPResponse) -> String {
    (try? JSONDecoder().decode([String: String].self, from: Data(response.body)))?["message"] ?? ""
}

/// "1.50 GiB", as virsh shows capacities.
func formatCapacity(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(bytes) B" : String(format: "%.2f %@", value, units[unit])
}

struct PoolDefineAs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-define-as",
        abstract: "Define a storage pool: a directory (dir --target DIR) or an LVM volume group (logical --source-name VG).",
        discussion: "Then pool-build (creates the directory or the volume group) and pool-start. Volumes are made with vol-create-as.")
    @Argument(help: "Pool name.") var name: String
    @Argument(help: "Pool type: dir or logical.") var type: String
    @Option(help: "dir: the directory holding the pool's image files.") var target: String?
    @Option(name: .customLong("source-name"), help: "logical: the volume group's name (default: the pool's name).") var sourceName: String?
    @Option(name: .customLong("source-dev"), help: "logical: a physical volume pool-build makes the group from (repeatable).") var sourceDevices: [String] = []
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            guard let kind = StoragePoolDefinition.Kind(rawValue: type) else {
                throw ManageFailure(["pool type '\(type)' is not supported (dir or logical)"])
            }
            if kind == .dir && target == nil { throw ManageFailure(["a dir pool needs --target DIR"]) }
            if kind == .logical && target != nil { throw ManageFailure(["a logical pool's target is /dev/VG: give --source-name VG, not --target"]) }
            let definition = StoragePoolDefinition(name: name, type: kind, target: target.map(absolutePath), sourceName: sourceName,
                                                   sourceDevices: sourceDevices)
            _ = try poolRequest(connection, "POST", "/v1/pools", body: Array(try JSONEncoder().encode(definition)),
                                action: "Failed to define pool \(name)", pool: name)
            print("Pool \(name) defined\n")
        }
    }

    private func absolutePath(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

/// One of the pool verbs that POST to /v1/pools/NAME/ACTION and print the daemon's message.
private func poolAction(_ action: String, failing: String, name: String, connection: ConnectionOptions) throws {
    try manage {
        let response = try poolRequest(connection, "POST", "/v1/pools/\(escapedName(name))/\(action)",
                                       action: "\(failing) pool \(name)", pool: name)
        print(daemonMessage(response) + "\n")
    }
}

struct PoolBuild: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool-build",
        abstract: "Build a storage pool: create its directory (mode 0711), or its volume group from --source-dev.")
    @Argument(help: "Pool name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try poolAction("build", failing: "Failed to build", name: name, connection: connection) }
}

struct PoolStart: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool-start",
        abstract: "Start (activate) a storage pool: its volumes can then be listed, created and used.")
    @Argument(help: "Pool name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try poolAction("start", failing: "Failed to start", name: name, connection: connection) }
}

struct PoolDestroy: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool-destroy",
        abstract: "Stop (deactivate) a storage pool; nothing is deleted. Refused while a running VM uses it.")
    @Argument(help: "Pool name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws { try poolAction("destroy", failing: "Failed to destroy", name: name, connection: connection) }
}

struct PoolUndefine: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool-undefine",
        abstract: "Forget a stopped storage pool (its directory or volume group stays).")
    @Argument(help: "Pool name.") var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        try manage {
            let response = try poolRequest(connection, "DELETE", "/v1/pools/\(escapedName(name))",
                                           action: "Failed to undefine pool \(name)", pool: name)
            print(daemonMessage(response) + "\n")
        }
    }
}

struct PoolAutostart: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool-autostart",
        abstract: "Start a storage pool whenever the daemon starts (--disable: no longer).")
    @Argument(help: "Pool name.") var name: String
    @Flag(help: "Turn autostart off.") var disable = false
    @OptionGroup var connection: ConnectionOptions
    func run() throws {
        try manage {
            let response = try poolRequest(connection, "PUT", "/v1/pools/\(escapedName(name))/autostart",
                                           body: Array("{\"enabled\":\(!disable)}".utf8),
                                           action: "Failed to change autostart of pool \(name)", pool: name)
            print(daemonMessage(response) + "\n")
        }
    }
}

struct PoolList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool-list",
        abstract: "List active storage pools (--all: inactive ones too; --details: type, space, target).")
    @Flag(help: "Also list inactive pools.") var all = false
    @Flag(help: "Show type, capacity, allocation, available space and target.") var details = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let response = try connection.client().request("GET", "/v1/pools")
            guard response.status == 200, let pools = try? JSONDecoder().decode([StoragePoolSummary].self, from: Data(response.body)) else {
                throw ManageFailure(["failed to list pools", response.errorMessage])
            }
            let shown = pools.filter { all || $0.state == "active" }
            if details {
                let rows = shown.map { pool in
                    [pool.name, pool.state, pool.autostart ? "yes" : "no", pool.type,
                     pool.capacity.map(formatCapacity) ?? "-", pool.allocation.map(formatCapacity) ?? "-",
                     pool.available.map(formatCapacity) ?? "-", pool.target]
                }
                print(formatTable(header: ["Name", "State", "Autostart", "Type", "Capacity", "Allocation", "Available", "Target"], rows: rows),
                      terminator: "")
            } else {
                print(formatTable(header: ["Name", "State", "Autostart"], rows: shown.map { [$0.name, $0.state, $0.autostart ? "yes" : "no"] }),
                      terminator: "")
            }
        }
    }
}

struct VolCreateAs: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vol-create-as",
        abstract: "Create a volume in a started pool: an image file (raw or qcow2) or an LVM logical volume (raw).",
        discussion: "SIZE takes a unit like qemu-img and virsh: 512M, 20G (binary units), plain bytes.")
    @Argument(help: "Pool name.") var pool: String
    @Argument(help: "Volume name (a file name in a dir pool).") var name: String
    @Argument(help: "Capacity, e.g. 20G.") var size: String
    @Option(help: "raw (default) or qcow2.") var format: String?
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            guard case .success(let bytes) = ByteSize.parse(size) else {
                throw ManageFailure(["invalid capacity '\(size)' (e.g. 512M, 20G, or bytes)"])
            }
            let request = StorageVolumeRequest(name: name, capacity: bytes, format: format)
            _ = try poolRequest(connection, "POST", "/v1/pools/\(escapedName(pool))/volumes", body: Array(try JSONEncoder().encode(request)),
                                action: "Failed to create vol \(name)", pool: pool)
            print("Vol \(name) created\n")
        }
    }
}

struct VolList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vol-list",
        abstract: "List the volumes of a started pool (--details: format, capacity, allocation).")
    @Argument(help: "Pool name.") var pool: String
    @Flag(help: "Show format, capacity and allocation.") var details = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let response = try poolRequest(connection, "GET", "/v1/pools/\(escapedName(pool))/volumes",
                                           action: "Failed to list volumes of pool \(pool)", pool: pool)
            guard let volumes = try? JSONDecoder().decode([StorageVolume].self, from: Data(response.body)) else {
                throw ManageFailure(["unexpected answer from the daemon"])
            }
            if details {
                print(formatTable(header: ["Name", "Path", "Format", "Capacity", "Allocation"], rows: volumes.map {
                    [$0.name, $0.path, $0.format, formatCapacity($0.capacity), formatCapacity($0.allocation)]
                }), terminator: "")
            } else {
                print(formatTable(header: ["Name", "Path"], rows: volumes.map { [$0.name, $0.path] }), terminator: "")
            }
        }
    }
}

struct VolDelete: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "vol-delete",
        abstract: "Delete a volume (its data is gone). Refused while a defined VM names it as a disk.")
    @Argument(help: "Volume name (with --pool), or its path.") var volume: String
    @Option(help: "The pool holding the volume.") var pool: String?
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            var poolName = pool
            var volumeName = volume
            if poolName == nil {
                // A path: the started pool whose target directory holds it.
                guard volume.hasPrefix("/") else { throw ManageFailure(["give --pool POOL, or the volume's path"]) }
                let directory = (volume as NSString).deletingLastPathComponent
                let response = try connection.client().request("GET", "/v1/pools")
                let pools = (try? JSONDecoder().decode([StoragePoolSummary].self, from: Data(response.body))) ?? []
                guard let owner = pools.first(where: { $0.state == "active" && $0.target == directory }) else {
                    throw ManageFailure(["failed to get vol '\(volume)'", "no started storage pool holds \(volume)"])
                }
                poolName = owner.name
                volumeName = (volume as NSString).lastPathComponent
            }
            let pool = poolName ?? ""
            let response = try poolRequest(connection, "DELETE", "/v1/pools/\(escapedName(pool))/volumes/\(escapedName(volumeName))",
                                           action: "Failed to delete vol \(volumeName)", pool: pool)
            print(daemonMessage(response) + "\n")
        }
    }
}
