/// A field of a definition, to be spelled the way the format the user wrote spells it.
enum DefinitionField {
    case name, memory, currentMemory, vcpus, kernel, initrd, cmdline, disks, interfaces
    case disk(Int, DiskField)
    case interface(Int, InterfaceField)

    enum DiskField: String { case source, target, serial, readonly }
    enum InterfaceField: String { case source, mac }
}

/// Maps fields to the paths a user sees in errors.
typealias FieldPaths = @Sendable (DefinitionField) -> String

extension VMDefinition {
    /// Native paths: `memory`, `os.kernel`, `disks[1].target`.
    static let nativePaths: FieldPaths = { field in
        switch field {
        case .name: "name"
        case .memory: "memory"
        case .currentMemory: "currentMemory"
        case .vcpus: "vcpus"
        case .kernel: "os.kernel"
        case .initrd: "os.initrd"
        case .cmdline: "os.cmdline"
        case .disks: "disks"
        case .interfaces: "interfaces"
        case .disk(let index, let sub): "disks[\(index)].\(sub.rawValue)"
        case .interface(let index, let sub): "interfaces[\(index)].\(sub.rawValue)"
        }
    }

    /// Checks every field and the relations between them; errors use native field paths.
    public func validate() throws {
        try validate(paths: Self.nativePaths)
    }

    func validate(paths: FieldPaths) throws {
        try Check.name(name, field: paths(.name))
        try Check.memory(memory, field: paths(.memory))
        try Check.memory(currentMemory, field: paths(.currentMemory))
        if currentMemory > memory {
            throw DefinitionError.invalidValue(
                field: paths(.currentMemory),
                reason: "\(ByteSize.describe(currentMemory)) exceeds memory (\(ByteSize.describe(memory)))")
        }
        try Check.vcpus(vcpus, field: paths(.vcpus))
        try Check.hostPath(os.kernel, field: paths(.kernel))
        if let initrd = os.initrd { try Check.hostPath(initrd, field: paths(.initrd)) }
        try Check.cmdline(os.cmdline, field: paths(.cmdline))
        try validateDisks(paths: paths)
        try validateInterfaces(paths: paths)
    }

    private func validateDisks(paths: FieldPaths) throws {
        try Check.count(disks.count, limit: DefinitionLimits.maxDisks, noun: "disks", field: paths(.disks))
        var targets: Set<String> = []
        for (index, disk) in disks.enumerated() {
            try Check.hostPath(disk.source, field: paths(.disk(index, .source)))
            try Check.diskTarget(disk.target, field: paths(.disk(index, .target)))
            if !targets.insert(disk.target).inserted {
                throw DefinitionError.invalidValue(
                    field: paths(.disk(index, .target)), reason: "\(quoted(disk.target)) is used by another disk")
            }
            if let serial = disk.serial { try Check.diskSerial(serial, field: paths(.disk(index, .serial))) }
            try Check.cdromReadonly(disk, field: paths(.disk(index, .readonly)))
        }
    }

    private func validateInterfaces(paths: FieldPaths) throws {
        try Check.count(
            interfaces.count, limit: DefinitionLimits.maxInterfaces, noun: "interfaces", field: paths(.interfaces))
        var macs: Set<MACAddress> = []
        for (index, interface) in interfaces.enumerated() {
            try Check.interfaceSource(interface, field: paths(.interface(index, .source)))
            try Check.mac(interface.mac, field: paths(.interface(index, .mac)))
            if !macs.insert(interface.mac).inserted {
                throw DefinitionError.invalidValue(
                    field: paths(.interface(index, .mac)), reason: "\(interface.mac) is used by another interface")
            }
        }
    }
}
