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
