import Synchronization

/// Device 0 of bus 0: the host bridge (class 06/00). Linux expects it there; it has no BARs.
public final class PCIHostBridge: PCIDevice {
    private let config = Mutex(PCIConfigSpace(header: PCIHeader(
        vendorID: PCIRootComplex.hostBridgeVendorID, deviceID: PCIRootComplex.hostBridgeDeviceID,
        classCode: 0x06_0000, subsystemVendorID: PCIRootComplex.hostBridgeVendorID,
        subsystemID: PCIRootComplex.hostBridgeDeviceID)))

    public init() {}

    public var barRequests: [PCIBARRequest] { [] }
    public func attach(_ attachment: PCIAttachment) { config.withLock { $0.applyAttachment(attachment) } }
    public func configRead(offset: Int, size: Int) -> UInt32 { config.withLock { $0.read(offset: offset, size: size) } }
    public func configWrite(offset: Int, size: Int, value: UInt32) {
        config.withLock { $0.write(offset: offset, size: size, value: value) }
    }
    public func barRead(_ index: Int, offset: UInt64, size: Int) -> UInt64 { pciAllOnes(size: size) }
    public func barWrite(_ index: Int, offset: UInt64, size: Int, value: UInt64) {}
    public func decodedBARs() -> [PCIBARMapping] { [] }

    /// The configuration space as the guest left it (command register, ...), for snapshots.
    var configSpace: PCIConfigSpace { config.withLock { $0 } }

    /// Takes a saved configuration space, refusing one this bridge could not have.
    func restore(config saved: PCIConfigSpace) throws(DeviceStateError) {
        try saved.validateRestored(as: configSpace, device: "PCI host bridge")
        config.withLock { $0 = saved }
    }
}
