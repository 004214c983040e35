/// `<cputune>`, `<memtune>` and `<blkiotune>`: the elements Vireo applies through the VM's cgroup.
/// Their other children (vcpupin, emulatorpin, min_guarantee, ...) stay unused and are reported.
extension LibvirtImporter {
    mutating func importTuning(from root: XMLElementNode, into definition: inout VMDefinition) throws {
        if let cputune = try single("cputune", in: root, at: "") {
            definition.cputune.shares = try number(try single("shares", in: cputune, at: "cputune"), at: "cputune/shares")
            definition.cputune.period = try number(try single("period", in: cputune, at: "cputune"), at: "cputune/period")
            if let quota = try single("quota", in: cputune, at: "cputune") {
                // libvirt: -1 (any negative in older versions' documents) is no limit.
                let text = quota.trimmedText
                if text != "-1" { definition.cputune.quota = try number(quota, at: "cputune/quota") }
            }
        }
        if let memtune = try single("memtune", in: root, at: "") {
            definition.memtune.hardLimit = try limit("hard_limit", in: memtune)
            definition.memtune.softLimit = try limit("soft_limit", in: memtune)
            definition.memtune.swapHardLimit = try limit("swap_hard_limit", in: memtune)
        }
        if let blkiotune = try single("blkiotune", in: root, at: "") {
            definition.blkiotune.weight = try number(try single("weight", in: blkiotune, at: "blkiotune"), at: "blkiotune/weight")
            let devices = blkiotune.children(named: "device")
            try Check.count(devices.count, limit: BlockIOTune.maxDevices, noun: "devices", field: "blkiotune/device")
            let paths = Self.childPaths(of: blkiotune, at: "blkiotune")
            for element in devices {
                element.consume()
                let path = paths[ObjectIdentifier(element)] ?? "blkiotune/device"
                guard let node = try single("path", in: element, at: path) else {
                    throw DefinitionError.missing(field: "\(path)/path")
                }
                func value(_ name: String) throws -> UInt64? {
                    try number(try single(name, in: element, at: path), at: "\(path)/\(name)")
                }
                definition.blkiotune.devices.append(BlockIODevice(
                    path: node.trimmedText, weight: try value("weight"),
                    readBytesPerSecond: try value("read_bytes_sec"), writeBytesPerSecond: try value("write_bytes_sec"),
                    readIOPS: try value("read_iops_sec"), writeIOPS: try value("write_iops_sec")))
            }
        }
    }

    /// A memtune limit: a size in KiB unless its unit says otherwise, as libvirt reads it.
    private func limit(_ name: String, in memtune: XMLElementNode) throws -> UInt64? {
        guard let element = try single(name, in: memtune, at: "memtune") else { return nil }
        return try size(element, at: "memtune/\(name)")
    }

    /// A whole number in an element's text; nil when the element is absent.
    private func number(_ element: XMLElementNode?, at path: String) throws -> UInt64? {
        guard let element else { return nil }
        let text = element.trimmedText
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw DefinitionError.invalidValue(field: path, reason: "\(quoted(text)) is not a whole number")
        }
        guard let value = UInt64(text) else {
            throw DefinitionError.invalidValue(field: path, reason: "\(quoted(text)) is too large")
        }
        return value
    }
}

extension VMDefinition {
    /// The tuning elements in libvirt's order and spelling (memtune in KiB, as virsh prints it).
    func writeTuning(to xml: inout XMLWriter) {
        if !memtune.isEmpty {
            xml.open("memtune")
            if let value = memtune.hardLimit { writeKiB("hard_limit", value, to: &xml) }
            if let value = memtune.softLimit { writeKiB("soft_limit", value, to: &xml) }
            if let value = memtune.swapHardLimit { writeKiB("swap_hard_limit", value, to: &xml) }
            xml.close("memtune")
        }
        if !blkiotune.isEmpty {
            xml.open("blkiotune")
            if let weight = blkiotune.weight { xml.leaf("weight", text: "\(weight)") }
            for device in blkiotune.devices {
                xml.open("device")
                xml.leaf("path", text: device.path)
                if let value = device.weight { xml.leaf("weight", text: "\(value)") }
                if let value = device.readIOPS { xml.leaf("read_iops_sec", text: "\(value)") }
                if let value = device.writeIOPS { xml.leaf("write_iops_sec", text: "\(value)") }
                if let value = device.readBytesPerSecond { xml.leaf("read_bytes_sec", text: "\(value)") }
                if let value = device.writeBytesPerSecond { xml.leaf("write_bytes_sec", text: "\(value)") }
                xml.close("device")
            }
            xml.close("blkiotune")
        }
        if !cputune.isEmpty {
            xml.open("cputune")
            if let value = cputune.shares { xml.leaf("shares", text: "\(value)") }
            if let value = cputune.period { xml.leaf("period", text: "\(value)") }
            if let value = cputune.quota { xml.leaf("quota", text: "\(value)") }
            xml.close("cputune")
        }
    }

    /// KiB when exact (validated limits are at least 1 MiB but need not be page multiples), else bytes.
    private func writeKiB(_ name: String, _ bytes: UInt64, to xml: inout XMLWriter) {
        if bytes % 1024 == 0 {
            xml.leaf(name, ["unit": "KiB"], text: "\(bytes / 1024)")
        } else {
            xml.leaf(name, ["unit": "bytes"], text: "\(bytes)")
        }
    }
}
