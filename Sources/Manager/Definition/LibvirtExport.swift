import VMContract
/// `vireo dumpxml`: the definition as libvirt domain XML, in the shape `virsh dumpxml` prints.
/// Importing the result gives back an equal definition (settings libvirt has no element for,
/// such as autostart, travel in Vireo's own <metadata> namespace).
extension VMDefinition {
    public func libvirtXML() -> String {
        var xml = XMLWriter()
        xml.open("domain", ["type": "kvm"])
        xml.leaf("name", text: name)
        xml.leaf("uuid", text: uuid.uuidString.lowercased())
        xml.open("metadata")
        xml.open("vireo:vm", ["xmlns:vireo": vireoXMLNamespace])
        xml.leaf("vireo:autostart", text: autostart ? "yes" : "no")
        xml.close("vireo:vm")
        xml.close("metadata")
        // libvirt counts memory in KiB; validated definitions are page multiples, so this is exact.
        xml.leaf("memory", ["unit": "KiB"], text: "\(memory / 1024)")
        xml.leaf("currentMemory", ["unit": "KiB"], text: "\(currentMemory / 1024)")
        writeTuning(to: &xml)
        xml.leaf("vcpu", ["placement": "static"], text: "\(vcpus)")
        writeOS(to: &xml)
        xml.leaf("on_poweroff", text: onPoweroff.rawValue)
        xml.leaf("on_reboot", text: onReboot.rawValue)
        xml.leaf("on_crash", text: onCrash.rawValue)
        xml.open("devices")
        for disk in disks { writeDisk(disk, to: &xml) }
        for interface in interfaces { writeInterface(interface, to: &xml) }
        if console.type == .pty {
            xml.open("serial", ["type": "pty"])
            xml.leaf("target", ["port": "0"])
            xml.close("serial")
            xml.open("console", ["type": "pty"])
            xml.leaf("target", ["type": "serial", "port": "0"])
            xml.close("console")
        }
        if rng {
            xml.open("rng", ["model": "virtio"])
            xml.leaf("backend", ["model": "random"], text: "/dev/urandom")
            xml.close("rng")
        }
        xml.close("devices")
        xml.close("domain")
        return xml.output
    }

    /// A kernel as <kernel>/<initrd>/<cmdline>; firmware as libvirt names it: uefi is
    /// `<os firmware='efi'>` (libvirt picks the OVMF image), bios is no loader (libvirt's
    /// default, SeaBIOS), a file is a <loader> (pflash when it has a variable store, else rom).
    private func writeOS(to xml: inout XMLWriter) {
        guard let firmware = os.firmware else {
            xml.open("os")
            xml.leaf("type", ["arch": "x86_64"], text: "hvm")
            xml.leaf("kernel", text: os.kernel ?? "")
            if let initrd = os.initrd { xml.leaf("initrd", text: initrd) }
            xml.leaf("cmdline", text: os.cmdline)
            xml.close("os")
            return
        }
        xml.open("os", firmware == .uefi ? ["firmware": "efi"] : [:])
        xml.leaf("type", ["arch": "x86_64"], text: "hvm")
        if case .file(let path) = firmware {
            if os.nvram != nil {
                xml.leaf("loader", ["readonly": "yes", "type": "pflash"], text: path)
            } else {
                xml.leaf("loader", ["type": "rom"], text: path)
            }
        }
        if let nvram = os.nvram { xml.leaf("nvram", text: nvram) }
        for device in os.bootOrder { xml.leaf("boot", ["dev": device.rawValue]) }
        xml.close("os")
    }

    private func writeDisk(_ disk: Disk, to xml: inout XMLWriter) {
        xml.open("disk", ["type": disk.type.rawValue, "device": disk.device.rawValue])
        xml.leaf("driver", ["name": "qemu", "type": disk.format.rawValue])
        xml.leaf("source", [disk.type == .file ? "file" : "dev": disk.source])
        xml.leaf("target", ["dev": disk.target, "bus": "virtio"])
        if disk.readonly { xml.leaf("readonly") }
        if let serial = disk.serial { xml.leaf("serial", text: serial) }
        xml.close("disk")
    }

    private func writeInterface(_ interface: NetworkInterface, to xml: inout XMLWriter) {
        let type = switch interface.type {
        case .bridge: "bridge"
        case .network: "network"
        case .tap: "ethernet"
        case .user: "user"
        }
        xml.open("interface", ["type": type])
        xml.leaf("mac", ["address": interface.mac.description])
        switch interface.type {
        case .bridge: xml.leaf("source", ["bridge": interface.source])
        case .network: xml.leaf("source", ["network": interface.source])
        case .tap: xml.leaf("target", ["dev": interface.source, "managed": "no"])
        case .user: xml.leaf("backend", ["type": "passt"])
        }
        xml.leaf("model", ["type": interface.model.rawValue])
        // libvirt's passt port forwards: <portForward proto='tcp' address=…><range start='2222' to='22'/>.
        for text in interface.forwards {
            guard let forward = try? PortForward.parse(text) else { continue }
            if let address = forward.hostAddress {
                xml.open("portForward", ["proto": forward.proto.rawValue, "address": address])
            } else {
                xml.open("portForward", ["proto": forward.proto.rawValue])
            }
            xml.leaf("range", ["start": String(forward.hostPort), "to": String(forward.guestPort)])
            xml.close("portForward")
        }
        xml.close("interface")
    }
}

/// Indented XML in libvirt's style (single-quoted attributes), escaping every value.
struct XMLWriter {
    private(set) var output = ""
    private var depth = 0

    /// Attributes are written in the order given, so callers pass `KeyValuePairs`.
    mutating func open(_ name: String, _ attributes: KeyValuePairs<String, String> = [:]) {
        output += indent + "<\(name)\(render(attributes))>\n"
        depth += 1
    }

    mutating func close(_ name: String) {
        depth -= 1
        output += indent + "</\(name)>\n"
    }

    mutating func leaf(_ name: String, _ attributes: KeyValuePairs<String, String> = [:], text: String? = nil) {
        if let text {
            output += indent + "<\(name)\(render(attributes))>\(Self.escape(text))</\(name)>\n"
        } else {
            output += indent + "<\(name)\(render(attributes))/>\n"
        }
    }

    private var indent: String { String(repeating: "  ", count: depth) }

    private func render(_ attributes: KeyValuePairs<String, String>) -> String {
        attributes.map { " \($0.key)='\(Self.escape($0.value))'" }.joined()
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }
}
