import Synchronization

/// Bus 0 of a PCI host bridge: slot 0 is the bridge itself, slots 1-31 take devices. The root
/// assigns every BAR at insertion ("firmware" assignment, so the guest finds them programmed),
/// serializes configuration accesses and tracks where each BAR decodes so one window object per
/// address space can dispatch BAR accesses, wherever the guest moves them.
///
/// Insert on the VMM's buses: `configPorts` at 0xCF8 (length 8) on the PIO bus, `ecam` at the
/// ECAM base (its size) and `mmio32Window` (plus `mmio64Window`/`ioWindow` when given) at their
/// windows' bases on the MMIO (PIO) bus.
public final class PCIRootComplex: Sendable {
    public static let hostBridgeVendorID: UInt16 = 0x8086
    public static let hostBridgeDeviceID: UInt16 = 0x0D57
    public static let slotCount = 32
    /// ECAM gives each bus 1 MiB: 32 devices × 8 functions × 4 KiB.
    public static let ecamBytesPerBus: UInt64 = 1 << 20
    /// BARs are placed at least page aligned so the VMM can map or trap them per page.
    static let minimumBARAlignment: UInt64 = 4096

    /// Called (outside all locks) with the new address of a BAR that moved, or nil when it
    /// stopped decoding. Must not make configuration accesses to this root.
    public typealias BARObserver = @Sendable (_ device: PCIDeviceAddress, _ barIndex: Int, _ newAddress: UInt64?) -> Void

    let topology: PCITopology
    public let configPorts: PCIConfigPorts
    public let ecam: PCIECAM
    public let mmio32Window: PCIBARWindow
    public let mmio64Window: PCIBARWindow?
    public let ioWindow: PCIBARWindow?
    public let ecamBase: UInt64
    public let ecamSize: UInt64
    let hostBridge: PCIHostBridge

    /// What the root itself remembers besides its functions, for snapshots: the 0xCF8 address
    /// latch (a snapshot may fall between a guest's write to 0xCF8 and its access to 0xCFC) and
    /// the host bridge's configuration space.
    public struct SavedState: Codable, Equatable, Sendable {
        public var configAddress: UInt32
        public var hostBridge: PCIConfigSpace
    }

    public var savedState: SavedState {
        SavedState(configAddress: topology.state.withLock { $0.configAddress }, hostBridge: hostBridge.configSpace)
    }

    /// Restores `savedState`, checked like any untrusted input.
    public func restore(_ saved: SavedState) throws(DeviceStateError) {
        guard saved.configAddress & ~PCIConfigPorts.addressLatchMask == 0 else {
            throw DeviceStateError(device: "PCI root", field: "0xCF8 address latch",
                                   problem: "0x\(String(saved.configAddress, radix: 16)) sets bits the latch does not keep")
        }
        try hostBridge.restore(config: saved.hostBridge)
        topology.state.withLock { $0.configAddress = saved.configAddress }
    }

    /// `resetSink` receives `.reset` when the guest writes the reset bit of the PC reset control
    /// register at 0xCF9 (Linux `reboot=pci`); ECAM must be whole buses of 1 MiB.
    public init(ecamBase: UInt64, ecamSize: UInt64, mmio32: Range<UInt64>, mmio64: Range<UInt64>? = nil,
                io: Range<UInt64>? = nil, chipset: PCIChipset = .vireo,
                resetSink: (any MachineEventSink)? = nil) throws(PCIError) {
        guard ecamSize >= Self.ecamBytesPerBus, ecamSize % Self.ecamBytesPerBus == 0, ecamSize <= 256 * Self.ecamBytesPerBus,
              ecamBase % Self.ecamBytesPerBus == 0, !ecamBase.addingReportingOverflow(ecamSize).overflow else {
            throw .invalidWindow("ECAM 0x\(String(ecamBase, radix: 16))+0x\(String(ecamSize, radix: 16)) is not whole 1 MiB buses")
        }
        for (name, window) in [("mmio32", mmio32), ("mmio64", mmio64), ("io", io)] {
            guard let window else { continue }
            guard !window.isEmpty else { throw .invalidWindow("\(name) window is empty") }
        }
        guard mmio32.upperBound <= 1 << 32 else { throw .invalidWindow("mmio32 window ends above 4 GiB") }
        // Memory windows and ECAM share the MMIO bus: they must not overlap.
        let ecamRange = ecamBase..<(ecamBase + ecamSize)
        let memory = [mmio32, ecamRange] + (mmio64.map { [$0] } ?? [])
        for (first, a) in memory.enumerated() {
            for b in memory[(first + 1)...] where a.overlaps(b) {
                throw .invalidWindow("0x\(String(a.lowerBound, radix: 16))..<0x\(String(a.upperBound, radix: 16)) overlaps 0x\(String(b.lowerBound, radix: 16))..<0x\(String(b.upperBound, radix: 16))")
            }
        }
        if let io, io.upperBound > 0x1_0000 { throw .invalidWindow("io window ends above 64 KiB") }
        let bridge = PCIHostBridge(deviceID: chipset.hostBridgeDeviceID)
        hostBridge = bridge
        let chipsetFunctions: [PCIDeviceAddress: any PCIDevice] = chipset == .i440fx
            ? [PIIX4PowerManagement.address: PIIX4PowerManagement(ioBase: UInt16(ACPIPM.basePort))] : [:]
        let topology = PCITopology(hostBridge: bridge, mmio32: mmio32, mmio64: mmio64, io: io, chipsetFunctions: chipsetFunctions)
        self.topology = topology
        configPorts = PCIConfigPorts(topology: topology, resetSink: resetSink)
        ecam = PCIECAM(topology: topology)
        mmio32Window = PCIBARWindow(topology: topology, base: mmio32.lowerBound, length: mmio32.upperBound - mmio32.lowerBound, memory: true)
        mmio64Window = mmio64.map { PCIBARWindow(topology: topology, base: $0.lowerBound, length: $0.upperBound - $0.lowerBound, memory: true) }
        ioWindow = io.map { PCIBARWindow(topology: topology, base: $0.lowerBound, length: $0.upperBound - $0.lowerBound, memory: false) }
        self.ecamBase = ecamBase
        self.ecamSize = ecamSize
    }

