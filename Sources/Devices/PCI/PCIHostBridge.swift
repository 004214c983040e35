import Synchronization

/// Device 0 of bus 0: the host bridge (class 06/00). Linux expects it there; it has no BARs.
/// Its device id is the chipset the firmware believes it runs on (`PCIChipset`).
public final class PCIHostBridge: PCIDevice {
    private let config: Mutex<PCIConfigSpace>

    public init(deviceID: UInt16 = PCIRootComplex.hostBridgeDeviceID) {
        config = Mutex(PCIConfigSpace(header: PCIHeader(
            vendorID: PCIRootComplex.hostBridgeVendorID, deviceID: deviceID,
            classCode: 0x06_0000, subsystemVendorID: PCIRootComplex.hostBridgeVendorID, subsystemID: deviceID)))
    }

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

/// Which PC chipset bus 0 presents. Linux and SeaBIOS need none in particular (`.vireo`: no
/// chipset registers, the identity Cloud Hypervisor also uses); OVMF knows only QEMU's, and takes
/// any other id for Cloud Hypervisor's machine (whose memory map it reads from PVH boot data), so
/// UEFI machines present the i440FX host bridge and the PIIX4's power-management function at
/// 00:01.3, whose two registers OVMF reads to find the ACPI PM timer (`PIIX4PowerManagement`).
public enum PCIChipset: String, Sendable, Codable {
    case vireo
    case i440fx

    public var hostBridgeDeviceID: UInt16 {
        switch self {
        case .vireo: PCIRootComplex.hostBridgeDeviceID
        case .i440fx: 0x1237
        }
    }
}

/// Function 3 of the PIIX4 (00:01.3, 8086:7113): only the ACPI I/O base (PMBA, 0x40) and its
/// enable bit (PMREGMISC bit 0, 0x80), read-only and already set to where Vireo's ACPI PM block
/// is (`ioBase`), as Xen's and other firmware-less setups leave them; OVMF then uses that base
/// rather than programming its own, so the FADT Vireo builds stays right. Function 0 of slot 1 is
/// whatever device sits there (or none), without the multi-function bit: operating systems never
/// enumerate this function, only firmware that knows the chipset reads it.
public final class PIIX4PowerManagement: PCIDevice {
    public static let address = PCIDeviceAddress(device: 1, function: 3)
    static let pmbaOffset = 0x40
    static let pmregmiscOffset = 0x80
    private let config: PCIConfigSpace

    public init(ioBase: UInt16) {
        var config = PCIConfigSpace(header: PCIHeader(vendorID: 0x8086, deviceID: 0x7113, revision: 3, classCode: 0x06_8000))
        // Bit 0 of PMBA reads 1 (an I/O address); PMREGMISC's PMIOSE enables its decoding.
        config.setRaw(UInt32(ioBase) | 1, at: Self.pmbaOffset, size: 4)
        config.setRaw(1, at: Self.pmregmiscOffset, size: 1)
        self.config = config
    }

    public var barRequests: [PCIBARRequest] { [] }
    public func attach(_ attachment: PCIAttachment) {}
    public func configRead(offset: Int, size: Int) -> UInt32 { config.read(offset: offset, size: size) }
    /// Fixed: nothing the guest writes changes this function (there is nothing to save, either).
    public func configWrite(offset: Int, size: Int, value: UInt32) {}
    public func barRead(_ index: Int, offset: UInt64, size: Int) -> UInt64 { pciAllOnes(size: size) }
    public func barWrite(_ index: Int, offset: UInt64, size: Int, value: UInt64) {}
    public func decodedBARs() -> [PCIBARMapping] { [] }
}
