import Devices
import Foundation
import GuestMemory
import Testing
@testable import Virtio

@Suite struct TransportStateTests {
    /// A running function: MSI-X on, queue 0 live on vector 1, BAR moved by the guest.
    func runningDriver() throws -> VirtioPCIDriver<TransportFakeDevice> {
        let driver = try VirtioPCIDriver()
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) & ~0x2)
        driver.setConfig(0x10, size: 4, 0xD000_0000)
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) | 0x2)
        driver.negotiate(VirtioFeature.version1)
        driver.enableMSIX()
        driver.programVector(1, address: 0xFEE0_3000, data: 0x61)
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16), vector: 1)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        return driver
    }

    func roundTrip(_ state: VirtioPCIState) throws -> VirtioPCIState {
        try JSONDecoder().decode(VirtioPCIState.self, from: JSONEncoder().encode(state))
    }

    @Test func restoredFunctionKeepsBARsRoutesAndOwnership() throws {
        let original = try runningDriver()
        let state = try roundTrip(original.transport.state)
        #expect(state == original.transport.state)

        let device = TransportFakeDevice()
        let controller = TransportMSIXRecorder()
        let root = try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: 0xC000_0000..<0xE000_0000)
        let restored = try VirtioPCIDevice(restoring: state, device: device, memory: original.memory, msixController: controller)
        #expect(controller.calls.isEmpty)   // routes need the function's address: they come at insertion
        try root.insert(restored, slot: 1, intx: nil)
        #expect(controller.calls == ["route 1 fee03000/97"])
        #expect(restored.notifyAddress(queue: 0) == 0xD000_3000)
        #expect(restored.status == original.status)
        // The function is live: a kick reaches the device, and its interrupts go out on vector 1.
        root.mmio32Window.write(offset: 0xD000_3000 - 0xC000_0000, size: 2, value: 0)
        #expect(device.record.withLock { $0.notified } == [0])
        restored.interrupt.signalQueue(0)
        #expect(controller.calls.last == "trigger 1")
    }

    @Test func tamperedStatesAreRefused() throws {
        let original = try runningDriver()
        let good = original.transport.state
        func refused(_ mutate: (inout VirtioPCIState) -> Void, device: TransportFakeDevice = TransportFakeDevice()) -> Bool {
            var state = good
            mutate(&state)
            do {
                _ = try VirtioPCIDevice(restoring: state, device: device, memory: original.memory, msixController: TransportMSIXRecorder())
                return false
            } catch {
                if case .state = error { return true }
                return false
            }
        }
        #expect(!refused { _ in })
        #expect(refused { $0.config.setRaw(0x8086, at: 0, size: 2) })                 // vendor ID
        #expect(refused { $0.config.setRaw(0x0, at: 0x10, size: 1) })                 // BAR type bits
        #expect(refused { $0.config.setRaw(0x0, at: 0x41, size: 1) })                 // capability chain
        #expect(refused { $0.common.queues[0].size = 32 })                            // above max 16
        #expect(refused { $0.common.queues[1].msixVector = 3 })                       // no such vector
        #expect(refused { $0.common.configMSIXVector = 7 })
        #expect(refused { $0.common.status = VirtioStatus.driverOK })                 // DRIVER_OK w/o FEATURES_OK
        #expect(refused { $0.common.driverFeatures |= 1 << 7 })                       // never offered
        #expect(refused { $0.isr = 0x80 })
        #expect(refused { $0.msix = (try? MSIXTable(vectorCount: 2)) ?? $0.msix })
        // The snapshot of a two-queue device does not fit a one-queue device.
        #expect(refused({ _ in }, device: TransportFakeDevice(queueMaxSizes: [16])))
    }
}