    /// Puts `device` in `slot` (1-31) of bus 0, assigns its BARs from the windows (64-bit BARs
    /// from the 64-bit window when there is one) and attaches its INTx wiring.
    @discardableResult
    public func insert(_ device: any PCIDevice, slot: Int, intx: PCIINTxWiring?) throws(PCIError) -> PCIDeviceAddress {
        try topology.insert(device, slot: slot, intx: intx)
    }

    /// The lowest empty slot, or nil when the bus is full.
    public func nextFreeSlot() -> Int? { topology.nextFreeSlot() }

    public func setBARObserver(_ observer: BARObserver?) { topology.observer.withLock { $0 = observer } }

    /// Where each BAR of the function at `address` decodes now.
    public func decodedBARs(of address: PCIDeviceAddress) -> [PCIBARMapping] { topology.decodedBARs(of: address) }

    /// Configuration read as the guest sees it: all-ones for absent functions.
    public func configRead(_ address: PCIDeviceAddress, offset: Int, size: Int) -> UInt32 {
        topology.configRead(address, offset: offset, size: size)
    }

    /// Configuration write as the guest does it; ignored for absent functions.
    public func configWrite(_ address: PCIDeviceAddress, offset: Int, size: Int, value: UInt32) {
        topology.configWrite(address, offset: offset, size: size, value: value)
    }
}

/// The shared state behind the root and its bus objects (kept apart so they hold no cycle).
final class PCITopology: Sendable {
    struct State {
        var slots: [(any PCIDevice)?]
        var mappings: [[PCIBARMapping]]
        var mmio32: PCIWindowAllocator
        var mmio64: PCIWindowAllocator?
        var io: PCIWindowAllocator?
        /// The 0xCF8 address latch; one per machine, as on a PC chipset.
        var configAddress: UInt32 = 0
    }

    let state: Mutex<State>
    let observer = Mutex<PCIRootComplex.BARObserver?>(nil)
    /// Functions other than 0 that belong to the chipset (`PCIChipset`): configuration space only,
    /// no BARs, no state.
    let chipsetFunctions: [PCIDeviceAddress: any PCIDevice]

    init(hostBridge: PCIHostBridge, mmio32: Range<UInt64>, mmio64: Range<UInt64>?, io: Range<UInt64>?,
         chipsetFunctions: [PCIDeviceAddress: any PCIDevice] = [:]) {
        self.chipsetFunctions = chipsetFunctions
        var slots = [(any PCIDevice)?](repeating: nil, count: PCIRootComplex.slotCount)
        slots[0] = hostBridge
        state = Mutex(State(slots: slots, mappings: [[PCIBARMapping]](repeating: [], count: PCIRootComplex.slotCount),
                            mmio32: PCIWindowAllocator(mmio32), mmio64: mmio64.map(PCIWindowAllocator.init),
                            io: io.map(PCIWindowAllocator.init)))
        hostBridge.attach(PCIAttachment(address: PCIDeviceAddress(device: 0), barAddresses: [:], intx: nil))
    }

