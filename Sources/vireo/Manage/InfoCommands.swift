import ArgumentParser
import Foundation
import Manager

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List running VMs (all defined VMs with --all), as virsh list.")
    @Flag(help: "Also list VMs that are shut off.") var all = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let response = try connection.client().request("GET", "/v1/vms")
            guard response.status == 200, let vms = try? JSONDecoder().decode([VMSummary].self, from: Data(response.body)) else {
                throw ManageFailure(["failed to list domains", response.errorMessage])
            }
            let shown = vms.filter { all || VMRunState(rawValue: $0.state)?.isActive == true }
            let rows = shown.map { [$0.id.map(String.init) ?? "-", $0.name, VMRunState(rawValue: $0.state)?.displayName ?? $0.state] }
            print(formatTable(header: ["Id", "Name", "State"], rows: rows), terminator: "")
        }
    }
}

/// virsh's table: a leading space, columns padded and three spaces apart, a dashed rule.
func formatTable(header: [String], rows: [[String]]) -> String {
    var widths = header.map(\.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    func line(_ cells: [String]) -> String {
        " " + cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "   ")
    }
    let rule = String(repeating: "-", count: widths.reduce(0, +) + 3 * (widths.count - 1) + 3)
    var text = line(header) + "\n" + rule + "\n"
    for row in rows { text += line(row) + "\n" }
    return text + "\n"
}

struct DomInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dominfo", abstract: "Show basic information about a VM.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let vm = try connection.client().decode(VMSummary.self, "GET", "/v1/vms/\(escapedName(name))", action: "Failed to get", name: name)
            let state = VMRunState(rawValue: vm.state)
            let fields: [(String, String)] = [
                ("Id:", vm.id.map(String.init) ?? "-"),
                ("Name:", vm.name),
                ("UUID:", vm.uuid),
                ("OS Type:", "hvm"),
                ("State:", state?.displayName ?? vm.state),
                ("CPU(s):", String(vm.vcpus)),
                ("CPU time:", String(format: "%.1fs", Double(vm.cpuTimeNanoseconds) / 1e9)),
                ("Max memory:", "\(vm.memoryBytes >> 10) KiB"),
                ("Used memory:", "\(vm.currentMemoryBytes >> 10) KiB"),
                ("Persistent:", vm.persistent ? "yes" : "no"),
                ("Autostart:", vm.autostart ? "enable" : "disable"),
                ("Managed save:", vm.managedSave ? "yes" : "no"),
            ]
            for (label, value) in fields { print(label.padding(toLength: 15, withPad: " ", startingAt: 0) + " " + value) }
            print("")
        }
    }
}

struct DomState: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "domstate", abstract: "Show a VM's state, e.g. \"shut off (destroyed)\" with --reason.")
    @Argument(help: "VM name.") var name: String
    @Flag(help: "Also show why the VM is in that state.") var reason = false
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let body = try connection.client().decode(VMStateBody.self, "GET", "/v1/vms/\(escapedName(name))/state", action: "Failed to get", name: name)
            let state = VMRunState(rawValue: body.state)?.displayName ?? body.state
            print(reason ? "\(state) (\(body.reason))\n" : "\(state)\n")
        }
    }
}

struct DomStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "domstats", abstract: "Show a VM's statistics in virsh domstats' key=value form.")
    @Argument(help: "VM name.") var name: String
    @OptionGroup var connection: ConnectionOptions

    func run() throws {
        try manage {
            let stats = try connection.client().decode(VMStats.self, "GET", "/v1/vms/\(escapedName(name))/stats", action: "Failed to get", name: name)
            print(domstatsLines(stats).joined(separator: "\n") + "\n")
        }
    }
}

/// virsh's numeric reasons are per state (libvirt's virDomain*Reason enums).
func libvirtReasonCode(state: String, reason: String) -> Int {
    let table: [String: [String: Int]] = [
        "running": ["unknown": 0, "booted": 1, "migrated": 2, "restored": 3, "unpaused": 5],
        "paused": ["unknown": 0, "user": 1, "migrating": 2, "shutdown": 6, "crashed": 9],
        "shutoff": ["unknown": 0, "shutdown": 1, "destroyed": 2, "crashed": 3, "migrated": 4, "saved": 5, "failed": 6],
        "crashed": ["unknown": 0, "panicked": 1],
    ]
    return table[state]?[reason] ?? 0
}

func domstatsLines(_ stats: VMStats) -> [String] {
    var lines = [
        "Domain: '\(stats.name)'",
        "  state.state=\(stats.stateCode)",
        "  state.reason=\(libvirtReasonCode(state: stats.state, reason: stats.reason))",
        "  cpu.time=\(stats.cpuTimeNanoseconds)",
        "  cpu.user=\(UInt64(stats.cpuUserSeconds * 1e9))",
        "  cpu.system=\(UInt64(stats.cpuSystemSeconds * 1e9))",
        "  balloon.current=\(stats.memoryCurrentBytes >> 10)",
        "  balloon.maximum=\(stats.memoryMaxBytes >> 10)",
        "  balloon.rss=\(stats.rssBytes >> 10)",
        "  vcpu.current=\(stats.vcpus)",
        "  vcpu.maximum=\(stats.vcpus)",
    ]
    // Vireo's own, where known: the VM's cgroup with its memory use and hard limit (KiB, as
    // balloon.* and virsh memtune count), and how its last process ended.
    if let cgroup = stats.cgroup { lines.append("  vireo.cgroup=\(cgroup)") }
    if let bytes = stats.cgroupMemoryBytes { lines.append("  vireo.cgroup.memory.current=\(bytes >> 10)") }
    if let bytes = stats.cgroupMemoryLimitBytes { lines.append("  vireo.cgroup.memory.hard_limit=\(bytes >> 10)") }
    if let exit = stats.lastExit { lines.append("  vireo.last_exit=\(exit)") }
    // Block and net counters as virsh names them (block.0.name, block.0.rd.bytes, ...).
    for (group, devices) in [("block", stats.block), ("net", stats.net)] {
        lines.append("  \(group).count=\(devices.count)")
        for (index, device) in devices.enumerated() {
            lines.append("  \(group).\(index).name=\(device.name)")
            if let path = device.path { lines.append("  \(group).\(index).path=\(path)") }
            for key in device.counters.keys.sorted() { lines.append("  \(group).\(index).\(key)=\(device.counters[key] ?? 0)") }
        }
    }
    return lines
}
