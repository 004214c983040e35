import Devices
import KVM

/// Everything needed to rebuild a running machine, as plain Codable values: the groundwork for
/// snapshots and live migration (which wrap it in one versioned, checksummed envelope).
public struct MachineState: Codable, Equatable, Sendable {
    public var vcpus: [VCPUState]
    public var platform: VMPlatformState
    public var devices: DeviceStates

    public struct DeviceStates: Codable, Equatable, Sendable {
        public var serial: Serial16550State
        public var i8042: I8042State
        public var rtc: CMOSRTCState
        public var fwCfg: FwCfgState
        public var acpiPM: ACPIPMState
    }
}

extension Machine {
    /// Captures vCPUs, in-kernel irqchip/PIT/clock and device state; the machine must be paused so
    /// that all of it describes one instant. Machines with virtio devices are refused for now: the
    /// transports' state is Codable, but the devices' in-flight queue positions are not captured yet.
    public func captureState() throws -> MachineState {
        guard isPaused else { throw MachineError.notPaused }
        guard pci.functions.isEmpty else { throw MachineError.stateCaptureUnsupported("virtio devices") }
        return MachineState(
            vcpus: try captureVCPUStates(),
            platform: try vm.captureState(),
            devices: .init(serial: serial.state, i8042: i8042.state, rtc: rtc.state, fwCfg: fwCfg.state,
                           acpiPM: acpiPM.state))
    }
}
