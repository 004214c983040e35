import VMContract
/// A field of a definition, to be spelled the way the format the user wrote spells it.
enum DefinitionField {
    case name, memory, currentMemory, vcpus, os, kernel, initrd, cmdline, firmware, nvram, bootOrder, disks, interfaces
    case disk(Int, DiskField)
    case interface(Int, InterfaceField)
    case cputune(CputuneField)
    case memtune(MemtuneField)
    /// The VM's own block I/O weight.
    case blkiotune
    case blkioDevices
    case blkioDevice(Int, BlkioDeviceField)

    enum DiskField: String { case source, target, serial, readonly }
    enum InterfaceField: String { case source, mac }
    enum CputuneField: String { case shares, period, quota }
    /// Raw values are the native names; libvirt's are `libvirtName`.
    enum MemtuneField: String {
        case hardLimit, softLimit, swapHardLimit
        var libvirtName: String {
            switch self {
            case .hardLimit: "hard_limit"
            case .softLimit: "soft_limit"
            case .swapHardLimit: "swap_hard_limit"
            }
        }
    }
    enum BlkioDeviceField: String {
        case path, weight
        case readBytes = "readBytesSec", writeBytes = "writeBytesSec", readIOPS = "readIopsSec", writeIOPS = "writeIopsSec"
        var libvirtName: String {
            switch self {
            case .path: "path"
            case .weight: "weight"
            case .readBytes: "read_bytes_sec"
            case .writeBytes: "write_bytes_sec"
            case .readIOPS: "read_iops_sec"
            case .writeIOPS: "write_iops_sec"
            }
        }
    }
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
        case .os: "os"
        case .kernel: "os.kernel"
        case .initrd: "os.initrd"
        case .cmdline: "os.cmdline"
        case .firmware: "os.firmware"
        case .nvram: "os.nvram"
        case .bootOrder: "os.boot"
        case .disks: "disks"
        case .interfaces: "interfaces"
        case .disk(let index, let sub): "disks[\(index)].\(sub.rawValue)"
        case .interface(let index, let sub): "interfaces[\(index)].\(sub.rawValue)"
        case .cputune(let sub): "cputune.\(sub.rawValue)"
        case .memtune(let sub): "memtune.\(sub.rawValue)"
        case .blkiotune: "blkiotune.weight"
        case .blkioDevices: "blkiotune.devices"
        case .blkioDevice(let index, let sub): "blkiotune.devices[\(index)].\(sub.rawValue)"
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
        try validateOS(paths: paths)
        try validateDisks(paths: paths)
        try validateInterfaces(paths: paths)
        try validateTuning(paths: paths)
    }

    /// Exactly one of kernel and firmware; what goes with each only with it.
    private func validateOS(paths: FieldPaths) throws {
        switch (os.kernel, os.firmware) {
        case (nil, nil):
            throw DefinitionError.invalidValue(
                field: paths(.os), reason: "needs \(paths(.kernel)) (direct kernel boot) or \(paths(.firmware)) (bios, uefi or a firmware file)")
        case (.some, .some):
            throw DefinitionError.invalidValue(
                field: paths(.firmware),
                reason: "excludes \(paths(.kernel)) (a kernel boots directly; firmware boots the disk's boot loader)")
        case (let kernel?, nil):
            try Check.hostPath(kernel, field: paths(.kernel))
            if let initrd = os.initrd { try Check.hostPath(initrd, field: paths(.initrd)) }
            try Check.cmdline(os.cmdline, field: paths(.cmdline))
            if os.nvram != nil {
                throw DefinitionError.invalidValue(field: paths(.nvram), reason: "only with UEFI firmware, not with a kernel")
            }
            if os.bootOrder != [.hd] {
                throw DefinitionError.invalidValue(
                    field: paths(.bootOrder), reason: "only with firmware (a kernel is booted directly)")
            }
        case (nil, let firmware?):
            if os.initrd != nil {
                throw DefinitionError.invalidValue(
                    field: paths(.initrd), reason: "only with a kernel (with firmware the disk's boot loader loads one)")
            }
            if !os.cmdline.isEmpty {
                throw DefinitionError.invalidValue(
                    field: paths(.cmdline), reason: "only with a kernel (with firmware the disk's boot loader sets it)")
            }
            if case .file(let path) = firmware {
                try Check.hostPath(path, field: paths(.firmware))
                // One spelling per firmware, so every format reads a definition back equal.
                let named = Firmware(path: path)
                if named != firmware {
                    throw DefinitionError.invalidValue(
                        field: paths(.firmware), reason: "\(quoted(path)) is Debian's \(named.choice) firmware: write \(named.choice)")
                }
            }
            if let nvram = os.nvram {
                guard firmware.mayBeUEFI else {
                    throw DefinitionError.invalidValue(field: paths(.nvram), reason: "only with UEFI firmware, not with bios")
                }
                try Check.hostPath(nvram, field: paths(.nvram))
            }
            if os.bootOrder.isEmpty {
                throw DefinitionError.invalidValue(field: paths(.bootOrder), reason: "must not be empty")
            }
            var seen: Set<BootDevice> = []
            for device in os.bootOrder where !seen.insert(device).inserted {
                throw DefinitionError.invalidValue(
                    field: paths(.bootOrder), reason: "\(quoted(device.rawValue)) appears more than once")
            }
        }
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
