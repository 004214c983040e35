import Devices

/// Where everything lives in the virtio-pci function (VIRTIO 1.2 §4.1): one 64-bit memory BAR
/// holding every structure at fixed, page-separated offsets, found by the driver through
/// vendor-specific capabilities.
public enum VirtioPCILayout {
    public static let vendorID: UInt16 = 0x1AF4
    /// §4.1.2.1: modern device IDs are 0x1040 + the virtio device type.
    public static let deviceIDBase: UInt16 = 0x1040
    /// §4.1.2.1: non-transitional devices SHOULD have revision ID 1 or higher.
    public static let revision: UInt8 = 1

    public static let barIndex = 0
    public static let barSize: UInt64 = 0x1_0000

    public static let commonOffset: UInt32 = 0x0000
    /// §4.1.4.3: through queue_reset (optional fields read 0).
    public static let commonLength: UInt32 = 0x3C
    public static let isrOffset: UInt32 = 0x1000
    public static let isrLength: UInt32 = 4
    public static let deviceConfigOffset: UInt32 = 0x2000
    public static let deviceConfigLength: UInt32 = 0x1000
    public static let notifyOffset: UInt32 = 0x3000
    /// §4.1.4.4: each queue notifies at notify_off × multiplier; 4 gives every queue its own
    /// DWORD, so the VMM can put one ioeventfd on each.
    public static let notifyOffMultiplier: UInt32 = 4
    public static let notifyLength: UInt32 = 0x1000
    public static let msixTableOffset: UInt32 = 0x4000
    public static let msixPBAOffset: UInt32 = 0xC000

    /// Queues fit the notification area and their vectors (plus config) the MSI-X table.
    public static let maximumQueues = Int(notifyLength / notifyOffMultiplier)

    /// §4.1.4 cfg_type values.
    public enum CapabilityType: UInt8, Sendable {
        case common = 1, notify = 2, isr = 3, device = 4, pciConfigAccess = 5
    }

    public static let vendorCapabilityID: UInt8 = 0x09

    /// PCI class codes the guest sees for each device type (base class, subclass, prog-if).
    public static func classCode(for type: VirtioDeviceType) -> UInt32 {
        switch type {
        case .net: return 0x02_0000      // network controller, Ethernet
        case .block: return 0x01_0000    // mass storage, SCSI
        case .console: return 0x07_8000  // communication controller, other
        case .entropy: return 0x00_FF00  // unclassified
        }
    }

    /// The vendor-specific capability bodies (§4.1.4: struct virtio_pci_cap after cap_vndr and
    /// cap_next), so the driver finds each structure inside our BAR.
    static func capabilityBody(type: CapabilityType, offset: UInt32, length: UInt32, extra: UInt32? = nil) -> [UInt8] {
        let capLength = UInt8(16 + (extra == nil ? 0 : 4))
        var body: [UInt8] = [capLength, type.rawValue, UInt8(barIndex), 0, 0, 0]
        for dword in [offset, length] + (extra.map { [$0] } ?? []) {
            body += (0..<4).map { UInt8(truncatingIfNeeded: dword >> (8 * UInt32($0))) }
        }
        return body
    }
}

/// Offsets of the fields inside the PCI configuration access capability (§4.1.4.9), relative to
/// the capability's start.
enum VirtioPCIConfigAccessField {
    static let bar = 4
    static let offset = 8
    static let length = 12
    static let data = 16
    static let capabilityLength = 20
}
