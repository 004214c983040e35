import Devices
import Foundation
import GuestMemory
import Testing
@testable import Virtio

/// The function and its device restored as a pair (`VirtioPCIDevice(restoring:deviceState:...)`):
/// a real virtio-rng behind the transport carries on where it stopped, and a device state that
/// does not belong to the function is refused with a clear error, leaving the device inactive.
@Suite struct TransportDeviceStateTests {
    typealias EntropyDriver = VirtioPCIDriver<VirtioEntropyDevice>

    static func source(_ value: UInt8) -> VirtioEntropyDevice.EntropySource {
        { bytes in bytes = [UInt8](repeating: value, count: bytes.count) }
    }

    /// A guest that moved the BAR, turned MSI-X on with queue 0 on vector 1, negotiated EVENT_IDX,
    /// had two requests served and published a third without kicking.
    func runningEntropy() throws -> (driver: EntropyDriver, queue: MockDriverQueue, heads: [UInt16]) {
        let driver = try EntropyDriver(device: VirtioEntropyDevice(source: Self.source(0x11)))
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) & ~0x2)
        driver.setConfig(0x10, size: 4, 0xD000_0000)
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) | 0x2)
        #expect(driver.negotiate(VirtioFeature.version1 | VirtioFeature.ringEventIndex))
        driver.enableMSIX()
        driver.programVector(1, address: 0xFEE0_3000, data: 0x61)
        let queue = try MockDriverQueue(memory: driver.memory, size: 16)
        driver.setUpQueue(0, queue, vector: 1)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        var heads: [UInt16] = []
        for index in 0 ..< 3 {
            heads.append(try queue.addChain([.writable(0x8000 + 0x100 * UInt64(index), 16)]))
            try queue.publish(heads[index])
            if index < 2 { kick(driver) }
        }
        return (driver, queue, heads)
    }

    func kick(_ driver: EntropyDriver) {
        driver.barWrite(driver.transport.notifyAddress(queue: 0) ?? 0, size: 2, 0)
    }

    func roundTrip<T: Codable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
    }

    @Test func aRestoredFunctionAndDeviceCarryOn() throws {
        let (driver, queue, heads) = try runningEntropy()
        let state = try roundTrip(driver.transport.state)
        let deviceState = try #require(try roundTrip(driver.transport.captureDeviceState()))
        #expect(deviceState.queues[0]?.usedIdx == 2 && deviceState.queues[0]?.lastAvailIdx == 2)

        let memory = try copyOf(driver.memory)
        let device = VirtioEntropyDevice(source: Self.source(0x22))
        let controller = TransportMSIXRecorder()
        let restored = try VirtioPCIDevice(restoring: state, deviceState: deviceState, device: device, memory: memory,
                                           msixController: controller)
        #expect(controller.calls.isEmpty)   // restoring raises nothing before the function is attached
        let root = try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: 0xC000_0000..<0xE000_0000)
        try root.insert(restored, slot: 1, intx: nil)
        #expect(restored.captureDeviceState() == deviceState)

        let guestQueue = MockDriverQueue(continuing: queue, in: memory)
        try guestQueue.setUsedEvent(2)
        for index in 0 ..< restored.queueCount { restored.device.queueNotified(index) }
        #expect(try guestQueue.usedIdx() == 3)
        #expect(controller.calls.last == "trigger 1")
        // A guest kick through the restored BAR reaches the restored device.
        let next = try guestQueue.addChain([.writable(0x8300, 16)])
        try guestQueue.publish(next)
        root.mmio32Window.write(offset: 0xD000_3000 - 0xC000_0000, size: 2, value: 0)
        #expect(try guestQueue.usedIdx() == 4)
        #expect(try (0 ..< 4).map { UInt16(try guestQueue.usedElement($0).id) } == heads + [next])
        for (index, fill) in [0x11, 0x11, 0x22, 0x22].enumerated() {
            #expect(try memory.readBytes(at: GuestAddress(0x8000 + 0x100 * UInt64(index)), count: 16) == [UInt8](repeating: UInt8(fill), count: 16))
        }
        #expect(try queue.usedIdx() == 2)   // the old machine saw none of it
    }

    /// Restores with a fresh virtio-rng; returns the error, after checking the device stayed inactive.
    func refusal(_ state: VirtioPCIState, _ deviceState: VirtioDeviceState?, memory: GuestMemory) -> VirtioPCIError? {
        let device = VirtioEntropyDevice()
        do {
            _ = try VirtioPCIDevice(restoring: state, deviceState: deviceState, device: device, memory: memory,
                                    msixController: TransportMSIXRecorder())
            return nil
        } catch {
            #expect(device.captureState() == nil)
            return error
        }
    }

    func transportProblem(_ error: VirtioPCIError?) -> String? {
        guard case let .state(stateError)? = error, stateError.field == "device state" else { return nil }
        return stateError.problem
    }

    @Test func deviceStatesThatDoNotBelongToTheFunctionAreRefused() throws {
        let (driver, _, _) = try runningEntropy()
        let state = driver.transport.state
        let good = try #require(driver.transport.captureDeviceState())
        let memory = driver.memory
        func refused(_ mutate: (inout VirtioDeviceState) -> Void) -> VirtioPCIError? {
            var deviceState = good
            mutate(&deviceState)
            return refusal(state, deviceState, memory: memory)
        }
        #expect(refusal(state, good, memory: memory) == nil)
        #expect(transportProblem(refusal(state, nil, memory: memory)) == "is missing, but the driver had set DRIVER_OK")
        let idle = try EntropyDriver(device: VirtioEntropyDevice()).transport.state
        #expect(refusal(idle, nil, memory: memory) == nil)
        #expect(transportProblem(refusal(idle, good, memory: memory)) == "is present, but the driver had not set DRIVER_OK")
        #expect(transportProblem(refused { $0.negotiatedFeatures = VirtioFeature.version1 })?.hasPrefix("has features 0x100000000") == true)
        #expect(transportProblem(refused { $0.queues.append(nil) }) == "has 2 queues, the function 1")
        #expect(transportProblem(refused { $0.queues = [nil] }) == "lacks queue 0, which the driver enabled")
        #expect(transportProblem(refused { $0.queues[0]?.config.descTable = GuestAddress(0x3000) }) == "queue 0 differs from the function's queue registers")
        #expect(transportProblem(refused { $0.faultedQueues = [0] }) == "names faulted queues, but DEVICE_NEEDS_RESET is not set")
        // What only the device can judge comes back as its own error.
        guard case let .deviceState(.state(inFlight))? = refused({ $0.queues[0]?.lastAvailIdx &+= 17 }) else {
            Issue.record("17 chains in flight on a 16-entry queue were accepted")
            return
        }
        #expect(inFlight.device == "virtio-rng" && inFlight.field == "queue 0")
        guard case let .deviceState(.state(input))? = refused({ $0.pendingInput = [0x41] }) else {
            Issue.record("pending input for a virtio-rng was accepted")
            return
        }
        #expect(input.field == "pending input")
    }

    /// DRIVER_OK with DEVICE_NEEDS_RESET: a faulted queue is restored as faulted, and a function
    /// whose activation failed (no device state) is restored with an inactive device.
    @Test func needsResetFunctionsRestoreWithOrWithoutDeviceState() throws {
        let (driver, queue, _) = try runningEntropy()
        try queue.publish(99)   // a head beyond the queue
        kick(driver)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        let deviceState = try #require(driver.transport.captureDeviceState())
        #expect(deviceState.faultedQueues == [0])
        let memory = try copyOf(driver.memory)
        let device = VirtioEntropyDevice()
        let restored = try VirtioPCIDevice(restoring: driver.transport.state, deviceState: deviceState, device: device,
                                           memory: memory, msixController: TransportMSIXRecorder())
        restored.device.queueNotified(0)
        #expect(device.captureState() == deviceState)
        // The kick before the fault served the third request; the faulted queue serves nothing more.
        #expect(try MockDriverQueue(continuing: queue, in: memory).usedIdx() == 3)

        let failed = try EntropyDriver(device: VirtioEntropyDevice())
        failed.negotiate(VirtioFeature.version1)
        failed.setUpQueue(0, try MockDriverQueue(memory: failed.memory, size: 12))   // not a power of two (§2.7)
        failed.setStatus(failed.status | VirtioStatus.driverOK)
        #expect(failed.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(failed.transport.captureDeviceState() == nil)
        #expect(refusal(failed.transport.state, nil, memory: failed.memory) == nil)
    }
}
