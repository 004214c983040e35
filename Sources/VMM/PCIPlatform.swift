import Boot
import Devices
import GuestMemory
import KVM
import Storage
import Synchronization
import Virtio

/// The machine's PCI side: the root complex (0xCF8/0xCFC, ECAM, the 32-bit BAR window) and one
/// virtio-pci function per requested device. Each device gets an I/O thread; queue notifications
/// reach it through ioeventfds (no vCPU exit) and its interrupts leave through MSI-X irqfds.
final class PCIPlatform: @unchecked Sendable {
    /// A virtio function with the host plumbing around it.
    final class Function: @unchecked Sendable {
        let name: String
        let transport: VirtioPCIDevice
        let ioThread: IOThread
        /// One doorbell per queue, shared by the ioeventfd and the MMIO fallback path.
        let queueEvents: [EventFD]
        /// Guest-physical notify addresses with an ioeventfd attached now, per queue.
        let attachedNotify = Mutex<[UInt64?]>([])

        init(name: String, transport: VirtioPCIDevice) throws {
            self.name = name
            self.transport = transport
            ioThread = try IOThread(name: String(name.prefix(15)))
            queueEvents = try (0..<transport.queueCount).map { _ in try EventFD() }
            attachedNotify.withLock { $0 = Array(repeating: nil, count: transport.queueCount) }
        }
    }

    let root: PCIRootComplex
    let msi: KVMMSIRouter
    private(set) var functions: [Function] = []
    private(set) var blockDevices: [(options: DiskOptions, device: VirtioBlock)] = []
    /// Where each disk sits, in the VM's order.
    private var diskAddresses: [PCIDeviceAddress] = []

    /// The disks as firmware boot-order entries (fw_cfg `bootorder`), first disk first: QEMU's
    /// OpenFirmware path for a virtio-blk function, which SeaBIOS and OVMF both match.
    var bootDevicePaths: [String] {
        diskAddresses.map { "/pci@i0cf8/scsi@\(String($0.device, radix: 16))/disk@0,0" }
    }
    private(set) var networkDevices: [(name: String, device: VirtioNet)] = []
    private(set) var console: VirtioConsole?
    private(set) var entropy: VirtioEntropyDevice?
    /// One line per device for `vireo run --verbose`: what the guest gets and what backs it.
    private(set) var summary: [String] = []
    private var consoleCounter: CountingSerialOutput?
    private var entropyCounter: CountingEntropySource?
    private let vm: VirtualMachine
    private let log: @Sendable (String) -> Void

