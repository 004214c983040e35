import Foundation

// The Codable form is the native format itself, so what the daemon stores is what a user writes,
// and decoding it (from a file or from the daemon's own database) validates it the same way.
// Encoding goes through `nativeValue` (NativeValue.swift), the one place that lists the fields
// in their documented order for YAML, JSON and any Encoder.

extension VMDefinition: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, uuid, memory, currentMemory, vcpus, os, disks, interfaces, console, rng
        case onPoweroff, onReboot, onCrash, autostart, cputune, memtune, blkiotune
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        name = try c.required(String.self, .name)
        uuid = try c.optional(String.self, .uuid).map { try Check.uuid($0, field: c.path(.uuid)) } ?? UUID()
        guard let memory = try c.size(.memory) else { throw DefinitionError.missing(field: c.path(.memory)) }
        self.memory = memory
        currentMemory = try c.size(.currentMemory) ?? memory
        vcpus = try c.optional(Int.self, .vcpus) ?? 1
        os = try c.required(OSBoot.self, .os)
        disks = try c.boundedList(Disk.self, .disks, limit: DefinitionLimits.maxDisks, noun: "disks")
        interfaces = try c.boundedList(
            NetworkInterface.self, .interfaces, limit: DefinitionLimits.maxInterfaces, noun: "interfaces")
        console = try c.optional(SerialConsole.self, .console) ?? SerialConsole()
        rng = try c.optional(Bool.self, .rng) ?? false
        onPoweroff = try c.choice(LifecycleAction.self, .onPoweroff, noun: "action", default: .destroy)
        onReboot = try c.choice(LifecycleAction.self, .onReboot, noun: "action", default: .restart)
        onCrash = try c.choice(LifecycleAction.self, .onCrash, noun: "action", default: .destroy)
        autostart = try c.optional(Bool.self, .autostart) ?? false
        cputune = try c.optional(CPUTune.self, .cputune) ?? CPUTune()
        memtune = try c.optional(MemoryTune.self, .memtune) ?? MemoryTune()
        blkiotune = try c.optional(BlockIOTune.self, .blkiotune) ?? BlockIOTune()
        try validate()
    }

    public func encode(to encoder: any Encoder) throws {
        try nativeValue.encode(to: encoder)
    }
}

extension OSBoot: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case kernel, initrd, cmdline, firmware, nvram, boot }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        kernel = try c.optional(String.self, .kernel)
        initrd = try c.optional(String.self, .initrd)
        cmdline = try c.optional(String.self, .cmdline) ?? ""
        firmware = try c.optional(String.self, .firmware).map { choice in
            let firmware = Firmware(choice: choice)
            if case .file(let path) = firmware, !path.hasPrefix("/") {
                throw DefinitionError.invalidValue(
                    field: c.path(.firmware), reason: "\(quoted(path)) is not bios, uefi or an absolute path")
            }
            return firmware
        }
        nvram = try c.optional(String.self, .nvram)
        let boot = try c.boundedList(
            BootDevice.self, .boot, limit: BootDevice.allCases.count, noun: "boot devices")
        bootOrder = try c.isAbsent(.boot) ? [.hd] : boot
    }

    public func encode(to encoder: any Encoder) throws {
        try nativeValue.encode(to: encoder)
    }
}

extension BootDevice: Codable {
    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        self = try Check.oneOf(raw, BootDevice.self, noun: "boot device", field: nativePath(decoder.codingPath))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension Disk: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case source, type, device, format, target, readonly, serial }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        source = try c.required(String.self, .source)
        type = try c.choice(SourceType.self, .type, noun: "type", default: .file)
        device = try c.choice(Device.self, .device, noun: "device", default: .disk)
        format = try c.choice(Format.self, .format, noun: "format", default: .raw)
        target = try c.required(String.self, .target)
        readonly = try c.optional(Bool.self, .readonly) ?? (device == .cdrom)
        serial = try c.optional(String.self, .serial)
    }

    public func encode(to encoder: any Encoder) throws {
        try nativeValue.encode(to: encoder)
    }
}

extension NetworkInterface: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case type, source, mac, model, forwards }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        type = try Check.oneOf(try c.required(String.self, .type), Kind.self, noun: "type", field: c.path(.type))
        source = type == .user ? (try c.optional(String.self, .source) ?? "") : try c.required(String.self, .source)
        forwards = try c.optional([String].self, .forwards) ?? []
        if let text = try c.optional(String.self, .mac) {
            guard let mac = MACAddress(text) else {
                throw DefinitionError.invalidValue(field: c.path(.mac), reason: "\(quoted(text)) is not a MAC address")
            }
            self.mac = mac
        } else {
            mac = .random()
        }
        model = try c.choice(Model.self, .model, noun: "model", default: .virtio)
    }

    public func encode(to encoder: any Encoder) throws {
        try nativeValue.encode(to: encoder)
    }
}

extension SerialConsole: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case type }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        type = try c.choice(Kind.self, .type, noun: "console type", default: .pty)
    }

    public func encode(to encoder: any Encoder) throws {
        try nativeValue.encode(to: encoder)
    }
}
