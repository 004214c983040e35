import Devices
import GuestMemory
import Synchronization

/// Why a virtio-pci function could not be built (host configuration, never guest input).
public enum VirtioPCIError: Error, Equatable, Sendable, CustomStringConvertible {
    case queueCount(Int)
    case pci(PCIError)
    case state(DeviceStateError)
    /// The device refused its own captured state (`VirtioDevice.restoreState`).
    case deviceState(VirtioDeviceError)

    public var description: String {
        switch self {
        case let .queueCount(count): return "virtio-pci: \(count) queues is not between 1 and \(VirtioPCILayout.maximumQueues)"
        case let .pci(error): return "virtio-pci: \(error)"
        case let .state(error): return error.description
        case let .deviceState(error): return "virtio-pci: restoring the device: \(error)"
        }
    }
}

/// The virtio-pci modern transport (VIRTIO 1.2 §4.1) around any `VirtioDevice`: a PCI function
/// with one 64-bit memory BAR holding the common configuration, ISR, notification area, device
/// configuration and MSI-X table/PBA, found through vendor-specific capabilities.
///
/// Locking: `access` serializes guest register accesses (configuration and BAR) so a reset can
/// never interleave with an activation; the state lock inside `signals` is taken briefly, and the
/// device's own methods are called with only `access` held, so a device may signal from within them.
public final class VirtioPCIDevice: PCIDevice {
    public let device: any VirtioDevice
    let memory: GuestMemory
    let signals: VirtioPCISignals
    let msixCapability: MSIXCapability
    /// Offset of the PCI configuration access capability (§4.1.4.9).
    let configAccessCapability: Int
    let msixTableBytes: UInt64
    let msixPBABytes: UInt64
    /// Built from a snapshot: attachment keeps the guest's BARs instead of the root's assignment.
    let restored: Bool
    let access = Mutex(())
    let notificationHandler = Mutex<(@Sendable (Int) -> Void)?>(nil)

    /// `msixController` receives vector routes and triggers; the device's queue count (at most
    /// `VirtioPCILayout.maximumQueues`) fixes the MSI-X table at one vector per queue plus config.
    public convenience init(device: any VirtioDevice, memory: GuestMemory, msixController: any MSIXInterruptController) throws(VirtioPCIError) {
        let template = try Self.template(for: device)
        self.init(device: device, memory: memory, msixController: msixController, template: template, restored: nil)
    }

    /// Rebuilds the transport alone from a snapshot, refusing a state this device could not be in.
    /// Insert it into the root as usual: the guest's BAR addresses and MSI-X routes are kept
    /// (re-installed in the controller at insertion). With DRIVER_OK the device owns its queues
    /// again and must restore them itself with `interrupt`; `init(restoring:deviceState:...)`
    /// does both together and checks that they belong to each other.
    public convenience init(restoring state: VirtioPCIState, device: any VirtioDevice, memory: GuestMemory,
                            msixController: any MSIXInterruptController) throws(VirtioPCIError) {
        let template = try Self.template(for: device)
        do { try state.validate(as: template.state) } catch { throw .state(error) }
        self.init(device: device, memory: memory, msixController: msixController, template: template, restored: state)
    }

    private init(device: any VirtioDevice, memory: GuestMemory, msixController: any MSIXInterruptController,
                 template: Template, restored: VirtioPCIState?) {
        let base = restored ?? template.state
        var transport = VirtioPCITransportState(config: base.config, common: base.common, msix: base.msix)
        transport.isr = base.isr
        transport.activated = base.common.driverOK && base.common.status & VirtioStatus.deviceNeedsReset == 0
        self.device = device
        self.memory = memory
        self.msixCapability = template.capability
        self.configAccessCapability = template.configAccessCapability
        self.msixTableBytes = UInt64(base.msix.tableBytes)
        self.msixPBABytes = UInt64(base.msix.pbaBytes)
        self.restored = restored != nil
        self.signals = VirtioPCISignals(state: transport, controller: msixController)
    }

    struct Template {
        var state: VirtioPCIState
        var capability: MSIXCapability
        var configAccessCapability: Int
    }