    func insert(_ device: any PCIDevice, slot: Int, intx: PCIINTxWiring?) throws(PCIError) -> PCIDeviceAddress {
        guard (1..<PCIRootComplex.slotCount).contains(slot) else { throw .invalidSlot(slot) }
        let address = PCIDeviceAddress(device: UInt8(slot))
        let requests = device.barRequests
        return try state.withLock { (state: inout State) throws(PCIError) -> PCIDeviceAddress in
            guard state.slots[slot] == nil else { throw .slotInUse(slot) }
            // Allocate on copies so a failure leaves the windows untouched.
            var mmio32 = state.mmio32, mmio64 = state.mmio64, io = state.io
            var assigned: [Int: UInt64] = [:]
            // Largest first keeps natural alignment from wasting the window.
            for request in requests.sorted(by: { $0.size > $1.size }) {
                let alignment = max(request.size, PCIRootComplex.minimumBARAlignment)
                let placed: UInt64?
                switch request.kind {
                case .io: placed = io?.allocate(size: request.size, alignment: max(request.size, 4))
                case .memory32: placed = mmio32.allocate(size: request.size, alignment: alignment)
                case .memory64:
                    placed = mmio64 != nil ? mmio64?.allocate(size: request.size, alignment: alignment)
                                           : mmio32.allocate(size: request.size, alignment: alignment)
                }
                guard let placed else { throw .windowExhausted(kind: request.kind, size: request.size) }
                assigned[request.index] = placed
            }
            state.mmio32 = mmio32
            state.mmio64 = mmio64
            state.io = io
            device.attach(PCIAttachment(address: address, barAddresses: assigned, intx: intx))
            state.slots[slot] = device
            state.mappings[slot] = device.decodedBARs()
            return address
        }
    }

    func nextFreeSlot() -> Int? {
        state.withLock { state in (1..<PCIRootComplex.slotCount).first { state.slots[$0] == nil } }
    }

    func decodedBARs(of address: PCIDeviceAddress) -> [PCIBARMapping] {
        guard address.bus == 0, address.function == 0, Int(address.device) < PCIRootComplex.slotCount else { return [] }
        return state.withLock { $0.mappings[Int(address.device)] }
    }

    /// Only function 0 of bus 0 exists; other buses and functions are absent.
    private static func slot(of address: PCIDeviceAddress) -> Int? {
        guard address.bus == 0, address.function == 0, Int(address.device) < PCIRootComplex.slotCount else { return nil }
        return Int(address.device)
    }

    private static func accessIsValid(offset: Int, size: Int) -> Bool {
        [1, 2, 4].contains(size) && offset >= 0 && offset <= PCIConfigSpace.extendedSize - size
    }

    func configRead(_ address: PCIDeviceAddress, offset: Int, size: Int) -> UInt32 {
        let allOnes = UInt32(truncatingIfNeeded: (UInt64(1) << (8 * UInt64(max(0, min(size, 4))))) - 1)
        if let function = chipsetFunctions[address] {
            return Self.accessIsValid(offset: offset, size: size) ? function.configRead(offset: offset, size: size) : allOnes
        }
        guard let slot = Self.slot(of: address), Self.accessIsValid(offset: offset, size: size) else { return allOnes }
        // Config accesses are serialized by the state lock (devices never call back into the root).
        return state.withLock { state in state.slots[slot]?.configRead(offset: offset, size: size) ?? allOnes }
    }

    func configWrite(_ address: PCIDeviceAddress, offset: Int, size: Int, value: UInt32) {
        guard let slot = Self.slot(of: address), Self.accessIsValid(offset: offset, size: size) else { return }
        let changes: [(Int, UInt64?)] = state.withLock { state in
            guard let device = state.slots[slot] else { return [] }
            device.configWrite(offset: offset, size: size, value: value)
            let before = state.mappings[slot]
            let after = device.decodedBARs()
            guard before != after else { return [] }
            state.mappings[slot] = after
            // Report every BAR whose decoded address differs (moved, appeared or vanished).
            let indices = Set(before.map(\.index)).union(after.map(\.index)).sorted()
            return indices.compactMap { index in
                let old = before.first { $0.index == index }?.address
                let new = after.first { $0.index == index }?.address
                return old == new ? nil : (index, new)
            }
        }
        guard !changes.isEmpty, let observer = observer.withLock({ $0 }) else { return }
        for (index, newAddress) in changes { observer(address, index, newAddress) }
    }

    /// The device and BAR-relative offset of an access at `address`, if an enabled BAR covers it.
    func lookupBAR(address: UInt64, size: Int, memory: Bool) -> (any PCIDevice, Int, UInt64)? {
        state.withLock { state in
            for slot in state.slots.indices {
                guard let device = state.slots[slot] else { continue }
                for mapping in state.mappings[slot] where mapping.kind.isMemory == memory && mapping.covers(address, size: size) {
                    return (device, mapping.index, address - mapping.address)
                }
            }
            return nil
        }
    }
}
