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
        for record in records {
            let stats = try stats(of: record)
            let labels = "{name=\"\(Self.escapeLabel(record.name))\",uuid=\"\(record.uuid.uuidString.lowercased())\"}"
            let values: [String] = [
                String(stats.stateCode), String(stats.cpuUserSeconds), String(stats.cpuSystemSeconds),
                String(stats.memoryMaxBytes), String(stats.memoryCurrentBytes), String(stats.rssBytes),
                String(stats.vcpus), record.autostart ? "1" : "0",
            ]
            for index in families.indices { families[index].samples.append("\(families[index].name)\(labels) \(values[index])") }
        }
        var text = "# HELP vireo_vms_defined Number of defined VMs.\n# TYPE vireo_vms_defined gauge\nvireo_vms_defined \(records.count)\n"
        for family in families {
            text += "# HELP \(family.name) \(family.help)\n# TYPE \(family.name) \(family.type)\n"
            for sample in family.samples { text += sample + "\n" }
        }
        return text
    }

    static func escapeLabel(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
