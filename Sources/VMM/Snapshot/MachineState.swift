import Devices
import KVM
import Virtio

/// Everything needed to rebuild a running machine, as plain Codable values: the payload of a
/// snapshot file and, later, of a migration stream. Guest RAM travels beside it, not in it.
public struct MachineState: Codable, Equatable, Sendable {
    public var vcpus: [VCPUState]
    public var platform: VMPlatformState
    public var devices: DeviceStates
    /// One entry per virtio-pci function, in slot order.
    public var pci: [PCIFunctionState]
    /// The PCI root's own: the 0xCF8 latch and the host bridge's configuration space.
    public var pciRoot: PCIRootComplex.SavedState

    public struct DeviceStates: Codable, Equatable, Sendable {
        public var serial: Serial16550State
        public var i8042: I8042State
        public var rtc: CMOSRTCState
        public var fwCfg: FwCfgState
        public var acpiPM: ACPIPMState
        /// A UEFI machine's variable store (absent for others, and in snapshots made before it).
        public var flash: PFlashState?
    }
}

/// A virtio-pci function: its transport registers and the device's queues and extras.
public struct PCIFunctionState: Codable, Equatable, Sendable {
    /// vblk0, vnet0, vcon, vrng: checked on restore against the function built in that position.
    public var name: String
    public var transport: VirtioPCIState
    /// nil while the driver has not set DRIVER_OK (or after a reset).
    public var device: VirtioDeviceState?
}

/// A saved state that does not fit the machine it is being restored into.
public enum MachineStateError: Error, Equatable, CustomStringConvertible {
    case mismatch(String)

    public var description: String {
        switch self {
        case let .mismatch(what): return "snapshot does not fit this machine: \(what)"
        }
    }
}

extension Machine {
    /// Captures vCPUs (each on its own thread, through the vCPU channel), in-kernel
    /// irqchip/PIT/clock, the legacy devices and every virtio function. The vCPUs must be parked
    /// and the device threads stopped (`pause()`, then `quiesceDevices()`), so that all of it
    /// describes one instant.
    public func captureState() throws -> MachineState {
        guard isPaused else { throw MachineError.notPaused }
        guard devicesQuiesced else { throw MachineError.devicesRunning }
        return MachineState(
            vcpus: try captureVCPUStates(),
            platform: try vm.captureState(),
            devices: .init(serial: serial.state, i8042: i8042.state, rtc: rtc.state, fwCfg: fwCfg.state,
                           acpiPM: acpiPM.state, flash: firmwareVariables?.flash.state),
            pci: pci.captureState(),
            pciRoot: pci.root.savedState)
    }
}
