import Devices
import Synchronization

/// Everything the virtio-pci function keeps behind its lock.
struct VirtioPCITransportState: Sendable {
    var config: PCIConfigSpace
    var common: VirtioPCICommonConfig
    var msix: MSIXTable
    /// §4.1.4.5: bit 0 queue interrupt, bit 1 configuration change; cleared by reading.
    var isr: UInt8 = 0
    var intxLevel = false
    var address = PCIDeviceAddress(device: 0)
    var intx: PCIINTxWiring?
    /// The device owns its queues (DRIVER_OK accepted and activate succeeded or is running).
    var activated = false
    var lastError: String?
}

/// The interrupt path handed to the device at activation: queue i goes to its MSI-X vector (or
/// INTx + ISR bit 0 while MSI-X is off), configuration changes to the config vector (or ISR bit 1).
/// It holds the transport state, not the transport, so the device does not keep its owner alive.
final class VirtioPCISignals: VirtioInterrupt {
    static let isrQueue: UInt8 = 1 << 0
    static let isrConfig: UInt8 = 1 << 1

    let state: Mutex<VirtioPCITransportState>
    let controller: any MSIXInterruptController

    init(state: VirtioPCITransportState, controller: any MSIXInterruptController) {
        self.state = Mutex(state)
        self.controller = controller
    }

    func signalQueue(_ index: Int) {
        state.withLock { state in
            // After a reset the device may still finish in-flight work; the driver must not hear of it.
            guard state.activated, state.common.queues.indices.contains(index) else { return }
            raise(&state, vector: state.common.queues[index].msixVector, isrBit: Self.isrQueue)
        }
    }

    func signalConfigChange() {
        state.withLock { state in
            guard state.common.status != 0 else { return }
            // §4.1.4.3: config_generation changes whenever the configuration may have changed.
            state.common.configGeneration &+= 1
            raise(&state, vector: state.common.configMSIXVector, isrBit: Self.isrConfig)
        }
    }

    func signalNeedsReset() {
        state.withLock { state in
            guard state.common.status != 0 else { return }
            needsReset(&state, because: nil)
        }
    }

    /// §2.1.2: DEVICE_NEEDS_RESET plus a configuration change notification.
    func needsReset(_ state: inout VirtioPCITransportState, because error: String?) {
        if let error { state.lastError = error }
        state.common.setNeedsReset()
        raise(&state, vector: state.common.configMSIXVector, isrBit: Self.isrConfig)
    }

    private func raise(_ state: inout VirtioPCITransportState, vector: UInt16, isrBit: UInt8) {
        if state.msix.enabled {
            // §4.1.5.1.2: NO_VECTOR means the driver wants no interrupt for this source.
            guard vector != virtioNoVector else { return }
            controller.apply(state.msix.signal(Int(vector)), device: state.address)
        } else {
            state.isr |= isrBit
            updateINTx(&state)
        }
    }

    /// Drives INTA# from the ISR, unless INTx is disabled or MSI-X took over (§6.8.2: a function
    /// with MSI-X enabled must not use INTx). Status bit 3 shows the request either way.
    func updateINTx(_ state: inout VirtioPCITransportState) {
        state.config.setInterruptStatus(state.isr != 0)
        let level = state.isr != 0 && !state.msix.enabled && !state.config.intxDisabled
        guard level != state.intxLevel else { return }
        state.intxLevel = level
        state.intx?.line.setLevel(level)
    }
}
