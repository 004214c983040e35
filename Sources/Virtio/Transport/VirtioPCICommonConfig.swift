import GuestMemory

/// §4.1.4.3: "no vector" for config_msix_vector / queue_msix_vector.
public let virtioNoVector: UInt16 = 0xFFFF

/// What the driver programmed for one queue through the common configuration.
public struct VirtioPCIQueueRegisters: Equatable, Sendable, Codable {
    public var size: UInt16
    public var msixVector: UInt16 = virtioNoVector
    public var enabled = false
    public var descTable: UInt64 = 0
    public var driverArea: UInt64 = 0
    public var deviceArea: UInt64 = 0

    init(maxSize: UInt16) { size = maxSize }

    var config: VirtqueueConfig {
        VirtqueueConfig(size: size, descTable: GuestAddress(descTable), availRing: GuestAddress(driverArea),
                        usedRing: GuestAddress(deviceArea), ready: enabled)
    }
}

/// The common configuration structure (VIRTIO 1.2 §4.1.4.3) and the device status state machine
/// (§2.1, §3.1.1). Pure logic: writes return what the owner must do (reset, activate), so the
/// rules are testable without a device.
public struct VirtioPCICommonConfig: Equatable, Sendable, Codable {
    public enum Event: Equatable, Sendable {
        /// The driver wrote 0 to device_status.
        case reset
        /// DRIVER_OK was set after a successful FEATURES_OK: build the queues and activate.
        case driverOK
        /// The driver broke the status protocol (e.g. DRIVER_OK without FEATURES_OK).
        case needsReset
    }

    public let deviceFeatures: UInt64
    public let queueMaxSizes: [UInt16]
    /// MSI-X vectors the function has; larger vector numbers read back as NO_VECTOR (§4.1.5.1.2).
    public let vectorCount: Int

    public internal(set) var deviceFeatureSelect: UInt32 = 0
    public internal(set) var driverFeatureSelect: UInt32 = 0
    public internal(set) var driverFeatures: UInt64 = 0
    public internal(set) var configMSIXVector: UInt16 = virtioNoVector
    public internal(set) var status: UInt8 = 0
    public internal(set) var configGeneration: UInt8 = 0
    public internal(set) var queueSelect: UInt16 = 0
    public internal(set) var queues: [VirtioPCIQueueRegisters]

    public init(deviceFeatures: UInt64, queueMaxSizes: [UInt16], vectorCount: Int) {
        self.deviceFeatures = deviceFeatures
        self.queueMaxSizes = queueMaxSizes
        self.vectorCount = vectorCount
        queues = queueMaxSizes.map { VirtioPCIQueueRegisters(maxSize: $0) }
    }

    /// §2.4 device reset: everything the driver set goes; config_generation keeps counting so a
    /// driver never sees an old generation again.
    mutating func reset() {
        let generation = configGeneration
        self = VirtioPCICommonConfig(deviceFeatures: deviceFeatures, queueMaxSizes: queueMaxSizes, vectorCount: vectorCount)
        configGeneration = generation
    }

    var driverOK: Bool { status & VirtioStatus.driverOK != 0 }
    var featuresOK: Bool { status & VirtioStatus.featuresOK != 0 }
    private var selectedQueue: Int? { queues.indices.contains(Int(queueSelect)) ? Int(queueSelect) : nil }

    mutating func setNeedsReset() { status |= VirtioStatus.deviceNeedsReset }

    // MARK: Reads

