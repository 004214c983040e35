import Devices
import GuestMemory
import Synchronization
@testable import Virtio

/// A VirtioDevice that records what the transport asks of it.
final class TransportFakeDevice: VirtioDevice {
    struct Record {
        var activations: [VirtioActivation] = []
        var resets = 0
        var notified: [Int] = []
        var configWrites: [(offset: Int, size: Int, value: UInt64)] = []
        var config: [UInt8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
        var activationError: VirtioDeviceError?
        /// What restoreState was given and captureState returns.
        var deviceState: VirtioDeviceState?
        /// Re-enter the transport from inside its calls, as a real device may.
        var signalFromCallbacks = false
        var interrupt: (any VirtioInterrupt)?
    }

    static let featureA: UInt64 = 1 << 0
    let deviceType: VirtioDeviceType
    let deviceFeatures: UInt64
    let queueMaxSizes: [UInt16]
    let record = Mutex(Record())

    init(type: VirtioDeviceType = .entropy, features: UInt64 = VirtioFeature.version1 | VirtioFeature.ringEventIndex | featureA,
         queueMaxSizes: [UInt16] = [16, 8]) {
        deviceType = type
        deviceFeatures = features
        self.queueMaxSizes = queueMaxSizes
    }

    func readConfig(offset: Int, size: Int) -> UInt64 {
        record.withLock { record in
            var value: UInt64 = 0
            for index in 0..<size where offset + index < record.config.count {
                value |= UInt64(record.config[offset + index]) << (8 * UInt64(index))
            }
            return value
        }
    }

    func writeConfig(offset: Int, size: Int, value: UInt64) {
        let reenter = record.withLock { record in
            record.configWrites.append((offset, size, value))
            return record.signalFromCallbacks ? record.interrupt : nil
        }
        reenter?.signalConfigChange()
    }

    func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let (error, reenter) = record.withLock { record in
            record.activations.append(activation)
            record.interrupt = activation.interrupt
            return (record.activationError, record.signalFromCallbacks)
        }
        if reenter { activation.interrupt.signalQueue(0) }
        if let error { throw error }
    }

    func queueNotified(_ index: Int) {
        let reenter = record.withLock { record in
            record.notified.append(index)
            return record.signalFromCallbacks ? record.interrupt : nil
        }
        reenter?.signalQueue(index)
    }

    func reset() {
        let reenter = record.withLock { record in
            record.resets += 1
            return record.signalFromCallbacks ? record.interrupt : nil
        }
        reenter?.signalQueue(0)
    }

    func captureState() -> VirtioDeviceState? { record.withLock { $0.deviceState } }

    func restoreState(_ state: VirtioDeviceState, memory: GuestMemory, interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        record.withLock { record in
            record.deviceState = state
            record.interrupt = interrupt
        }
    }

    var activations: [VirtioActivation] { record.withLock { $0.activations } }
    var interrupt: (any VirtioInterrupt)? { activations.last?.interrupt }
}

final class TransportMSIXRecorder: MSIXInterruptController {
    private let recorded = Mutex<[String]>([])
    func route(device: PCIDeviceAddress, vector: Int, message: MSIMessage?) {
        recorded.withLock { $0.append("route \(vector) " + (message.map { "\(String($0.address, radix: 16))/\($0.data)" } ?? "none")) }
    }
    func trigger(device: PCIDeviceAddress, vector: Int) { recorded.withLock { $0.append("trigger \(vector)") } }
    var calls: [String] { recorded.withLock { $0 } }
    func clear() { recorded.withLock { $0.removeAll() } }
}

final class TransportLine: InterruptLine {
    private let levels = Mutex<[Bool]>([])
    func setLevel(_ high: Bool) { levels.withLock { $0.append(high) } }
    var isHigh: Bool { levels.withLock { $0.last ?? false } }
}

final class TransportNotifications: Sendable {
    private let queues = Mutex<[Int]>([])
    var handler: @Sendable (Int) -> Void { { index in self.queues.withLock { $0.append(index) } } }
    var received: [Int] { queues.withLock { $0 } }
}

/// Common configuration offsets (VIRTIO 1.2 §4.1.4.3), as a driver names them.
enum CommonOffset {
    static let deviceFeatureSelect: UInt64 = 0x00, deviceFeature: UInt64 = 0x04
    static let driverFeatureSelect: UInt64 = 0x08, driverFeature: UInt64 = 0x0C
    static let configMSIXVector: UInt64 = 0x10, numQueues: UInt64 = 0x12
    static let deviceStatus: UInt64 = 0x14, configGeneration: UInt64 = 0x15
    static let queueSelect: UInt64 = 0x16, queueSize: UInt64 = 0x18, queueMSIXVector: UInt64 = 0x1A
    static let queueEnable: UInt64 = 0x1C, queueNotifyOff: UInt64 = 0x1E
    static let queueDesc: UInt64 = 0x20, queueDriver: UInt64 = 0x28, queueDevice: UInt64 = 0x30
}

extension VirtioPCIDriver where Device == TransportFakeDevice {
    convenience init() throws { try self.init(device: TransportFakeDevice()) }
}

/// The guest side of a virtio-pci function: enumerates it through ECAM, finds the structures from
/// its capabilities (as Linux's virtio_pci_modern does) and pokes them through the MMIO window.
final class VirtioPCIDriver<Device: VirtioDevice> {
    struct Capability { var offset: Int; var bar: Int; var regionOffset: UInt64; var length: UInt64; var extra: UInt32 }