    /// The power-on function the host configuration describes.
    private static func template(for device: any VirtioDevice) throws(VirtioPCIError) -> Template {
        let queueMaxSizes = device.queueMaxSizes
        guard (1...VirtioPCILayout.maximumQueues).contains(queueMaxSizes.count) else { throw .queueCount(queueMaxSizes.count) }
        let vectorCount = queueMaxSizes.count + 1
        let deviceID = VirtioPCILayout.deviceIDBase + device.deviceType.rawValue
        var config = PCIConfigSpace(header: PCIHeader(
            vendorID: VirtioPCILayout.vendorID, deviceID: deviceID, revision: VirtioPCILayout.revision,
            classCode: VirtioPCILayout.classCode(for: device.deviceType),
            subsystemVendorID: VirtioPCILayout.vendorID, subsystemID: deviceID))
        do {
            try config.declareBAR(PCIBARRequest(index: VirtioPCILayout.barIndex, size: VirtioPCILayout.barSize,
                                                kind: .memory64(prefetchable: false)))
            let accessCapability = try addVirtioCapabilities(to: &config, queueCount: queueMaxSizes.count)
            let msix = try MSIXTable(vectorCount: vectorCount)
            let capability = try MSIXCapability.add(to: &config, vectorCount: vectorCount, tableBAR: VirtioPCILayout.barIndex,
                                                    tableOffset: VirtioPCILayout.msixTableOffset, pbaBAR: VirtioPCILayout.barIndex,
                                                    pbaOffset: VirtioPCILayout.msixPBAOffset)
            let common = VirtioPCICommonConfig(deviceFeatures: device.deviceFeatures, queueMaxSizes: queueMaxSizes, vectorCount: vectorCount)
            return Template(state: VirtioPCIState(config: config, common: common, msix: msix, isr: 0),
                            capability: capability, configAccessCapability: accessCapability)
        } catch {
            throw .pci(error)
        }
    }

    /// Adds the cfg_type 1-5 capabilities; returns the offset of the configuration access one.
    private static func addVirtioCapabilities(to config: inout PCIConfigSpace, queueCount: Int) throws(PCIError) -> Int {
        typealias Layout = VirtioPCILayout
        let id = Layout.vendorCapabilityID
        try config.addCapability(id: id, body: Layout.capabilityBody(type: .common, offset: Layout.commonOffset, length: Layout.commonLength))
        try config.addCapability(id: id, body: Layout.capabilityBody(type: .isr, offset: Layout.isrOffset, length: Layout.isrLength))
        try config.addCapability(id: id, body: Layout.capabilityBody(type: .notify, offset: Layout.notifyOffset,
                                                                     length: UInt32(queueCount) * Layout.notifyOffMultiplier,
                                                                     extra: Layout.notifyOffMultiplier))
        try config.addCapability(id: id, body: Layout.capabilityBody(type: .device, offset: Layout.deviceConfigOffset,
                                                                     length: Layout.deviceConfigLength))
        // §4.1.4.9: bar, offset, length and data are the driver's to write.
        var mask = [UInt8](repeating: 0, count: VirtioPCIConfigAccessField.capabilityLength - 2)
        mask[VirtioPCIConfigAccessField.bar - 2] = 0xFF
        for index in (VirtioPCIConfigAccessField.offset - 2)..<mask.count { mask[index] = 0xFF }
        return try config.addCapability(id: id, body: Layout.capabilityBody(type: .pciConfigAccess, offset: 0, length: 0, extra: 0),
                                        writableMask: mask)
    }

    // MARK: What the VMM uses

    /// Where the driver's MMIO notifications for VM exits (no ioeventfd) go; the VMM hops to its
    /// I/O thread there. Without a handler the transport calls `device.queueNotified` itself.
    public func setNotificationHandler(_ handler: (@Sendable (Int) -> Void)?) {
        notificationHandler.withLock { $0 = handler }
    }

    public var queueCount: Int { device.queueMaxSizes.count }
    public var address: PCIDeviceAddress { signals.state.withLock { $0.address } }
    /// The device status byte as the driver last left it (for logs and tests).
    public var status: UInt8 { signals.state.withLock { $0.common.status } }
    /// Why the transport last set DEVICE_NEEDS_RESET on its own (invalid queue, activation error).
    public var lastError: String? { signals.state.withLock { $0.lastError } }

    /// The guest-physical address of queue `queue`'s notification DWORD in the current BAR (the
    /// ioeventfd address), or nil when the queue does not exist or the BAR does not decode.
    public func notifyAddress(queue: Int) -> UInt64? {
        guard (0..<queueCount).contains(queue) else { return nil }
        let bar = signals.state.withLock { $0.config.decodedBARs().first { $0.index == VirtioPCILayout.barIndex } }
        guard let bar else { return nil }
        return bar.address + UInt64(VirtioPCILayout.notifyOffset) + UInt64(queue) * UInt64(VirtioPCILayout.notifyOffMultiplier)
    }

