import VMContract

/// libvirt's `<cputune>`: the VM's share of host CPU time (its process's cgroup, see Cgroups/).
/// nil fields are not set: the host's defaults apply.
public struct CPUTune: Equatable, Sendable {
    /// Relative weight against other VMs (cgroup v1 cpu.shares; v2 cpu.weight is derived from it).
    public var shares: UInt64?
    /// The enforcement period of `quota`, in µs.
    public var period: UInt64?
    /// CPU time allowed per `period`, in µs (over all vCPUs); nil is unlimited (libvirt's -1).
    public var quota: UInt64?

    public init(shares: UInt64? = nil, period: UInt64? = nil, quota: UInt64? = nil) {
        self.shares = shares
        self.period = period
        self.quota = quota
    }

    public var isEmpty: Bool { self == CPUTune() }

    /// libvirt's bounds: shares as cgroup v1 takes them, period and quota as the kernel's CFS does.
    public static let sharesRange: ClosedRange<UInt64> = 2...262_144
    public static let periodRange: ClosedRange<UInt64> = 1000...1_000_000
    public static let quotaRange: ClosedRange<UInt64> = 1000...17_592_186_044_415
    /// The kernel's period when a quota is given without one.
    public static let defaultPeriod: UInt64 = 100_000
}

/// libvirt's `<memtune>`, in bytes; nil fields are not set.
public struct MemoryTune: Equatable, Sendable {
    /// The most memory (RAM, host-side page tables, device buffers) the VM's process may use;
    /// beyond it the host's OOM killer ends the VM.
    public var hardLimit: UInt64?
    /// Under host memory pressure the VM is reclaimed down towards this.
    public var softLimit: UInt64?
    /// Memory plus swap; at least `hardLimit`, and only with it.
    public var swapHardLimit: UInt64?

    public init(hardLimit: UInt64? = nil, softLimit: UInt64? = nil, swapHardLimit: UInt64? = nil) {
        self.hardLimit = hardLimit
        self.softLimit = softLimit
        self.swapHardLimit = swapHardLimit
    }

    public var isEmpty: Bool { self == MemoryTune() }

    /// Less than this would end the VMM before it maps the guest.
    public static let minimumLimit: UInt64 = 1 << 20
}

/// libvirt's `<blkiotune>`: a block I/O weight for the VM, and per host block device a weight and
/// throughput limits.
public struct BlockIOTune: Equatable, Sendable {
    public var weight: UInt64?
    public var devices: [BlockIODevice]

    public init(weight: UInt64? = nil, devices: [BlockIODevice] = []) {
        self.weight = weight
        self.devices = devices
    }

    public var isEmpty: Bool { self == BlockIOTune() }

    /// cgroup v1 blkio.weight's range, which libvirt keeps for both versions.
    public static let weightRange: ClosedRange<UInt64> = 100...1000
    public static let maxDevices = 64
}

/// `<blkiotune><device>`: one host block device (a node under /dev), its weight and limits.
public struct BlockIODevice: Equatable, Sendable {
    public var path: String
    public var weight: UInt64?
    public var readBytesPerSecond: UInt64?
    public var writeBytesPerSecond: UInt64?
    public var readIOPS: UInt64?
    public var writeIOPS: UInt64?

    public init(path: String, weight: UInt64? = nil, readBytesPerSecond: UInt64? = nil, writeBytesPerSecond: UInt64? = nil,
                readIOPS: UInt64? = nil, writeIOPS: UInt64? = nil) {
        self.path = path
        self.weight = weight
        self.readBytesPerSecond = readBytesPerSecond
        self.writeBytesPerSecond = writeBytesPerSecond
        self.readIOPS = readIOPS
        self.writeIOPS = writeIOPS
    }

    /// Whether any throttle is set (io.max / blkio.throttle.*).
    public var hasThrottle: Bool {
        readBytesPerSecond != nil || writeBytesPerSecond != nil || readIOPS != nil || writeIOPS != nil
    }
}