    /// Builds the PCI side over resolved host resources; with `restoring`, every function is
    /// rebuilt from its saved transport and device state instead of from power-on.
    init(vm: VirtualMachine, memory: GuestMemory, resources: MachineResources, pioBus: Bus, mmioBus: Bus,
         events: any MachineEventSink, consoleOutput: any SerialOutput,
         onConsoleInputSpace: (@Sendable () -> Void)?, restoring saved: [PCIFunctionState]? = nil,
         restoringRoot savedRoot: PCIRootComplex.SavedState? = nil,
         mmio32: Range<UInt64> = X86Layout.pciMMIO32Start..<X86Layout.pciMMIO32End, mmio64: Range<UInt64>? = nil,
         chipset: PCIChipset = .vireo, log: @escaping @Sendable (String) -> Void) throws {
        self.vm = vm
        self.log = log
        let options = resources.devices
        msi = KVMMSIRouter(vm: vm, onError: log)
        root = try PCIRootComplex(ecamBase: X86Layout.pciECAMBase, ecamSize: X86Layout.pciECAMSize,
                                  mmio32: mmio32, mmio64: mmio64, chipset: chipset, resetSink: events)
        try pioBus.insert(root.configPorts, base: PCIConfigPorts.basePort, length: PCIConfigPorts.portCount)
        try mmioBus.insert(root.ecam, base: X86Layout.pciECAMBase, length: X86Layout.pciECAMSize)
        try mmioBus.insert(root.mmio32Window, base: root.mmio32Window.base, length: root.mmio32Window.length)
        if let window = root.mmio64Window { try mmioBus.insert(window, base: window.base, length: window.length) }
        if let savedRoot { try root.restore(savedRoot) }
        if let saved, saved.count != options.deviceCount {
            throw MachineStateError.mismatch("the snapshot has \(saved.count) PCI functions, this machine \(options.deviceCount)")
        }
        /// The saved state of the function about to be added (same order as at capture).
        func savedFunction(_ name: String) throws -> PCIFunctionState? {
            guard let saved else { return nil }
            let state = saved[functions.count]
            guard state.name == name else {
                throw MachineStateError.mismatch("PCI function \(functions.count) is \(state.name) in the snapshot, \(name) here")
            }
            return state
        }

        for (index, disk) in options.disks.enumerated() {
            let image = resources.disks[index]
            let configuration = VirtioBlockConfiguration(readOnly: disk.readOnly,
                                                             serial: disk.serial ?? "vireo-disk\(index)")
            let device = try VirtioBlock(backend: image, configuration: configuration)
            blockDevices.append((disk, device))
            let name = "vblk\(index)"
            let function = try add(device, name: name, memory: memory, restoring: try savedFunction(name))
            diskAddresses.append(function.transport.address)
            summary.append("\(function.transport.address): virtio-blk \(disk.path), \(device.capacitySectors) sectors, "
                           + "\(device.isReadOnly ? "read-only" : "read-write"), serial \(configuration.serial)")
        }
        for (index, network) in options.networks.enumerated() {
            let backend = resources.networks[index]
            let mac = network.mac ?? Self.generatedMAC()
            let device = try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: mac))
            networkDevices.append((backend.hostName, device))
            let name = "vnet\(index)"
            let function = try add(device, name: name, memory: memory, restoring: try savedFunction(name))
            let backing = backend.summary
            let offloads = backend.offloads.isEmpty ? "none" : [
                backend.offloads.contains(.checksum) ? "csum" : nil, backend.offloads.contains(.tso4) ? "tso4" : nil,
                backend.offloads.contains(.tso6) ? "tso6" : nil,
            ].compactMap { $0 }.joined(separator: ",")
            summary.append("\(function.transport.address): virtio-net on \(backing), mac "
                           + mac.map { String($0, radix: 16).leftPadded(to: 2) }.joined(separator: ":") + ", offloads \(offloads)")
            // Level-triggered poll: the handler drains the backend (frames without a buffer are dropped).
            function.ioThread.add(fd: backend.pollDescriptor) { [device] in
                while device.backendReadable() {}
            }
        }
        if options.virtioConsole {
            let counter = CountingSerialOutput(consoleOutput)
            let device = VirtioConsole(output: counter, onInputSpace: onConsoleInputSpace)
            console = device
            consoleCounter = counter
            let function = try add(device, name: "vcon", memory: memory, restoring: try savedFunction("vcon"))
            summary.append("\(function.transport.address): virtio-console (hvc0)")
        }
        if options.entropy {
            let counter = CountingEntropySource()
            let device = VirtioEntropyDevice(source: counter.source())
            entropy = device
            entropyCounter = counter
            let function = try add(device, name: "vrng", memory: memory, restoring: try savedFunction("vrng"))
            summary.append("\(function.transport.address): virtio-rng from the host's getrandom")
        }
        root.setBARObserver { [weak self] address, _, _ in self?.moveNotifyEventFDs(of: address) }
    }

    /// Puts `device` behind a virtio-pci transport in the next free slot and wires its doorbells.
    @discardableResult
    private func add(_ device: any VirtioDevice, name: String, memory: GuestMemory, restoring saved: PCIFunctionState?) throws -> Function {
        let transport: VirtioPCIDevice
        if let saved {
            transport = try VirtioPCIDevice(restoring: saved.transport, deviceState: saved.device, device: device,
                                            memory: memory, msixController: msi)
        } else {
            transport = try VirtioPCIDevice(device: device, memory: memory, msixController: msi)
        }
        guard let slot = root.nextFreeSlot() else { throw ConfigError.tooManyDevices(functions.count + 1, maximum: DeviceOptions.maximumDevices) }
        let gsi = ACPIPlatform.pciInterruptGSI(slot: UInt8(slot), pin: 0)  // INTA
        let intx = PCIINTxWiring(line: KVMInterruptLine(vm: vm, gsi: gsi), irq: UInt8(gsi))
        _ = try root.insert(transport, slot: slot, intx: intx)
        let function = try Function(name: name, transport: transport)
        let log = self.log
        function.ioThread.onSourceFailed = { fd in log("\(name): host fd \(fd) reported an error or hang-up; no longer watched") }
        // Notifications that miss the ioeventfd (other widths, before it is attached) take the
        // same doorbell, so the device only ever runs on its I/O thread.
        let events = function.queueEvents
        transport.setNotificationHandler { queue in
            if events.indices.contains(queue) { events[queue].signal() }
        }
        for (queue, event) in events.enumerated() {
            function.ioThread.add(fd: event.raw) { [device] in
                if event.consume() != nil { device.queueNotified(queue) }
            }
        }
        functions.append(function)
        attachNotifyEventFDs(function)
        return function
    }

    /// Linux writes the 16-bit queue index to the queue's notify address (virtio_pci_modern).
    static let notifyWriteLength: UInt32 = 2

    private func attachNotifyEventFDs(_ function: Function) {
        function.attachedNotify.withLock { attached in
            for queue in 0..<function.queueEvents.count {
                let wanted = function.transport.notifyAddress(queue: queue)
                guard attached[queue] != wanted else { continue }
                if let old = attached[queue] {
                    try? vm.detachIoeventfd(function.queueEvents[queue], address: old, length: Self.notifyWriteLength)
                    attached[queue] = nil
                }
                if let wanted {
                    do {
                        try vm.attachIoeventfd(function.queueEvents[queue], address: wanted, length: Self.notifyWriteLength)
                        attached[queue] = wanted
                    } catch {
                        // The MMIO path still delivers the notification, just through the vCPU thread.
                        log("\(function.name): no ioeventfd for queue \(queue) at 0x\(String(wanted, radix: 16)): \(error)")
                    }
                }
            }
        }
    }

    /// The guest moved a BAR (or toggled memory decoding): follow it with the ioeventfds.
    private func moveNotifyEventFDs(of address: PCIDeviceAddress) {
        for function in functions where function.transport.address == address {
            attachNotifyEventFDs(function)
        }
    }

    var statistics: DeviceStatistics {
        var result = DeviceStatistics()
        result.disks = blockDevices.map { disk in
            let s = disk.device.statistics
            return .init(path: disk.options.path, readRequests: s.readRequests, readBytes: s.readBytes,
                         writeRequests: s.writeRequests, writeBytes: s.writeBytes, flushRequests: s.flushRequests,
                         errors: s.errors)
        }
        result.nets = networkDevices.map { net in
            let s = net.device.statistics
            return .init(interface: net.name, rxPackets: s.rxPackets, rxBytes: s.rxBytes, rxDropped: s.rxDropped,
                         txPackets: s.txPackets, txBytes: s.txBytes, txErrors: s.txErrors)
        }
        result.console = consoleCounter.map { .init(txBytes: $0.count.load(ordering: .relaxed)) }
        result.rng = entropyCounter.map { .init(bytes: $0.count.load(ordering: .relaxed)) }
        return result
    }

    func start() throws {
        for function in functions where !function.ioThread.start() {
            throw ConfigError.unreadableFile(kind: "I/O thread", path: function.name, reason: "cannot start a thread")
        }
    }

    /// Stops the device threads. Nothing a device does runs after this returns (requests are
    /// synchronous on these threads), which is what a snapshot needs; `start` brings them back.
    func stop() {
        for function in functions { function.ioThread.stop() }
    }

    /// Each function's transport and device state; only while the vCPUs are parked and the device
    /// threads stopped, so that nothing moves underneath.
    func captureState() -> [PCIFunctionState] {
        functions.map { PCIFunctionState(name: $0.name, transport: $0.transport.state, device: $0.transport.captureDeviceState()) }
    }

    /// After a restore: look at every queue once, since notifications the guest sent just before
    /// the snapshot were never seen by this process (a notification with nothing new is harmless).
    func kickRestoredQueues() {
        for function in functions {
            for event in function.queueEvents { event.signal() }
        }
    }

    /// A locally administered unicast MAC in QEMU's 52:54:00 range, random per VM start.
    static func generatedMAC() -> [UInt8] {
        [0x52, 0x54, 0x00] + (0..<3).map { _ in UInt8.random(in: 0...255) }
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
