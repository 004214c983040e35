import Devices
import GuestMemory

/// Snapshots of the function and the device behind it, taken and restored as a pair.
extension VirtioPCIDevice {
    /// The device's own state, or nil when it does not own queues. Take it together with `state`,
    /// with the vCPUs paused and the device's I/O thread stopped: the device assumes nothing runs
    /// `queueNotified` (or a backend callback) concurrently.
    public func captureDeviceState() -> VirtioDeviceState? {
        device.captureState()
    }

    /// Rebuilds the transport and the device together. When the driver had set DRIVER_OK the
    /// device owned its queues, so `deviceState` is required and is restored into the device with
    /// this function's interrupt path; otherwise it must be nil. With DEVICE_NEEDS_RESET also set,
    /// either activation had failed (nil: the device owns nothing) or a queue later faulted (the
    /// state names it): the device keeps serving its other queues until the driver resets it.
    ///
    /// Nothing touches the rings or raises an interrupt here: after inserting the function, the
    /// VMM calls `device.queueNotified(i)` for every queue to serve what was published meanwhile.
    public convenience init(restoring state: VirtioPCIState, deviceState: VirtioDeviceState?, device: any VirtioDevice,
                            memory: GuestMemory, msixController: any MSIXInterruptController) throws(VirtioPCIError) {
        try self.init(restoring: state, device: device, memory: memory, msixController: msixController)
        do { try state.common.validatePairing(with: deviceState) } catch { throw .state(error) }
        guard let deviceState else { return }
        do { try device.restoreState(deviceState, memory: memory, interrupt: signals) } catch { throw .deviceState(error) }
        // Also with NEEDS_RESET: the device's healthy queues still notify and complete (§2.1.2
        // leaves it to the driver when to reset).
        signals.state.withLock { $0.activated = true }
    }
}

extension VirtioPCICommonConfig {
    /// Checks that `deviceState` is what a device behind these registers would have captured.
    func validatePairing(with deviceState: VirtioDeviceState?) throws(DeviceStateError) {
        func refuse(_ problem: String) -> DeviceStateError {
            DeviceStateError(device: "virtio-pci", field: "device state", problem: problem)
        }
        let needsReset = status & VirtioStatus.deviceNeedsReset != 0
        guard let deviceState else {
            guard !driverOK || needsReset else { throw refuse("is missing, but the driver had set DRIVER_OK") }
            return
        }
        guard driverOK else { throw refuse("is present, but the driver had not set DRIVER_OK") }
        guard deviceState.negotiatedFeatures == driverFeatures else {
            throw refuse("has features 0x\(String(deviceState.negotiatedFeatures, radix: 16)), the driver accepted 0x\(String(driverFeatures, radix: 16))")
        }
        guard deviceState.queues.count == queues.count else {
            throw refuse("has \(deviceState.queues.count) queues, the function \(queues.count)")
        }
        // The queue registers are frozen from DRIVER_OK to reset (§4.1.4.3.2), so the device's
        // queues are exactly the enabled ones, as programmed.
        for (index, registers) in queues.enumerated() {
            let saved = deviceState.queues[index]
            guard saved != nil || !registers.enabled else { throw refuse("lacks queue \(index), which the driver enabled") }
            guard let saved else { continue }
            guard registers.enabled else { throw refuse("has queue \(index), which the driver never enabled") }
            guard saved.config == registers.config else { throw refuse("queue \(index) differs from the function's queue registers") }
        }
        // A faulted queue always sets DEVICE_NEEDS_RESET (§2.1.2).
        guard deviceState.faultedQueues.isEmpty || needsReset else {
            throw refuse("names faulted queues, but DEVICE_NEEDS_RESET is not set")
        }
    }
}
