import Devices

/// Everything the virtio-pci transport remembers, for snapshots. The device's own state (and its
/// queues, which it owns after DRIVER_OK) is captured by the device.
public struct VirtioPCIState: Codable, Equatable, Sendable {
    public var config: PCIConfigSpace
    public var common: VirtioPCICommonConfig
    public var msix: MSIXTable
    public var isr: UInt8

    public init(config: PCIConfigSpace, common: VirtioPCICommonConfig, msix: MSIXTable, isr: UInt8) {
        self.config = config
        self.common = common
        self.msix = msix
        self.isr = isr
    }

    /// Checks a decoded state against the transport the host configuration builds.
    func validate(as template: VirtioPCIState) throws(DeviceStateError) {
        let name = "virtio-pci"
        try config.validateRestored(as: template.config, device: name)
        try msix.validateRestored(as: template.msix, device: name)
        try common.validateRestored(as: template.common, device: name)
        guard isr & ~(VirtioPCISignals.isrQueue | VirtioPCISignals.isrConfig) == 0 else {
            throw DeviceStateError(device: name, field: "ISR", problem: "0x\(String(isr, radix: 16)) sets undefined bits")
        }
    }
}

extension VirtioPCICommonConfig {
    func validateRestored(as template: VirtioPCICommonConfig, device: String) throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: device, field: field, problem: problem)
        }
        guard deviceFeatures == template.deviceFeatures, queueMaxSizes == template.queueMaxSizes,
              vectorCount == template.vectorCount, queues.count == queueMaxSizes.count else {
            throw bad("common configuration", "belongs to a different device (features, queues or vectors differ)")
        }
        func validVector(_ vector: UInt16) -> Bool { vector == virtioNoVector || Int(vector) < vectorCount }
        guard validVector(configMSIXVector) else { throw bad("config_msix_vector", "\(configMSIXVector) is not a table entry") }
        for (index, queue) in queues.enumerated() {
            guard queue.size != 0, queue.size <= queueMaxSizes[index] else { throw bad("queue \(index) size", "\(queue.size) is not 1-\(queueMaxSizes[index])") }
            guard validVector(queue.msixVector) else { throw bad("queue \(index) vector", "\(queue.msixVector) is not a table entry") }
        }
        if featuresOK {
            guard driverFeatures & ~deviceFeatures == 0, driverFeatures & VirtioFeature.version1 != 0 else {
                throw bad("driver features", "0x\(String(driverFeatures, radix: 16)) were never acceptable with FEATURES_OK")
            }
        }
        guard !driverOK || featuresOK else { throw bad("device status", "has DRIVER_OK without FEATURES_OK") }
    }
}