extension VMDefinition {
    /// Whether the definition asks for any resource limit: then a host that cannot create the
    /// VM's cgroup refuses to start it instead of running it unlimited.
    public var asksForResourceLimits: Bool {
        !cputune.isEmpty || !memtune.isEmpty || !blkiotune.isEmpty
    }
}

// MARK: - Validation

extension VMDefinition {
    func validateTuning(paths: FieldPaths) throws {
        if let shares = cputune.shares { try Check.range(shares, CPUTune.sharesRange, field: paths(.cputune(.shares))) }
        if let period = cputune.period { try Check.range(period, CPUTune.periodRange, field: paths(.cputune(.period))) }
        if let quota = cputune.quota {
            guard CPUTune.quotaRange.contains(quota) else {
                throw DefinitionError.invalidValue(
                    field: paths(.cputune(.quota)),
                    reason: "\(quota) is out of range (-1 for unlimited, or \(CPUTune.quotaRange.lowerBound) to \(CPUTune.quotaRange.upperBound) µs)")
            }
        }
        for (value, field) in [(memtune.hardLimit, DefinitionField.MemtuneField.hardLimit),
                               (memtune.softLimit, .softLimit), (memtune.swapHardLimit, .swapHardLimit)] {
            guard let value, value < MemoryTune.minimumLimit else { continue }
            throw DefinitionError.invalidValue(
                field: paths(.memtune(field)),
                reason: "\(ByteSize.describe(value)) is below the minimum of \(ByteSize.format(MemoryTune.minimumLimit))")
        }
        if let swap = memtune.swapHardLimit {
            guard let hard = memtune.hardLimit else {
                throw DefinitionError.invalidValue(
                    field: paths(.memtune(.swapHardLimit)), reason: "needs \(paths(.memtune(.hardLimit))) (it limits memory plus swap)")
            }
            if swap < hard {
                throw DefinitionError.invalidValue(
                    field: paths(.memtune(.swapHardLimit)),
                    reason: "\(ByteSize.describe(swap)) is below \(paths(.memtune(.hardLimit))) (\(ByteSize.describe(hard)))")
            }
        }
        if let soft = memtune.softLimit, let hard = memtune.hardLimit, soft > hard {
            throw DefinitionError.invalidValue(
                field: paths(.memtune(.softLimit)),
                reason: "\(ByteSize.describe(soft)) exceeds \(paths(.memtune(.hardLimit))) (\(ByteSize.describe(hard)))")
        }
        if let weight = blkiotune.weight { try Check.range(weight, BlockIOTune.weightRange, field: paths(.blkiotune)) }
        try Check.count(blkiotune.devices.count, limit: BlockIOTune.maxDevices, noun: "devices", field: paths(.blkioDevices))
        var seen: Set<String> = []
        for (index, device) in blkiotune.devices.enumerated() {
            try Check.hostPath(device.path, field: paths(.blkioDevice(index, .path)))
            if !seen.insert(device.path).inserted {
                throw DefinitionError.invalidValue(
                    field: paths(.blkioDevice(index, .path)), reason: "\(quoted(device.path)) appears more than once")
            }
            if let weight = device.weight {
                try Check.range(weight, BlockIOTune.weightRange, field: paths(.blkioDevice(index, .weight)))
            }
            if device.weight == nil && !device.hasThrottle {
                throw DefinitionError.invalidValue(
                    field: paths(.blkioDevice(index, .path)), reason: "sets neither a weight nor a limit")
            }
            for (value, field) in [(device.readBytesPerSecond, DefinitionField.BlkioDeviceField.readBytes),
                                   (device.writeBytesPerSecond, .writeBytes), (device.readIOPS, .readIOPS),
                                   (device.writeIOPS, .writeIOPS)] where value == 0 {
                throw DefinitionError.invalidValue(
                    field: paths(.blkioDevice(index, field)), reason: "must be above 0 (leave it out for no limit)")
            }
        }
    }
}

