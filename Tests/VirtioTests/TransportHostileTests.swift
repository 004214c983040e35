import Devices
import GuestMemory
import Testing
@testable import Virtio

@Suite struct TransportHostileTests {
    @Test func unofferedOrPreVersion1FeaturesAreRefused() throws {
        let driver = try VirtioPCIDriver()
        #expect(!driver.negotiate(VirtioFeature.version1 | 1 << 5))       // bit 5 was not offered
        #expect(!driver.negotiate(TransportFakeDevice.featureA))           // legacy driver: no VERSION_1
        #expect(driver.negotiate(VirtioFeature.version1))
        // Once FEATURES_OK stands, the driver's features are frozen.
        driver.setCommon(CommonOffset.driverFeatureSelect, size: 4, 0)
        driver.setCommon(CommonOffset.driverFeature, size: 4, 0xFFFF_FFFF)
        #expect(driver.common(CommonOffset.driverFeature, size: 4) == 0)
    }

    @Test func driverOKWithoutFeaturesOKNeedsReset() throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1 | 1 << 5)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        #expect(driver.device.activations.isEmpty)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(driver.status & VirtioStatus.driverOK == 0)
    }

    @Test func queueSelectOutOfRangeReadsAbsentAndIgnoresWrites() throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        for select: UInt64 in [2, 0x7FFF, 0xFFFF] {
            driver.setCommon(CommonOffset.queueSelect, size: 2, select)
            #expect(driver.common(CommonOffset.queueSize, size: 2) == 0)
            #expect(driver.common(CommonOffset.queueMSIXVector, size: 2) == 0xFFFF)
            driver.setCommon(CommonOffset.queueSize, size: 2, 4)
            driver.setCommon(CommonOffset.queueDesc, size: 8, 0x1000)
            driver.setCommon(CommonOffset.queueEnable, size: 2, 1)
            #expect(driver.common(CommonOffset.queueEnable, size: 2) == 0)
        }
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        #expect(driver.device.activations.first?.queues.allSatisfy { $0 == nil } == true)
    }

    @Test func queueSizeAboveTheMaximumIsIgnoredAndNonPowerOfTwoNeedsReset() throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        let queue = try MockDriverQueue(memory: driver.memory, size: 16)
        driver.setUpQueue(0, queue)
        driver.setCommon(CommonOffset.queueSelect, size: 2, 1)
        driver.setCommon(CommonOffset.queueSize, size: 2, 9)    // above max 8: refused
        #expect(driver.common(CommonOffset.queueSize, size: 2) == 8)
        driver.setCommon(CommonOffset.queueSize, size: 2, 6)    // not a power of two: caught at DRIVER_OK
        driver.setCommon(CommonOffset.queueDesc, size: 8, 0x5000)
        driver.setCommon(CommonOffset.queueDriver, size: 8, 0x5100)
        driver.setCommon(CommonOffset.queueDevice, size: 8, 0x5200)
        driver.setCommon(CommonOffset.queueEnable, size: 2, 1)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        #expect(driver.device.activations.isEmpty)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(driver.transport.lastError?.contains("queue 1") == true)
        // The driver hears about it: a configuration interrupt over INTx (MSI-X is off).
        #expect(driver.line.isHigh)
        #expect(driver.readISR() == 0b10)
        #expect(!driver.line.isHigh)
    }

    @Test(arguments: [(UInt64(0x1FFF0), "outside"), (0x1_0000_0000_0000, "outside"), (0x1008, "aligned"), (UInt64.max - 0xF, "outside")])
    func ringsOutsideRAMOrMisalignedNeedReset(descTable: UInt64, why: String) throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        let queue = try MockDriverQueue(memory: driver.memory, size: 16)
        driver.setUpQueue(0, queue)
        driver.setCommon(CommonOffset.queueSelect, size: 2, 1)
        driver.setCommon(CommonOffset.queueDesc, size: 8, descTable)
        driver.setCommon(CommonOffset.queueDriver, size: 8, 0x3000)
        driver.setCommon(CommonOffset.queueDevice, size: 8, 0x3100)
        driver.setCommon(CommonOffset.queueEnable, size: 2, 1)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        #expect(driver.device.activations.isEmpty)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(driver.transport.lastError?.contains(why) == true)
        // Reset recovers the function completely.
        driver.setStatus(0)
        #expect(driver.status == 0 && driver.transport.lastError == nil)
    }

    @Test func activationErrorNeedsReset() throws {
        let device = TransportFakeDevice()
        device.record.withLock { $0.activationError = .missingQueue(1) }
        let driver = try VirtioPCIDriver(device: device)
        driver.negotiate(VirtioFeature.version1)
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16))
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        #expect(device.activations.count == 1)
        #expect(driver.status & VirtioStatus.deviceNeedsReset != 0)
        #expect(driver.transport.lastError?.contains("queue 1") == true)
        // A kick to a device that failed activation goes nowhere.
        driver.barWrite(try #require(driver.transport.notifyAddress(queue: 0)), size: 2, 0)
        #expect(device.record.withLock { $0.notified }.isEmpty)
    }

    @Test func oddWidthsAndUnalignedAccessesAreHarmless() throws {
        let driver = try VirtioPCIDriver()
        driver.setStatus(VirtioStatus.acknowledge)
        driver.setCommon(CommonOffset.deviceStatus, size: 2, 0)        // wrong width: ignored, no reset
        driver.setCommon(CommonOffset.deviceStatus, size: 4, 0xFF)
        #expect(driver.status == VirtioStatus.acknowledge)
        #expect(driver.device.record.withLock { $0.resets } == 0)
        driver.setCommon(CommonOffset.queueSelect, size: 1, 1)         // ignored
        #expect(driver.common(CommonOffset.queueSelect, size: 2) == 0)
        driver.setCommon(CommonOffset.queueDesc + 2, size: 4, 0xAAAA)  // misaligned half
        #expect(driver.common(CommonOffset.queueDesc, size: 8) == 0)
        // Reads of any width compose the little-endian structure.
        #expect(driver.common(CommonOffset.numQueues, size: 1) == 2)
        #expect(driver.common(CommonOffset.configMSIXVector, size: 4) == 0x0002_FFFF)
        // Accesses straddling structures or past the used part of the BAR read 0 and do nothing.
        let bar = driver.barAddress
        #expect(driver.barRead(bar + 0x3A, size: 4) == 0)
        #expect(driver.barRead(bar + 0xFFF8, size: 8) == 0)
        driver.barWrite(bar + 0x0FFE, size: 4, 0xFFFF_FFFF)
        driver.barWrite(bar + 0x1000, size: 1, 0xFF)             // ISR is read-only
        #expect(driver.readISR() == 0)
        driver.barWrite(bar + 0xC000, size: 8, UInt64.max)       // PBA is read-only
        #expect(driver.barRead(bar + 0xC000, size: 8) == 0)
        driver.barWrite(bar + 0x4002, size: 2, 0xFFFF)           // MSI-X entry: not a DWORD
        #expect(driver.barRead(bar + 0x4000, size: 4) == 0)
        #expect(driver.status == VirtioStatus.acknowledge)
    }

    @Test func vectorsBeyondTheTableReadBackNoVector() throws {
        let driver = try VirtioPCIDriver()
        driver.setCommon(CommonOffset.configMSIXVector, size: 2, 3)   // 3 vectors: 0-2
        #expect(driver.common(CommonOffset.configMSIXVector, size: 2) == 0xFFFF)
        driver.setCommon(CommonOffset.configMSIXVector, size: 2, 2)
        #expect(driver.common(CommonOffset.configMSIXVector, size: 2) == 2)
        driver.setCommon(CommonOffset.queueMSIXVector, size: 2, 0x8000)
        #expect(driver.common(CommonOffset.queueMSIXVector, size: 2) == 0xFFFF)
    }

    @Test func queueRegistersFreezeOnceEnabled() throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        let queue = try MockDriverQueue(memory: driver.memory, size: 16)
        driver.setUpQueue(0, queue)
        driver.setCommon(CommonOffset.queueDesc, size: 8, 0x1_0000_0000)
        driver.setCommon(CommonOffset.queueSize, size: 2, 2)
        #expect(driver.common(CommonOffset.queueDesc, size: 8) == queue.config.descTable.raw)
        #expect(driver.common(CommonOffset.queueSize, size: 2) == 16)
    }

    @Test func relocatingTheBARMovesNotifyAddresses() throws {
        let driver = try VirtioPCIDriver()
        let recorded = TransportNotifications()
        driver.root.setBARObserver { _, index, address in recorded.handler(Int(address ?? 0) + index) }
        let before = try #require(driver.transport.notifyAddress(queue: 1))
        driver.setConfig(0x10, size: 4, 0xD000_0000)
        driver.setConfig(0x14, size: 4, 0)
        let after = try #require(driver.transport.notifyAddress(queue: 1))
        #expect(after == 0xD000_3004 && after != before)
        #expect(recorded.received.last == 0xD000_0000)
        // The structures answer at the new place, not the old one.
        #expect(driver.barRead(0xD000_0000 + CommonOffset.numQueues, size: 2) == 2)
        #expect(driver.barRead(before - 0x3004 + CommonOffset.numQueues, size: 2) == 0xFFFF)
        // Memory decoding off: no notify address (the VMM drops its ioeventfds).
        driver.setConfig(0x04, size: 2, driver.config(0x04, size: 2) & ~0x2)
        #expect(driver.transport.notifyAddress(queue: 0) == nil)
        #expect(recorded.received.last == 0)
    }
}
