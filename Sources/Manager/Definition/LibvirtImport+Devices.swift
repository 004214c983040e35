/// <devices>: disks, interfaces and the serial console. Whatever is not marked as used here is
/// reported by the importer's final sweep.
extension LibvirtImporter {
    mutating func importDevices(
        _ devices: XMLElementNode, into definition: inout VMDefinition,
        diskPaths: inout [String], interfacePaths: inout [(path: String, sourceElement: String)]
    ) throws {
        let paths = Self.childPaths(of: devices, at: "devices")
        let disks = devices.children(named: "disk")
        let interfaces = devices.children(named: "interface")
        // Bound the work before doing any of it: a 10,000-disk document fails here.
        try Check.count(disks.count, limit: DefinitionLimits.maxDisks, noun: "disks", field: "devices/disk")
        try Check.count(
            interfaces.count, limit: DefinitionLimits.maxInterfaces, noun: "interfaces", field: "devices/interface")
        for element in disks {
            let path = paths[ObjectIdentifier(element)] ?? "devices/disk"
            // An empty CD-ROM drive (virt-install leaves one after an install; GNOME Boxes empties
            // its install medium's to `<source file=''/>`): Vireo has no removable media, so the
            // guest gets no drive; said, not silently dropped.
            if element.attributes["device"] == "cdrom",
               element.children(named: "source").allSatisfy({ ($0.attributes["file"] ?? "").isEmpty && ($0.attributes["dev"] ?? "").isEmpty }) {
                element.consumeSubtree()
                unsupported.append("\(path) (empty cdrom drive: Vireo has no removable media, the guest gets no drive)")
                continue
            }
            definition.disks.append(try disk(element, at: path))
            diskPaths.append(path)
        }
        for element in interfaces {
            let path = paths[ObjectIdentifier(element)] ?? "devices/interface"
            let interface = try interface(element, at: path)
            definition.interfaces.append(interface)
            interfacePaths.append((path, interface.type == .tap ? "target" : interface.type == .user ? "portForward" : "source"))
        }
        definition.console.type = consoleType(in: devices)
        definition.rng = entropyDevice(in: devices)
    }

    /// `<rng model='virtio'>` with the host's random source (virt-install adds one for every
    /// modern guest): Vireo's virtio-rng, which reads the kernel's generator (getrandom) whichever
    /// of /dev/urandom or /dev/random is named. Other backends (egd, builtin) stay unused and are
    /// reported; so are rate limits and a second device.
    private mutating func entropyDevice(in devices: XMLElementNode) -> Bool {
        for element in devices.children(named: "rng") where element.attributes["model"] == "virtio" {
            let backends = element.children(named: "backend")
            guard backends.count == 1, let backend = backends.first, backend.attributes == ["model": "random"],
                  backend.children.isEmpty, ["", "/dev/urandom", "/dev/random"].contains(backend.trimmedText) else { continue }
            element.consume()
            _ = element.attribute("model")
            backend.consume()
            _ = backend.attribute("model")
            return true
        }
        return false
    }

    private mutating func disk(_ element: XMLElementNode, at path: String) throws -> Disk {
        element.consume()
        let type = try Check.oneOf(element.attribute("type") ?? "file", Disk.SourceType.self, noun: "disk type", field: path)
        let device = try Check.oneOf(element.attribute("device") ?? "disk", Disk.Device.self, noun: "device", field: path)
        // An empty <backingStore/> states "no backing chain", which is what Vireo does anyway.
        for backing in element.children(named: "backingStore") where backing.children.isEmpty && backing.attributes.isEmpty {
            backing.consume()
        }

        var format = Disk.Format.raw
        if let driver = try single("driver", in: element, at: path) {
            driver.consumeAttribute("name", ifIn: ["qemu"])
            if let raw = driver.attribute("type") {
                format = try Check.oneOf(raw, Disk.Format.self, noun: "format", field: "\(path)/driver")
            }
        }

        guard let source = try single("source", in: element, at: path) else {
            throw DefinitionError.missing(field: "\(path)/source")
        }
        let sourceAttribute = type == .file ? "file" : "dev"
        guard let sourcePath = source.attribute(sourceAttribute) else {
            throw DefinitionError.invalidValue(field: "\(path)/source", reason: "missing \(sourceAttribute) attribute")
        }

        guard let target = try single("target", in: element, at: path) else {
            throw DefinitionError.missing(field: "\(path)/target")
        }
        // Any other bus is reported: the disk is still attached, as virtio-blk, not as SATA.
        target.consumeAttribute("bus", ifIn: ["virtio"])
        guard let dev = target.attribute("dev") else {
            throw DefinitionError.invalidValue(field: "\(path)/target", reason: "missing dev attribute")
        }

        let readonly = try single("readonly", in: element, at: path) != nil || device == .cdrom
        let serial = try single("serial", in: element, at: path)?.text
        return Disk(source: sourcePath, type: type, device: device, format: format, target: dev,
                    readonly: readonly, serial: serial)
    }

