import Devices
import GuestMemory
import Testing
@testable import Virtio

@Suite struct TransportInterruptTests {
    /// A driver with the device activated (queue 0 enabled, queue vectors 1 and 2, config vector 0).
    func activated(msix: Bool) throws -> VirtioPCIDriver<TransportFakeDevice> {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        if msix {
            driver.enableMSIX()
            for vector in 0..<3 { driver.programVector(vector, address: 0xFEE0_0000, data: UInt32(0x40 + vector)) }
            driver.setCommon(CommonOffset.configMSIXVector, size: 2, 0)
        }
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16), vector: msix ? 1 : 0xFFFF)
        driver.setUpQueue(1, try MockDriverQueue(memory: driver.memory, size: 8, base: 0x3000), vector: msix ? 2 : 0xFFFF)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        driver.msix.clear()
        return driver
    }

    @Test func intxRaisesISRBitsAndReadingClearsThem() throws {
        let driver = try activated(msix: false)
        let interrupt = try #require(driver.device.interrupt)
        interrupt.signalQueue(0)
        #expect(driver.line.isHigh)
        #expect(driver.config(0x06, size: 2) & 0x8 != 0)
        let generation = driver.common(CommonOffset.configGeneration, size: 1)
        interrupt.signalConfigChange()
        #expect(driver.common(CommonOffset.configGeneration, size: 1) == (generation + 1) & 0xFF)
        #expect(driver.readISR() == 0b11)
        #expect(!driver.line.isHigh)
        #expect(driver.config(0x06, size: 2) & 0x8 == 0)
        #expect(driver.readISR() == 0)
        #expect(driver.msix.calls.isEmpty)
    }

    @Test func intxDisableHoldsTheLineLowButKeepsTheISR() throws {
        let driver = try activated(msix: false)
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) | 0x400)
        try #require(driver.device.interrupt).signalQueue(1)
        #expect(!driver.line.isHigh)
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) & ~0x400)
        #expect(driver.line.isHigh)   // re-enabling shows the pending request
        #expect(driver.readISR() == 1)
    }

    @Test func msixQueueAndConfigVectorsTrigger() throws {
        let driver = try activated(msix: true)
        let interrupt = try #require(driver.device.interrupt)
        interrupt.signalQueue(1)
        interrupt.signalQueue(0)
        interrupt.signalConfigChange()
        #expect(driver.msix.calls == ["trigger 2", "trigger 1", "trigger 0"])
        #expect(!driver.line.isHigh)
        #expect(driver.readISR() == 0)
    }

    @Test func enablingMSIXRoutesProgrammedVectors() throws {
        let driver = try VirtioPCIDriver()
        driver.programVector(1, address: 0xFEE0_2000, data: 0x51)
        #expect(driver.msix.calls.isEmpty)
        driver.enableMSIX()
        #expect(driver.msix.calls == ["route 1 fee02000/81"])
        driver.enableMSIX(functionMask: true)
        #expect(driver.msix.calls.last == "route 1 none")
    }

    @Test func maskedVectorIsPendingUntilUnmasked() throws {
        let driver = try activated(msix: true)
        let interrupt = try #require(driver.device.interrupt)
        let entry1 = driver.barAddress + 0x4000 + 16
        driver.barWrite(entry1 + 12, size: 4, 1)
        #expect(driver.msix.calls == ["route 1 none"])
        interrupt.signalQueue(0)
        #expect(driver.barRead(driver.barAddress + 0xC000, size: 8) == 0b10)
        driver.barWrite(entry1 + 12, size: 4, 0)
        #expect(driver.msix.calls == ["route 1 none", "route 1 fee00000/65", "trigger 1"])
        #expect(driver.barRead(driver.barAddress + 0xC000, size: 8) == 0)
    }

    @Test func noVectorMeansNoInterrupt() throws {
        let driver = try activated(msix: true)
        driver.setCommon(CommonOffset.queueSelect, size: 2, 0)
        driver.setCommon(CommonOffset.queueMSIXVector, size: 2, 0xFFFF)
        try #require(driver.device.interrupt).signalQueue(0)
        #expect(driver.msix.calls.isEmpty)
        #expect(!driver.line.isHigh)
    }

    @Test func needsResetSetsStatusAndSignalsConfig() throws {
        let driver = try activated(msix: true)
        try #require(driver.device.interrupt).signalNeedsReset()
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(driver.msix.calls == ["trigger 0"])
        // The driver cannot clear NEEDS_RESET except by resetting.
        driver.setStatus(driver.status & ~VirtioStatus.deviceNeedsReset)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
    }

    @Test func signalsAfterResetAreDropped() throws {
        let driver = try activated(msix: false)
        let interrupt = try #require(driver.device.interrupt)
        driver.setStatus(0)
        interrupt.signalQueue(0)
        interrupt.signalConfigChange()
        interrupt.signalNeedsReset()
        interrupt.signalQueue(99)
        #expect(!driver.line.isHigh)
        #expect(driver.status == 0)
    }
}

@Suite struct TransportReentrancyTests {
    /// A device may signal from inside activate, reset, writeConfig and queueNotified (the
    /// transport calls them without its state lock); none of that may deadlock or leak an interrupt.
    @Test func deviceCallbacksMaySignal() throws {
        let device = TransportFakeDevice()
        device.record.withLock { $0.signalFromCallbacks = true }
        let driver = try VirtioPCIDriver(device: device)
        driver.negotiate(VirtioFeature.version1)
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16))
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        #expect(driver.readISR() == 0b01)                        // from activate
        driver.barWrite(driver.region(4), size: 1, 1)
        #expect(driver.readISR() == 0b10)                        // from writeConfig
        driver.barWrite(try #require(driver.transport.notifyAddress(queue: 0)), size: 2, 0)
        #expect(driver.readISR() == 0b01)                        // from queueNotified (no handler set)
        driver.setStatus(0)
        #expect(driver.readISR() == 0)                           // the reset's own signal is dropped
        #expect(!driver.line.isHigh)
    }

    @Test func concurrentSignalsAndGuestAccessesStayConsistent() async throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        driver.enableMSIX()
        for vector in 0..<3 { driver.programVector(vector, address: 0xFEE0_0000, data: UInt32(vector)) }
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16), vector: 1)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        driver.msix.clear()
        let interrupt = try #require(driver.device.interrupt)
        let window = driver.root.mmio32Window
        let entry = driver.barAddress + 0x4000 + 16 + 12 - window.base
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask { for _ in 0..<500 { interrupt.signalQueue(0) } }
            }
            group.addTask {
                for round in 0..<200 { window.write(offset: entry, size: 4, value: UInt64(round & 1)) }
                window.write(offset: entry, size: 4, value: 0)
            }
        }
        // Every signal either fired or was latched and fired at an unmask: none is lost for good,
        // and nothing stays pending once the vector ends unmasked.
        #expect(driver.barRead(driver.barAddress + 0xC000, size: 8) == 0)
        #expect(driver.msix.calls.contains("trigger 1"))
    }
}