    // MARK: PCIDevice

    public var barRequests: [PCIBARRequest] {
        [PCIBARRequest(index: VirtioPCILayout.barIndex, size: VirtioPCILayout.barSize, kind: .memory64(prefetchable: false))]
    }

    public func attach(_ attachment: PCIAttachment) {
        signals.state.withLock { state in
            if !restored { state.config.applyAttachment(attachment) }
            state.address = attachment.address
            state.intx = attachment.intx
            // A restored function's routes must exist in the (new) controller before it fires.
            signals.controller.apply(state.msix.currentRoutes(), device: attachment.address)
            signals.updateINTx(&state)
        }
    }

    /// The transport's state for a snapshot (take it with the vCPUs paused).
    public var state: VirtioPCIState {
        signals.state.withLock { VirtioPCIState(config: $0.config, common: $0.common, msix: $0.msix, isr: $0.isr) }
    }

    /// The interrupt path a restored device uses for its restored queues.
    public var interrupt: any VirtioInterrupt { signals }

    public func decodedBARs() -> [PCIBARMapping] { signals.state.withLock { $0.config.decodedBARs() } }

    public func configRead(offset: Int, size: Int) -> UInt32 {
        access.withLock { _ in
            if touchesConfigAccessData(offset: offset, size: size) { performConfigAccess(write: false) }
            return signals.state.withLock { $0.config.read(offset: offset, size: size) }
        }
    }

    public func configWrite(offset: Int, size: Int, value: UInt32) {
        access.withLock { _ in
            signals.state.withLock { state in
                state.config.write(offset: offset, size: size, value: value)
                if msixCapability.touchesControl(offset: offset, size: size) {
                    let control = msixCapability.control(in: state.config)
                    signals.controller.apply(state.msix.setControl(enabled: control.enabled, functionMasked: control.functionMasked),
                                             device: state.address)
                }
                // INTx disable or the MSI-X enable bit may have changed the line's level.
                signals.updateINTx(&state)
            }
            if touchesConfigAccessData(offset: offset, size: size) { performConfigAccess(write: true) }
        }
    }

    public func barRead(_ index: Int, offset: UInt64, size: Int) -> UInt64 {
        guard index == VirtioPCILayout.barIndex else { return 0 }
        return access.withLock { _ in readRegion(offset: offset, size: size) }
    }

    public func barWrite(_ index: Int, offset: UInt64, size: Int, value: UInt64) {
        guard index == VirtioPCILayout.barIndex else { return }
        access.withLock { _ in writeRegion(offset: offset, size: size, value: value) }
    }

    // MARK: PCI configuration access capability (§4.1.4.9)

    private func touchesConfigAccessData(offset: Int, size: Int) -> Bool {
        let data = configAccessCapability + VirtioPCIConfigAccessField.data
        return offset < data + 4 && data < offset + size
    }

    /// Runs the BAR access the capability describes; ignored unless it names our BAR with a
    /// width of 1, 2 or 4, a naturally aligned offset and a range inside the BAR.
    private func performConfigAccess(write: Bool) {
        let base = configAccessCapability
        let (bar, offset, length, data) = signals.state.withLock { state in
            (Int(state.config.read(offset: base + VirtioPCIConfigAccessField.bar, size: 1)),
             UInt64(state.config.read(offset: base + VirtioPCIConfigAccessField.offset, size: 4)),
             Int(state.config.read(offset: base + VirtioPCIConfigAccessField.length, size: 4)),
             UInt64(state.config.read(offset: base + VirtioPCIConfigAccessField.data, size: 4)))
        }
        guard bar == VirtioPCILayout.barIndex, [1, 2, 4].contains(length), offset % UInt64(length) == 0,
              offset + UInt64(length) <= VirtioPCILayout.barSize else { return }
        if write {
            writeRegion(offset: offset, size: length, value: data & pciAccessMask(length))
        } else {
            let value = readRegion(offset: offset, size: length)
            signals.state.withLock { $0.config.setRaw(UInt32(truncatingIfNeeded: value), at: base + VirtioPCIConfigAccessField.data, size: 4) }
        }
    }
}

func pciAccessMask(_ size: Int) -> UInt64 { size >= 8 ? .max : (UInt64(1) << (8 * UInt64(max(size, 0)))) - 1 }
