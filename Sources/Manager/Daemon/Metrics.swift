import Foundation

// GET /metrics: Prometheus text exposition format 0.0.4, one series per VM labelled by name and
// uuid. Label values are escaped as the format requires (backslash, quote, newline).
extension Daemon {
    func metricsText() throws -> String {
        let records = try store.all()
        var families: [(name: String, help: String, type: String, samples: [String])] = [
            ("vireo_vm_state", "VM state as virsh numbers it: 1 running, 3 paused, 4 in shutdown, 5 shut off, 6 crashed.", "gauge", []),
            ("vireo_vm_cpu_user_seconds_total", "Host CPU time spent in user mode by the VM's process.", "counter", []),
            ("vireo_vm_cpu_system_seconds_total", "Host CPU time spent in kernel mode (including guest time in KVM) by the VM's process.", "counter", []),
            ("vireo_vm_memory_max_bytes", "Configured maximum guest memory.", "gauge", []),
            ("vireo_vm_memory_current_bytes", "Configured current guest memory (the balloon target).", "gauge", []),
            ("vireo_vm_rss_bytes", "Resident memory of the VM's process.", "gauge", []),
            ("vireo_vm_vcpus", "Number of vCPUs.", "gauge", []),
            ("vireo_vm_autostart", "1 when the VM starts with the daemon.", "gauge", []),
        ]
        // One stats call per VM (each asks its VMM for device counters), for every family below.
        let allStats = try records.map { try stats(of: $0) }
        for (record, stats) in zip(records, allStats) {
            let labels = "{name=\"\(Self.escapeLabel(record.name))\",uuid=\"\(record.uuid.uuidString.lowercased())\"}"
            let values: [String] = [
                String(stats.stateCode), String(stats.cpuUserSeconds), String(stats.cpuSystemSeconds),
                String(stats.memoryMaxBytes), String(stats.memoryCurrentBytes), String(stats.rssBytes),
                String(stats.vcpus), record.autostart ? "1" : "0",
            ]
            for index in families.indices { families[index].samples.append("\(families[index].name)\(labels) \(values[index])") }
        }
        // Per-device counters of running VMs, one series per disk or NIC.
        var deviceFamilies = Self.deviceFamilies.map { (name: $0.name, help: $0.help, type: "counter", samples: [String]()) }
        for (record, stats) in zip(records, allStats) {
            let base = "name=\"\(Self.escapeLabel(record.name))\",uuid=\"\(record.uuid.uuidString.lowercased())\""
            for (group, devices) in [("block", stats.block), ("net", stats.net)] {
                for device in devices {
                    var labels = base + ",device=\"\(Self.escapeLabel(device.name))\""
                    if let path = device.path { labels += ",path=\"\(Self.escapeLabel(path))\"" }
                    for (index, family) in Self.deviceFamilies.enumerated() where family.group == group {
                        guard let value = device.counters[family.key] else { continue }
                        deviceFamilies[index].samples.append("\(family.name){\(labels)} \(value)")
                    }
                }
            }
        }
        families += deviceFamilies.filter { !$0.samples.isEmpty }
        // The cgroup figures of running VMs that have a group.
        var cgroupFamilies: [(name: String, help: String, type: String, samples: [String])] = [
            ("vireo_vm_cgroup_memory_bytes", "Memory charged to the VM's cgroup (guest RAM the guest touched, and the VMM's own).", "gauge", []),
            ("vireo_vm_cgroup_memory_limit_bytes", "The VM's cgroup memory limit (memtune hard_limit).", "gauge", []),
        ]
        for (record, stats) in zip(records, allStats) {
            let labels = "{name=\"\(Self.escapeLabel(record.name))\",uuid=\"\(record.uuid.uuidString.lowercased())\"}"
            if let bytes = stats.cgroupMemoryBytes { cgroupFamilies[0].samples.append("\(cgroupFamilies[0].name)\(labels) \(bytes)") }
            if let bytes = stats.cgroupMemoryLimitBytes { cgroupFamilies[1].samples.append("\(cgroupFamilies[1].name)\(labels) \(bytes)") }
        }
        families += cgroupFamilies.filter { !$0.samples.isEmpty }
        var text = "# HELP vireo_vms_defined Number of defined VMs.\n# TYPE vireo_vms_defined gauge\nvireo_vms_defined \(records.count)\n"
        for family in families {
            text += "# HELP \(family.name) \(family.help)\n# TYPE \(family.name) \(family.type)\n"
            for sample in family.samples { text += sample + "\n" }
        }
        return text
    }

    /// virtio-blk and virtio-net counters (domstats keys) as Prometheus counters.
    static let deviceFamilies: [(group: String, key: String, name: String, help: String)] = [
        ("block", "rd.reqs", "vireo_vm_block_read_requests_total", "Read requests served by a virtio-blk disk."),
        ("block", "rd.bytes", "vireo_vm_block_read_bytes_total", "Bytes read by the guest from a virtio-blk disk."),
        ("block", "wr.reqs", "vireo_vm_block_write_requests_total", "Write requests served by a virtio-blk disk."),
        ("block", "wr.bytes", "vireo_vm_block_write_bytes_total", "Bytes written by the guest to a virtio-blk disk."),
        ("block", "fl.reqs", "vireo_vm_block_flush_requests_total", "Flush requests (fdatasync) on a virtio-blk disk."),
        ("block", "errs", "vireo_vm_block_errors_total", "Requests answered with an I/O error."),
        ("net", "rx.bytes", "vireo_vm_net_receive_bytes_total", "Bytes delivered to the guest by a virtio-net NIC."),
        ("net", "rx.pkts", "vireo_vm_net_receive_packets_total", "Frames delivered to the guest."),
        ("net", "rx.drop", "vireo_vm_net_receive_dropped_total", "Frames dropped because the guest had no receive buffer."),
        ("net", "tx.bytes", "vireo_vm_net_transmit_bytes_total", "Bytes sent by the guest."),
        ("net", "tx.pkts", "vireo_vm_net_transmit_packets_total", "Frames sent by the guest."),
        ("net", "tx.errs", "vireo_vm_net_transmit_errors_total", "Malformed frames from the guest."),
    ]

    static func escapeLabel(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
