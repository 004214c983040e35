import Devices
import Synchronization

/// Records every route and trigger, in order, so MSI-X tests can check exact effects.
final class RecordingMSIXController: MSIXInterruptController {
    enum Call: Equatable {
        case route(PCIDeviceAddress, Int, MSIMessage?)
        case trigger(PCIDeviceAddress, Int)
    }

    private let recorded = Mutex<[Call]>([])

    func route(device: PCIDeviceAddress, vector: Int, message: MSIMessage?) {
        recorded.withLock { $0.append(.route(device, vector, message)) }
    }

    func trigger(device: PCIDeviceAddress, vector: Int) { recorded.withLock { $0.append(.trigger(device, vector)) } }

    var calls: [Call] { recorded.withLock { $0 } }
    func clear() { recorded.withLock { $0.removeAll() } }
}

/// A PCI function built only from the public pieces (config space, MSI-X), the way a real
/// device uses them: a 32-bit BAR of scratch registers, a 64-bit BAR holding the MSI-X table and
/// PBA, and an I/O BAR.
final class TestPCIFunction: PCIDevice {
    struct State {
        var config: PCIConfigSpace
        var msix: MSIXTable
        var scratch = [UInt64](repeating: 0, count: 512)
        var address = PCIDeviceAddress(device: 0)
        var intx: PCIINTxWiring?
        var log: [String] = []
    }

    static let scratchBAR = 0, msixBAR = 2, ioBAR = 4
    static let msixPBAOffset: UInt32 = 0x800
    let state: Mutex<State>
    let capability: MSIXCapability
    let controller: RecordingMSIXController
    let requests: [PCIBARRequest]

    init(vectors: Int = 4, mem64Size: UInt64 = 0x4000, controller: RecordingMSIXController = RecordingMSIXController()) throws {
        var config = PCIConfigSpace(header: PCIHeader(vendorID: 0x1234, deviceID: 0x5678, revision: 2, classCode: 0xFF_0000,
                                                      subsystemVendorID: 0xAAAA, subsystemID: 0xBBBB))
        requests = [PCIBARRequest(index: Self.scratchBAR, size: 0x1000, kind: .memory32(prefetchable: false)),
                    PCIBARRequest(index: Self.msixBAR, size: mem64Size, kind: .memory64(prefetchable: true)),
                    PCIBARRequest(index: Self.ioBAR, size: 0x20, kind: .io)]
        for request in requests { try config.declareBAR(request) }
        try config.addCapability(id: 0x09, body: [4, 0xAB])   // a vendor cap ahead of MSI-X
        capability = try MSIXCapability.add(to: &config, vectorCount: vectors, tableBAR: Self.msixBAR, tableOffset: 0,
                                            pbaBAR: Self.msixBAR, pbaOffset: Self.msixPBAOffset)
        state = Mutex(State(config: config, msix: try MSIXTable(vectorCount: vectors)))
        self.controller = controller
    }

    var barRequests: [PCIBARRequest] { requests }

    func attach(_ attachment: PCIAttachment) {
        state.withLock { state in
            state.config.applyAttachment(attachment)
            state.address = attachment.address
            state.intx = attachment.intx
        }
    }

    func configRead(offset: Int, size: Int) -> UInt32 { state.withLock { $0.config.read(offset: offset, size: size) } }

    func configWrite(offset: Int, size: Int, value: UInt32) {
        state.withLock { state in
            state.config.write(offset: offset, size: size, value: value)
            if capability.touchesControl(offset: offset, size: size) {
                let control = capability.control(in: state.config)
                controller.apply(state.msix.setControl(enabled: control.enabled, functionMasked: control.functionMasked),
                                 device: state.address)
            }
        }
    }

    func barRead(_ index: Int, offset: UInt64, size: Int) -> UInt64 {
        state.withLock { state in
            state.log.append("read \(index) \(offset) \(size)")
            switch index {
            case Self.msixBAR where offset >= UInt64(Self.msixPBAOffset):
                return state.msix.readPBA(offset: offset - UInt64(Self.msixPBAOffset), size: size)
            case Self.msixBAR: return state.msix.readTable(offset: offset, size: size)
            case Self.scratchBAR: return state.scratch[Int(offset / 8)]
            default: return 0
            }
        }
    }

    func barWrite(_ index: Int, offset: UInt64, size: Int, value: UInt64) {
        state.withLock { state in
            state.log.append("write \(index) \(offset) \(size) \(value)")
            switch index {
            case Self.msixBAR where offset < UInt64(Self.msixPBAOffset):
                controller.apply(state.msix.writeTable(offset: offset, size: size, value: value), device: state.address)
            case Self.scratchBAR: state.scratch[Int(offset / 8)] = value
            default: break
            }
        }
    }

    func decodedBARs() -> [PCIBARMapping] { state.withLock { $0.config.decodedBARs() } }

    /// Raises `vector` the way a device does: MSI-X when enabled, INTA# otherwise.
    func raise(vector: Int) {
        state.withLock { state in
            if state.msix.enabled {
                controller.apply(state.msix.signal(vector), device: state.address)
            } else {
                state.config.setInterruptStatus(true)
                state.intx?.line.setLevel(!state.config.intxDisabled)
            }
        }
    }

    var log: [String] { state.withLock { $0.log } }
}

/// Guest-side configuration access through mechanism #1, as Linux's pci_conf1 does it.
struct ConfigPortsDriver {
    let ports: PCIConfigPorts

    func address(_ device: PCIDeviceAddress, _ register: Int) -> UInt64 {
        UInt64(1 << 31) | UInt64(device.bus) << 16 | UInt64(device.device) << 11 | UInt64(device.function) << 8 | UInt64(register & 0xFC)
    }

    func read(_ device: PCIDeviceAddress, _ register: Int, size: Int) -> UInt64 {
        ports.write(offset: 0, size: 4, value: address(device, register))
        return ports.read(offset: 4 + UInt64(register & 3), size: size)
    }

    func write(_ device: PCIDeviceAddress, _ register: Int, size: Int, value: UInt64) {
        ports.write(offset: 0, size: 4, value: address(device, register))
        ports.write(offset: 4 + UInt64(register & 3), size: size, value: value)
    }
}

func ecamOffset(_ device: PCIDeviceAddress, _ register: Int) -> UInt64 {
    UInt64(device.bus) << 20 | UInt64(device.device) << 15 | UInt64(device.function) << 12 | UInt64(register)
}

enum TestWindows {
    static let ecamBase: UInt64 = 0xE000_0000
    static let mmio32: Range<UInt64> = 0xC000_0000..<0xE000_0000
    static let mmio64: Range<UInt64> = 0x80_0000_0000..<0x90_0000_0000
    static let io: Range<UInt64> = 0xC000..<0x10000
}

/// A root with the machine's windows and one test function in slot 3 wired to a recording line.
func makeRootWithFunction(mmio64: Bool = false) throws -> (PCIRootComplex, TestPCIFunction, RecordingInterruptLine, PCIDeviceAddress) {
    let root = try PCIRootComplex(ecamBase: TestWindows.ecamBase, ecamSize: 1 << 20, mmio32: TestWindows.mmio32,
                                  mmio64: mmio64 ? TestWindows.mmio64 : nil, io: TestWindows.io)
    let function = try TestPCIFunction()
    let line = RecordingInterruptLine()
    let address = try root.insert(function, slot: 3, intx: PCIINTxWiring(line: line, irq: 19))
    return (root, function, line, address)
}
