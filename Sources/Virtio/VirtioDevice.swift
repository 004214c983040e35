import Devices
import GuestMemory

/// Device IDs (VIRTIO 1.2 §5): the PCI device ID is 0x1040 + this value (§4.1.2.1).
public enum VirtioDeviceType: UInt16, Sendable, Codable {
    case net = 1
    case block = 2
    case console = 3
    case entropy = 4
}

/// Feature bits every device may offer (VIRTIO 1.2 §6), as bit masks over the 64-bit feature word.
public enum VirtioFeature {
    /// §6: indirect descriptors.
    public static let ringIndirectDescriptors: UInt64 = 1 << 28
    /// §6: used_event / avail_event notification suppression.
    public static let ringEventIndex: UInt64 = 1 << 29
    /// §6: the modern (1.x) interface; required by our transport.
    public static let version1: UInt64 = 1 << 32
}

/// Device status bits (VIRTIO 1.2 §2.1).
public enum VirtioStatus {
    public static let acknowledge: UInt8 = 1
    public static let driver: UInt8 = 2
    public static let driverOK: UInt8 = 4
    public static let featuresOK: UInt8 = 8
    public static let deviceNeedsReset: UInt8 = 64
    public static let failed: UInt8 = 128
}

/// How a device reaches the driver. The transport maps these onto MSI-X vectors (or INTx + ISR);
/// calls may come from any device thread.
public protocol VirtioInterrupt: Sendable {
    /// Buffers were added to the used ring of queue `index` (call after `needsNotification`).
    func signalQueue(_ index: Int)
    /// The device configuration changed (§2.5.1).
    func signalConfigChange()
    /// The device hit an unrecoverable driver error (a hostile chain, ...): the transport sets
    /// DEVICE_NEEDS_RESET and signals a configuration change (§2.1.2).
    func signalNeedsReset()
}

/// What a device gets when the driver sets DRIVER_OK: its queues, guest memory, the negotiated
/// features and the interrupt path. `queues[i]` is nil when the driver left queue i disabled.
public struct VirtioActivation: Sendable {
    public let memory: GuestMemory
    public let queues: [SplitVirtqueue?]
    public let negotiatedFeatures: UInt64
    public let interrupt: any VirtioInterrupt

    public init(memory: GuestMemory, queues: [SplitVirtqueue?], negotiatedFeatures: UInt64, interrupt: any VirtioInterrupt) {
        self.memory = memory
        self.queues = queues
        self.negotiatedFeatures = negotiatedFeatures
        self.interrupt = interrupt
    }
}

/// Why a device refused to activate; the transport logs it and sets DEVICE_NEEDS_RESET.
public enum VirtioDeviceError: Error, Equatable, Sendable, CustomStringConvertible {
    case missingQueue(Int)
    case queue(VirtqueueError)
    case backend(String)
    /// A captured device state this device could not have been in (`restoreState`).
    case state(DeviceStateError)

    public var description: String {
        switch self {
        case let .missingQueue(index): return "the driver did not enable required queue \(index)"
        case let .queue(error): return error.description
        case let .backend(message): return message
        case let .state(error): return error.description
        }
    }
}

/// A virtio device's logic, independent of the transport (PCI here; MMIO could reuse it).
///
/// Threading: the transport calls `readConfig`/`writeConfig`/`activate`/`reset` from vCPU threads;
/// `queueNotified` comes from the VMM's I/O thread (ioeventfd) — never from the vCPU exit path when
/// ioeventfd is available — and is never called concurrently for the same device. Implementations
/// keep their state behind a Mutex and never block a vCPU thread on host I/O.
public protocol VirtioDevice: AnyObject, Sendable {
    var deviceType: VirtioDeviceType { get }
    /// Features offered, including VIRTIO_F_VERSION_1 and the generic ring features the device supports.
    var deviceFeatures: UInt64 { get }
    /// Maximum size of each queue; the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// Device-specific configuration space (§4.1.4.6), little-endian; out-of-range reads give 0.
    func readConfig(offset: Int, size: Int) -> UInt64
    /// Writes to the device-specific configuration space; read-only fields ignore writes.
    func writeConfig(offset: Int, size: Int, value: UInt64)
    /// DRIVER_OK was set: the device owns its queues from now on.
    func activate(_ activation: VirtioActivation) throws(VirtioDeviceError)
    /// The driver notified queue `index` (available buffers).
    func queueNotified(_ index: Int)
    /// The driver reset the device (status 0): stop using queues and memory, drop in-flight work.
    func reset()
    /// The device's state, or nil when it is not activated (no DRIVER_OK, or reset). The caller
    /// guarantees quiescence: no queueNotified/backendReadable runs concurrently (the VMM has stopped
    /// the device's I/O thread and paused the vCPUs), so nothing is in flight but what the state holds.
    func captureState() -> VirtioDeviceState?
    /// Re-activates the device from a captured state, re-validating it as hostile input
    /// (queue count == queueMaxSizes.count, features ⊆ deviceFeatures, each queue through
    /// SplitVirtqueue(restoring:memory:) incl. its size <= queueMaxSizes[i], faulted indices in range,
    /// pendingInput <= the console's capacity and empty for other devices, required queues present
    /// exactly as activate() requires). On error the device is left as it was (not activated).
    ///
    /// It touches no ring and raises no interrupt (the function may not be attached yet): once the
    /// machine is assembled the VMM calls `queueNotified(i)` for every queue, which serves whatever
    /// the driver published while the device was stopped and is harmless when there is nothing.
    func restoreState(_ state: VirtioDeviceState, memory: GuestMemory, interrupt: any VirtioInterrupt) throws(VirtioDeviceError)
}