    private mutating func interface(_ element: XMLElementNode, at path: String) throws -> NetworkInterface {
        element.consume()
        let type: NetworkInterface.Kind
        switch element.attribute("type") {
        case "bridge": type = .bridge
        case "network": type = .network
        case "ethernet": type = .tap
        case "user": type = .user
        case let other:
            throw DefinitionError.invalidValue(
                field: path,
                reason: "interface type \(quoted(other ?? "")) is not supported (expected bridge, network, ethernet or user)")
        }

        let sourceName: String
        var forwards: [String] = []
        if type == .user {
            // GNOME Boxes' and virt-install's unprivileged default; libvirt runs it on passt (with
            // <backend type='passt'/>) or on QEMU's slirp: Vireo always on passt.
            sourceName = ""
            if let backend = try single("backend", in: element, at: path) {
                backend.consumeAttribute("type", ifIn: ["passt"])
                backend.consume()
            }
            for forward in element.children(named: "portForward") {
                forward.consume()
                let proto = forward.attribute("proto") ?? "tcp"
                let address = forward.attribute("address")
                for range in forward.children(named: "range") {
                    // One port each: a range with an end, or exclusions, stays reported.
                    guard range.attributes["end"] == nil, range.attributes["exclude"] == nil,
                          let start = range.attribute("start").flatMap({ UInt16($0) }) else { continue }
                    range.consume()
                    let to = range.attribute("to").flatMap { UInt16($0) } ?? start
                    forwards.append("\(proto):\(address ?? ""):\(start)-:\(to)")
                }
            }
        } else if type == .tap {
            // libvirt's "ethernet" names an existing tap in <target dev=… managed='no'/>; a
            // managed tap (one libvirt would create) is reported, Vireo uses the device as is.
            guard let target = try single("target", in: element, at: path) else {
                throw DefinitionError.missing(field: "\(path)/target")
            }
            target.consumeAttribute("managed", ifIn: ["no"])
            guard let dev = target.attribute("dev") else {
                throw DefinitionError.invalidValue(field: "\(path)/target", reason: "missing dev attribute")
            }
            sourceName = dev
        } else {
            // A <target> here is the tap libvirt created (live XML); Vireo creates its own, so it
            // stays unused and is reported.
            guard let source = try single("source", in: element, at: path) else {
                throw DefinitionError.missing(field: "\(path)/source")
            }
            let attribute = type == .bridge ? "bridge" : "network"
            guard let name = source.attribute(attribute) else {
                throw DefinitionError.invalidValue(field: "\(path)/source", reason: "missing \(attribute) attribute")
            }
            sourceName = name
        }

        var mac = MACAddress.random()
        if let macElement = try single("mac", in: element, at: path) {
            let text = macElement.attribute("address") ?? ""
            guard let parsed = MACAddress(text) else {
                throw DefinitionError.invalidValue(field: "\(path)/mac", reason: "\(quoted(text)) is not a MAC address")
            }
            mac = parsed
        }
        var model = NetworkInterface.Model.virtio
        if let modelElement = try single("model", in: element, at: path) {
            let requested = modelElement.attributes["type"] ?? ""
            if Self.emulatedNICModels.contains(requested) {
                throw DefinitionError.invalidValue(field: "\(path)/model", reason: "NIC model \(quoted(requested)) is not emulated: Vireo's NIC is virtio-net; use <model type='virtio'/> (Linux has the driver built in; Windows needs virtio-win)")
            }
            model = try Check.oneOf(
                modelElement.attribute("type") ?? "", NetworkInterface.Model.self, noun: "model", field: "\(path)/model")
        }
        return NetworkInterface(type: type, source: sourceName, mac: mac, model: model, forwards: forwards)
    }

    /// NIC models QEMU emulates and libvirt domains name (virt-manager's defaults for older guests).
    static let emulatedNICModels: Set<String> = ["e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "vmxnet3", "igb"]

    /// libvirt describes COM1 twice, as <serial type='pty'> and as <console type='pty'> with a
    /// serial target; either means Vireo's pty console. Other serial kinds and ports stay unused.
    /// A <source path='/dev/pts/N'/> (live XML) is libvirt's pty and stays unused too.
    private mutating func consoleType(in devices: XMLElementNode) -> SerialConsole.Kind {
        var kind = SerialConsole.Kind.none
        for element in devices.children where element.name == "serial" || element.name == "console" {
            let targets = element.children(named: "target")
            guard targets.count <= 1 else { continue }
            let target = targets.first
            let port = target?.attributes["port"] ?? "0"
            let isSerial = element.name == "serial"
            let targetType = target?.attributes["type"] ?? (isSerial ? "isa-serial" : "serial")
            guard element.attributes["type"] == "pty", port == "0",
                  targetType == (isSerial ? "isa-serial" : "serial") else { continue }
            kind = .pty
            element.consume()
            _ = element.attribute("type")
            if let target {
                target.consume()
                _ = target.attribute("type")
                _ = target.attribute("port")
                for model in target.children(named: "model") where model.attributes == ["name": "isa-serial"] {
                    model.consume()
                    _ = model.attribute("name")
                }
            }
        }
        return kind
    }
}
