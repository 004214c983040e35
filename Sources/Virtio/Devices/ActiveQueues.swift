import Devices
import GuestMemory

/// What a device owns between DRIVER_OK and reset: guest memory, its queues, the interrupt path.
/// Every device serves its queues through `service`, so faults, notification suppression and
/// interrupts are handled one way for all of them.
struct ActiveQueues: Sendable {
    let memory: GuestMemory
    let interrupt: any VirtioInterrupt
    let negotiatedFeatures: UInt64
    private var queues: [SplitVirtqueue?]
    /// Queues that faulted: not touched again until reset (§2.1.2, DEVICE_NEEDS_RESET).
    private var faulted: Set<Int> = []

    /// Takes over the activation's queues; the first `required` ones must be enabled.
    init(_ activation: VirtioActivation, required: Int) throws(VirtioDeviceError) {
        for index in 0 ..< required {
            guard index < activation.queues.count, activation.queues[index] != nil else { throw .missingQueue(index) }
        }
        memory = activation.memory
        interrupt = activation.interrupt
        negotiatedFeatures = activation.negotiatedFeatures
        queues = activation.queues
    }

    /// Rebuilds what `state` captured for `device`. A snapshot file is untrusted, so every field
    /// is checked as the driver's own settings were at DRIVER_OK; `inputCapacity` bounds the
    /// pending host input (0 for devices that have none).
    init(restoring state: VirtioDeviceState, for device: some VirtioDevice, memory: GuestMemory,
         interrupt: any VirtioInterrupt, required: Int, inputCapacity: Int = 0) throws(VirtioDeviceError) {
        func refuse(_ field: String, _ problem: String) -> VirtioDeviceError {
            .state(DeviceStateError(device: device.deviceType.name, field: field, problem: problem))
        }
        let maxSizes = device.queueMaxSizes
        guard state.queues.count == maxSizes.count else {
            throw refuse("queues", "has \(state.queues.count) entries for a device with \(maxSizes.count) queues")
        }
        // §2.2: a driver can only have accepted features the device offered.
        let unoffered = state.negotiatedFeatures & ~device.deviceFeatures
        guard unoffered == 0 else { throw refuse("negotiated features", "include 0x\(String(unoffered, radix: 16)), never offered") }
        guard state.pendingInput.count <= inputCapacity else {
            throw refuse("pending input", "has \(state.pendingInput.count) bytes, more than the \(inputCapacity) this device buffers")
        }
        // §2.7.10: with EVENT_IDX negotiated every queue uses used_event/avail_event, without it none does.
        let eventIdx = state.negotiatedFeatures & VirtioFeature.ringEventIndex != 0
        var queues: [SplitVirtqueue?] = []
        for (index, saved) in state.queues.enumerated() {
            guard let saved else { queues.append(nil); continue }
            // §4.1.4.3.2: the driver cannot set a size above the device's maximum.
            guard saved.config.size <= maxSizes[index] else { throw refuse("queue \(index) size", "\(saved.config.size) is above the maximum \(maxSizes[index])") }
            guard saved.eventIdx == eventIdx else { throw refuse("queue \(index) event index", "disagrees with the negotiated features") }
            do { queues.append(try SplitVirtqueue(restoring: saved, memory: memory)) } catch {
                throw refuse("queue \(index)", error.description)
            }
        }
        var faulted: Set<Int> = []
        for index in state.faultedQueues {
            // Only an enabled queue is ever serviced, so only an enabled queue can have faulted.
            guard queues.indices.contains(index), queues[index] != nil else { throw refuse("faulted queues", "name \(index), not an enabled queue") }
            guard faulted.insert(index).inserted else { throw refuse("faulted queues", "name \(index) twice") }
        }
        try self.init(VirtioActivation(memory: memory, queues: queues, negotiatedFeatures: state.negotiatedFeatures, interrupt: interrupt),
                      required: required)
        self.faulted = faulted
    }

    /// The queues for a snapshot; a device adds its own extras (pending input, ...).
    var state: VirtioDeviceState {
        VirtioDeviceState(negotiatedFeatures: negotiatedFeatures, queues: queues.map { $0?.state }, faultedQueues: faulted.sorted())
    }

    func negotiated(_ feature: UInt64) -> Bool { negotiatedFeatures & feature == feature }

    /// Whether queue `index` exists, is enabled and has not faulted.
    func isServiceable(_ index: Int) -> Bool {
        index >= 0 && index < queues.count && queues[index] != nil && !faulted.contains(index)
    }

    /// Runs `body` on queue `index` and then notifies the driver if the body used any buffers and
    /// the driver wants to hear about it (§2.7.7). An error thrown by the body faults the queue and
    /// signals needs-reset; the fault is returned so the device can record it. Buffers used before
    /// the fault are still announced, since the driver may be waiting on them.
    mutating func service(_ index: Int, _ body: (inout SplitVirtqueue, GuestMemory) throws -> Void) -> VirtioDeviceFault? {
        guard isServiceable(index), var queue = queues[index] else { return nil }
        let usedBefore = queue.state.usedIdx
        var fault: VirtioDeviceFault?
        do {
            try body(&queue, memory)
        } catch let error as VirtqueueError {
            fault = .queue(index: index, error)
        } catch let error as MalformedRequest {
            fault = .malformedRequest(queue: index, error.reason)
        } catch {
            fault = .malformedRequest(queue: index, "\(error)")
        }
        if queue.state.usedIdx != usedBefore {
            do {
                if try queue.needsNotification(memory: memory) { interrupt.signalQueue(index) }
            } catch {
                fault = fault ?? .queue(index: index, error)
            }
        }
        queues[index] = queue
        if fault != nil {
            faulted.insert(index)
            interrupt.signalNeedsReset()
        }
        return fault
    }
}
