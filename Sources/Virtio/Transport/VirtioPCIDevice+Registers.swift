import Devices
import GuestMemory

/// The BAR's structures and the device lifecycle they drive. Callers hold `access`.
extension VirtioPCIDevice {
    private enum Region {
        case common(UInt64), isr(UInt64), deviceConfig(UInt64), notify(UInt64), msixTable(UInt64), msixPBA(UInt64)
    }

    /// The structure an access falls in; an access must lie wholly inside one structure.
    private func region(offset: UInt64, size: Int) -> Region? {
        typealias Layout = VirtioPCILayout
        let table = msixTableBytes, pba = msixPBABytes
        let regions: [(UInt32, UInt64, (UInt64) -> Region)] = [
            (Layout.commonOffset, UInt64(Layout.commonLength), Region.common),
            (Layout.isrOffset, UInt64(Layout.isrLength), Region.isr),
            (Layout.deviceConfigOffset, UInt64(Layout.deviceConfigLength), Region.deviceConfig),
            (Layout.notifyOffset, UInt64(Layout.notifyLength), Region.notify),
            (Layout.msixTableOffset, table, Region.msixTable),
            (Layout.msixPBAOffset, pba, Region.msixPBA),
        ]
        guard size > 0 else { return nil }
        for (start, length, make) in regions where offset >= UInt64(start) {
            let within = offset - UInt64(start)
            if within < length, UInt64(size) <= length - within { return make(within) }
        }
        return nil
    }

    func readRegion(offset: UInt64, size: Int) -> UInt64 {
        switch region(offset: offset, size: size) {
        case let .common(within)?:
            return signals.state.withLock { $0.common.read(offset: within, size: size) }
        case let .isr(within)?:
            // §4.1.4.5.1: reading the ISR status clears it (and deasserts INTx).
            guard within == 0 else { return 0 }
            return signals.state.withLock { state in
                let value = state.isr
                state.isr = 0
                signals.updateINTx(&state)
                return UInt64(value)
            }
        case let .deviceConfig(within)?:
            return device.readConfig(offset: Int(within), size: size) & pciAccessMask(size)
        case let .msixTable(within)?:
            return signals.state.withLock { $0.msix.readTable(offset: within, size: size) }
        case let .msixPBA(within)?:
            return signals.state.withLock { $0.msix.readPBA(offset: within, size: size) }
        case .notify?, nil:
            return 0
        }
    }

    func writeRegion(offset: UInt64, size: Int, value: UInt64) {
        switch region(offset: offset, size: size) {
        case let .common(within)?:
            let event = signals.state.withLock { $0.common.write(offset: within, size: size, value: value) }
            switch event {
            case .reset?: resetDevice()
            case .driverOK?: activateDevice()
            case .needsReset?: signals.state.withLock { signals.needsReset(&$0, because: "driver set DRIVER_OK without FEATURES_OK") }
            case nil: break
            }
        case let .deviceConfig(within)?:
            device.writeConfig(offset: Int(within), size: size, value: value & pciAccessMask(size))
        case let .notify(within)?:
            // §4.1.4.4: the driver writes the queue index at the queue's own notification address.
            guard within % UInt64(VirtioPCILayout.notifyOffMultiplier) == 0 else { return }
            notify(queue: Int(within / UInt64(VirtioPCILayout.notifyOffMultiplier)))
        case let .msixTable(within)?:
            signals.state.withLock { state in
                signals.controller.apply(state.msix.writeTable(offset: within, size: size, value: value), device: state.address)
            }
        case .isr?, .msixPBA?, nil:
            break   // read-only
        }
    }

    private func notify(queue: Int) {
        let deliver = signals.state.withLock { $0.activated && $0.common.queues.indices.contains(queue) }
        guard deliver else { return }
        if let handler = notificationHandler.withLock({ $0 }) {
            handler(queue)
        } else {
            device.queueNotified(queue)
        }
    }

    /// §2.4 / §4.1.4.3.1: status 0 resets the device and every transport register the driver set;
    /// vectors return to NO_VECTOR. The MSI-X table belongs to the PCI function and survives.
    private func resetDevice() {
        // Stop forwarding interrupts first so in-flight device work cannot reach the driver.
        signals.state.withLock { $0.activated = false }
        device.reset()
        signals.state.withLock { state in
            state.common.reset()
            state.isr = 0
            state.lastError = nil
            signals.updateINTx(&state)
        }
    }

    /// DRIVER_OK: build a queue for every enabled one and hand them to the device. Anything the
    /// driver got wrong becomes DEVICE_NEEDS_RESET (§2.1.2), never a crash.
    private func activateDevice() {
        let (registers, features) = signals.state.withLock { ($0.common.queues, $0.common.driverFeatures) }
        let eventIdx = features & VirtioFeature.ringEventIndex != 0
        var queues: [SplitVirtqueue?] = []
        for (index, queue) in registers.enumerated() {
            guard queue.enabled else { queues.append(nil); continue }
            do {
                queues.append(try SplitVirtqueue(config: queue.config, eventIdx: eventIdx, memory: memory))
            } catch {
                signals.state.withLock { signals.needsReset(&$0, because: "queue \(index): \(error)") }
                return
            }
        }
        signals.state.withLock { $0.activated = true }
        do {
            try device.activate(VirtioActivation(memory: memory, queues: queues, negotiatedFeatures: features, interrupt: signals))
        } catch {
            signals.state.withLock { state in
                state.activated = false
                signals.needsReset(&state, because: "activation failed: \(error)")
            }
        }
    }
}