    let root: PCIRootComplex
    let transport: VirtioPCIDevice
    let device: Device
    let memory: GuestMemory
    let msix = TransportMSIXRecorder()
    let line = TransportLine()
    let address: PCIDeviceAddress
    private(set) var capabilities: [UInt8: Capability] = [:]
    private(set) var msixCapability: Int?

    init(device: Device) throws {
        memory = try makeTestMemory()
        root = try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: 0xC000_0000..<0xE000_0000)
        transport = try VirtioPCIDevice(device: device, memory: memory, msixController: msix)
        self.device = device
        address = try root.insert(transport, slot: 1, intx: PCIINTxWiring(line: line, irq: 17))
        walkCapabilities()
    }

    func config(_ offset: Int, size: Int) -> UInt64 { root.ecam.read(offset: UInt64(address.device) << 15 | UInt64(offset), size: size) }
    func setConfig(_ offset: Int, size: Int, _ value: UInt64) {
        root.ecam.write(offset: UInt64(address.device) << 15 | UInt64(offset), size: size, value: value)
    }

    private func walkCapabilities() {
        var pointer = Int(config(0x34, size: 1))
        var seen = 0
        while pointer != 0, seen < 48 {
            seen += 1
            if config(pointer, size: 1) == 0x11 { msixCapability = pointer }
            if config(pointer, size: 1) == 0x09 {
                let type = UInt8(config(pointer + 3, size: 1))
                capabilities[type] = Capability(offset: pointer, bar: Int(config(pointer + 4, size: 1)),
                                                regionOffset: config(pointer + 8, size: 4), length: config(pointer + 12, size: 4),
                                                extra: config(pointer + 2, size: 1) >= 20 ? UInt32(config(pointer + 16, size: 4)) : 0)
            }
            pointer = Int(config(pointer + 1, size: 1))
        }
    }

    /// BAR 0's current address, from the BAR registers as the guest programmed them.
    var barAddress: UInt64 { config(0x10, size: 4) & ~0xF | config(0x14, size: 4) << 32 }

    func region(_ type: UInt8) -> UInt64 { barAddress + (capabilities[type]?.regionOffset ?? 0) }

    func barRead(_ address: UInt64, size: Int) -> UInt64 {
        root.mmio32Window.read(offset: address - root.mmio32Window.base, size: size)
    }

    func barWrite(_ address: UInt64, size: Int, _ value: UInt64) {
        root.mmio32Window.write(offset: address - root.mmio32Window.base, size: size, value: value)
    }

    func common(_ offset: UInt64, size: Int) -> UInt64 { barRead(region(1) + offset, size: size) }
    func setCommon(_ offset: UInt64, size: Int, _ value: UInt64) { barWrite(region(1) + offset, size: size, value) }
    var status: UInt8 { UInt8(common(CommonOffset.deviceStatus, size: 1)) }
    func setStatus(_ value: UInt8) { setCommon(CommonOffset.deviceStatus, size: 1, UInt64(value)) }
    func readISR() -> UInt8 { UInt8(barRead(region(3), size: 1)) }

    /// §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, features (both halves), FEATURES_OK.
    /// Returns whether the device kept FEATURES_OK.
    @discardableResult
    func negotiate(_ features: UInt64) -> Bool {
        setStatus(0)
        setStatus(VirtioStatus.acknowledge)
        setStatus(status | VirtioStatus.driver)
        for half in 0..<2 {
            setCommon(CommonOffset.driverFeatureSelect, size: 4, UInt64(half))
            setCommon(CommonOffset.driverFeature, size: 4, features >> (32 * UInt64(half)) & 0xFFFF_FFFF)
        }
        setStatus(status | VirtioStatus.featuresOK)
        return status & VirtioStatus.featuresOK != 0
    }

    /// §4.1.5.1.3: program queue `index` from a mock driver queue, with 64-bit fields as DWORD halves.
    func setUpQueue(_ index: UInt16, _ queue: MockDriverQueue, vector: UInt16 = 0xFFFF) {
        setCommon(CommonOffset.queueSelect, size: 2, UInt64(index))
        setCommon(CommonOffset.queueSize, size: 2, UInt64(queue.config.size))
        for (offset, address) in [(CommonOffset.queueDesc, queue.config.descTable), (CommonOffset.queueDriver, queue.config.availRing),
                                  (CommonOffset.queueDevice, queue.config.usedRing)] {
            setCommon(offset, size: 4, address.raw & 0xFFFF_FFFF)
            setCommon(offset + 4, size: 4, address.raw >> 32)
        }
        setCommon(CommonOffset.queueMSIXVector, size: 2, UInt64(vector))
        setCommon(CommonOffset.queueEnable, size: 2, 1)
    }

    /// Enables MSI-X in message control, as pci_enable_msix does.
    func enableMSIX(functionMask: Bool = false) {
        guard let cap = msixCapability else { return }
        setConfig(cap + 2, size: 2, functionMask ? 0xC000 : 0x8000)
    }

    /// Programs MSI-X table entry `vector` (unmasked unless told) through the BAR.
    func programVector(_ vector: Int, address: UInt64, data: UInt32, masked: Bool = false) {
        let entry = barAddress + UInt64(VirtioPCILayout.msixTableOffset) + UInt64(vector * 16)
        barWrite(entry, size: 4, address & 0xFFFF_FFFF)
        barWrite(entry + 4, size: 4, address >> 32)
        barWrite(entry + 8, size: 4, UInt64(data))
        barWrite(entry + 12, size: 4, masked ? 1 : 0)
    }
}