    /// Any width at any offset: the structure is composed little-endian; unknown bytes read 0.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        let image = self.image()
        var value: UInt64 = 0
        for index in 0..<min(max(size, 0), 8) {
            let (position, overflow) = offset.addingReportingOverflow(UInt64(index))
            guard !overflow, position < UInt64(image.count) else { continue }
            value |= UInt64(image[Int(position)]) << (8 * UInt64(index))
        }
        return value
    }

    private func image() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(VirtioPCILayout.commonLength))
        func put(_ value: UInt64, at offset: Int, _ size: Int) {
            for index in 0..<size { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
        }
        put(UInt64(deviceFeatureSelect), at: 0x00, 4)
        let featureWord = deviceFeatureSelect == 0 ? deviceFeatures : deviceFeatureSelect == 1 ? deviceFeatures >> 32 : 0
        put(featureWord & 0xFFFF_FFFF, at: 0x04, 4)
        put(UInt64(driverFeatureSelect), at: 0x08, 4)
        let driverWord = driverFeatureSelect == 0 ? driverFeatures : driverFeatureSelect == 1 ? driverFeatures >> 32 : 0
        put(driverWord & 0xFFFF_FFFF, at: 0x0C, 4)
        put(UInt64(configMSIXVector), at: 0x10, 2)
        put(UInt64(queues.count), at: 0x12, 2)
        put(UInt64(status), at: 0x14, 1)
        put(UInt64(configGeneration), at: 0x15, 1)
        put(UInt64(queueSelect), at: 0x16, 2)
        if let queue = selectedQueue.map({ queues[$0] }) {
            put(UInt64(queue.size), at: 0x18, 2)
            put(UInt64(queue.msixVector), at: 0x1A, 2)
            put(queue.enabled ? 1 : 0, at: 0x1C, 2)
            put(UInt64(queueSelect), at: 0x1E, 2)   // queue_notify_off = queue index
            put(queue.descTable, at: 0x20, 8)
            put(queue.driverArea, at: 0x28, 8)
            put(queue.deviceArea, at: 0x30, 8)
        } else {
            // §4.1.4.3.2: an unavailable queue reads size 0 (and NO_VECTOR for its vector).
            put(UInt64(virtioNoVector), at: 0x1A, 2)
        }
        return bytes
    }

    // MARK: Writes

    /// §4.1.3.1: the driver accesses each field with its own width; 64-bit fields may also be
    /// written as two DWORDs. Other writes, and writes to read-only fields, are ignored.
    public mutating func write(offset: UInt64, size: Int, value: UInt64) -> Event? {
        switch (offset, size) {
        case (0x00, 4): deviceFeatureSelect = UInt32(truncatingIfNeeded: value)
        case (0x08, 4): driverFeatureSelect = UInt32(truncatingIfNeeded: value)
        case (0x0C, 4): writeDriverFeatures(UInt32(truncatingIfNeeded: value))
        case (0x10, 2): configMSIXVector = validVector(UInt16(truncatingIfNeeded: value))
        case (0x14, 1): return writeStatus(UInt8(truncatingIfNeeded: value))
        case (0x16, 2): queueSelect = UInt16(truncatingIfNeeded: value)
        case (0x18, 2): writeQueueSize(UInt16(truncatingIfNeeded: value))
        case (0x1A, 2):
            guard let index = selectedQueue else { break }
            queues[index].msixVector = validVector(UInt16(truncatingIfNeeded: value))
        case (0x1C, 2):
            // §4.1.4.3.2: the driver MUST NOT write 0 to queue_enable (without queue_reset).
            guard value & 0xFFFF == 1, let index = queueOpenForSetup() else { break }
            queues[index].enabled = true
        case (0x20, _), (0x24, 4): writeQueueAddress(\.descTable, offset: offset - 0x20, size: size, value: value)
        case (0x28, _), (0x2C, 4): writeQueueAddress(\.driverArea, offset: offset - 0x28, size: size, value: value)
        case (0x30, _), (0x34, 4): writeQueueAddress(\.deviceArea, offset: offset - 0x30, size: size, value: value)
        default: break
        }
        return nil
    }

    private func validVector(_ vector: UInt16) -> UInt16 {
        Int(vector) < vectorCount ? vector : virtioNoVector
    }

    /// Queue registers are the driver's until it enables the queue or sets DRIVER_OK.
    private func queueOpenForSetup() -> Int? {
        guard !driverOK, let index = selectedQueue, !queues[index].enabled else { return nil }
        return index
    }

    private mutating func writeQueueSize(_ size: UInt16) {
        // Above the maximum is refused outright (§4.1.4.3.2); a non-power-of-two is kept and
        // fails VirtqueueConfig.validate at DRIVER_OK, which the driver sees as NEEDS_RESET.
        guard let index = queueOpenForSetup(), queueMaxSizes.indices.contains(index), size != 0, size <= queueMaxSizes[index] else { return }
        queues[index].size = size
    }

    private mutating func writeQueueAddress(_ field: WritableKeyPath<VirtioPCIQueueRegisters, UInt64>,
                                            offset: UInt64, size: Int, value: UInt64) {
        guard let index = queueOpenForSetup() else { return }
        switch (offset, size) {
        case (0, 8): queues[index][keyPath: field] = value
        case (0, 4): queues[index][keyPath: field] = queues[index][keyPath: field] & ~0xFFFF_FFFF | (value & 0xFFFF_FFFF)
        case (4, 4): queues[index][keyPath: field] = queues[index][keyPath: field] & 0xFFFF_FFFF | (value & 0xFFFF_FFFF) << 32
        default: break
        }
    }

    private mutating func writeDriverFeatures(_ word: UInt32) {
        // §2.2.2: features are fixed once FEATURES_OK is set.
        guard !featuresOK, !driverOK else { return }
        switch driverFeatureSelect {
        case 0: driverFeatures = driverFeatures & ~0xFFFF_FFFF | UInt64(word)
        case 1: driverFeatures = driverFeatures & 0xFFFF_FFFF | UInt64(word) << 32
        default: break
        }
    }

    private mutating func writeStatus(_ value: UInt8) -> Event? {
        if value == 0 { return .reset }
        // NEEDS_RESET is the device's to set; the driver only adds bits (§2.1.1).
        let requested = value & ~VirtioStatus.deviceNeedsReset
        var next = status | requested
        if requested & VirtioStatus.featuresOK != 0, !featuresOK {
            // §2.2.2 / §6.1: refuse features we did not offer, and a driver without VERSION_1.
            let acceptable = driverFeatures & ~deviceFeatures == 0 && driverFeatures & VirtioFeature.version1 != 0
            if !acceptable || driverOK { next &= ~VirtioStatus.featuresOK }
        }
        let newlyDriverOK = next & VirtioStatus.driverOK != 0 && !driverOK
        status = next
        guard newlyDriverOK else { return nil }
        guard featuresOK, status & VirtioStatus.deviceNeedsReset == 0 else {
            status &= ~VirtioStatus.driverOK
            setNeedsReset()
            return .needsReset
        }
        return .driverOK
    }
}