extension Check {
    static func range(_ value: UInt64, _ range: ClosedRange<UInt64>, field: String) throws {
        guard range.contains(value) else {
            throw DefinitionError.invalidValue(
                field: field, reason: "\(value) is out of range (\(range.lowerBound) to \(range.upperBound))")
        }
    }
}

// MARK: - Native format

extension CPUTune: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case shares, period, quota }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        shares = try c.optional(UInt64.self, .shares)
        period = try c.optional(UInt64.self, .period)
        // libvirt's -1: no limit, written as absence.
        switch try c.optional(Int64.self, .quota) {
        case nil, -1: quota = nil
        case let value? where value < 0:
            throw DefinitionError.invalidValue(
                field: c.path(.quota), reason: "\(value) is out of range (-1 for unlimited, or 1000 µs and more)")
        case let value?: quota = UInt64(value)
        }
    }

    public func encode(to encoder: any Encoder) throws { try nativeValue.encode(to: encoder) }

    var nativeValue: NativeValue {
        var pairs: [(String, NativeValue)] = []
        if let shares { pairs.append(("shares", .uint(shares))) }
        if let period { pairs.append(("period", .uint(period))) }
        if let quota { pairs.append(("quota", .uint(quota))) }
        return .mapping(pairs)
    }
}

extension MemoryTune: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case hardLimit, softLimit, swapHardLimit }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        hardLimit = try c.size(.hardLimit)
        softLimit = try c.size(.softLimit)
        swapHardLimit = try c.size(.swapHardLimit)
    }

    public func encode(to encoder: any Encoder) throws { try nativeValue.encode(to: encoder) }

    var nativeValue: NativeValue {
        var pairs: [(String, NativeValue)] = []
        if let hardLimit { pairs.append(("hardLimit", .size(hardLimit))) }
        if let softLimit { pairs.append(("softLimit", .size(softLimit))) }
        if let swapHardLimit { pairs.append(("swapHardLimit", .size(swapHardLimit))) }
        return .mapping(pairs)
    }
}

extension BlockIOTune: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case weight, devices }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        weight = try c.optional(UInt64.self, .weight)
        devices = try c.boundedList(BlockIODevice.self, .devices, limit: BlockIOTune.maxDevices, noun: "devices")
    }

    public func encode(to encoder: any Encoder) throws { try nativeValue.encode(to: encoder) }

    var nativeValue: NativeValue {
        var pairs: [(String, NativeValue)] = []
        if let weight { pairs.append(("weight", .uint(weight))) }
        if !devices.isEmpty { pairs.append(("devices", .list(devices.map(\.nativeValue)))) }
        return .mapping(pairs)
    }
}

extension BlockIODevice: Codable {
    enum CodingKeys: String, CodingKey, CaseIterable { case path, weight, readBytesSec, writeBytesSec, readIopsSec, writeIopsSec }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.strictContainer(CodingKeys.self)
        path = try c.required(String.self, .path)
        weight = try c.optional(UInt64.self, .weight)
        readBytesPerSecond = try c.size(.readBytesSec)
        writeBytesPerSecond = try c.size(.writeBytesSec)
        readIOPS = try c.optional(UInt64.self, .readIopsSec)
        writeIOPS = try c.optional(UInt64.self, .writeIopsSec)
    }

    public func encode(to encoder: any Encoder) throws { try nativeValue.encode(to: encoder) }

    var nativeValue: NativeValue {
        var pairs: [(String, NativeValue)] = [("path", .string(path))]
        if let weight { pairs.append(("weight", .uint(weight))) }
        if let readBytesPerSecond { pairs.append(("readBytesSec", .size(readBytesPerSecond))) }
        if let writeBytesPerSecond { pairs.append(("writeBytesSec", .size(writeBytesPerSecond))) }
        if let readIOPS { pairs.append(("readIopsSec", .uint(readIOPS))) }
        if let writeIOPS { pairs.append(("writeIopsSec", .uint(writeIOPS))) }
        return .mapping(pairs)
    }
}
