import Devices
import GuestMemory
import Testing
@testable import Virtio

@Suite struct TransportBringUpTests {
    static let offered = VirtioFeature.version1 | VirtioFeature.ringEventIndex | TransportFakeDevice.featureA

    @Test(arguments: [(VirtioDeviceType.net, UInt32(0x02_0000)), (.block, 0x01_0000), (.console, 0x07_8000), (.entropy, 0x00_FF00)])
    func identityFollowsTheDeviceType(type: VirtioDeviceType, classCode: UInt32) throws {
        let driver = try VirtioPCIDriver(device: TransportFakeDevice(type: type))
        #expect(driver.config(0x00, size: 2) == 0x1AF4)
        #expect(driver.config(0x02, size: 2) == 0x1040 + UInt64(type.rawValue))
        #expect(driver.config(0x08, size: 1) == 1)   // revision 1: non-transitional
        #expect(UInt32(driver.config(0x08, size: 4) >> 8) == classCode)
        #expect(driver.config(0x2C, size: 2) == 0x1AF4)
        #expect(driver.config(0x10, size: 4) & 0x7 == 0x4)   // 64-bit memory BAR 0
        #expect(driver.config(0x3D, size: 1) == 1 && driver.config(0x3C, size: 1) == 17)
    }

    @Test func capabilitiesPointIntoBARZero() throws {
        let driver = try VirtioPCIDriver()
        let caps = driver.capabilities
        #expect(Set(caps.keys) == [1, 2, 3, 4, 5])
        #expect(caps.values.allSatisfy { $0.bar == 0 })
        #expect(caps[1]?.regionOffset == 0x0000 && caps[1]?.length == 0x3C)
        #expect(caps[3]?.regionOffset == 0x1000 && caps[3]?.length == 4)
        #expect(caps[4]?.regionOffset == 0x2000 && caps[4]?.length == 0x1000)
        #expect(caps[2]?.regionOffset == 0x3000 && caps[2]?.length == 8 && caps[2]?.extra == 4)   // 2 queues × multiplier 4
        let msix = try #require(driver.msixCapability)
        #expect(driver.config(msix + 2, size: 2) == 2)               // 3 vectors: 2 queues + config
        #expect(driver.config(msix + 4, size: 4) == 0x4000)          // BIR 0
        #expect(driver.config(msix + 8, size: 4) == 0xC000)
        // Whole structures fit the BAR the root sized and assigned.
        let bar = try #require(driver.root.decodedBARs(of: driver.address).first)
        #expect(bar.size == 0x1_0000 && bar.address == driver.barAddress)
    }

    @Test func fullBringUpActivatesWithTheDriversQueuesAndFeatures() throws {
        let driver = try VirtioPCIDriver()
        let features = VirtioFeature.version1 | VirtioFeature.ringEventIndex
        driver.setStatus(0)
        #expect(driver.status == 0)
        driver.setStatus(VirtioStatus.acknowledge)
        driver.setStatus(driver.status | VirtioStatus.driver)
        // Device features in two 32-bit halves.
        driver.setCommon(CommonOffset.deviceFeatureSelect, size: 4, 0)
        let low = driver.common(CommonOffset.deviceFeature, size: 4)
        driver.setCommon(CommonOffset.deviceFeatureSelect, size: 4, 1)
        let high = driver.common(CommonOffset.deviceFeature, size: 4)
        #expect(high << 32 | low == Self.offered)
        #expect(driver.negotiate(features))
        #expect(driver.status == VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK)
        #expect(driver.common(CommonOffset.numQueues, size: 2) == 2)
        driver.setCommon(CommonOffset.queueSelect, size: 2, 1)
        #expect(driver.common(CommonOffset.queueSize, size: 2) == 8)       // the maximum until the driver shrinks it
        #expect(driver.common(CommonOffset.queueNotifyOff, size: 2) == 1)
        let queue0 = try MockDriverQueue(memory: driver.memory, size: 16, base: 0x1000)
        let queue1 = try MockDriverQueue(memory: driver.memory, size: 4, base: 0x3000)
        driver.setUpQueue(0, queue0, vector: 1)
        driver.setUpQueue(1, queue1, vector: 2)
        driver.setCommon(CommonOffset.queueSelect, size: 2, 1)
        #expect(driver.common(CommonOffset.queueDriver, size: 8) == queue1.config.availRing.raw)
        #expect(driver.common(CommonOffset.queueEnable, size: 2) == 1)
        #expect(driver.device.activations.isEmpty)
        driver.setStatus(driver.status | VirtioStatus.driverOK)

        let activation = try #require(driver.device.activations.first)
        #expect(driver.device.activations.count == 1)
        #expect(activation.negotiatedFeatures == features)
        #expect(activation.queues.count == 2)
        #expect(activation.queues[0]?.state.config == queue0.config)
        #expect(activation.queues[1]?.state.config == queue1.config)
        #expect(activation.queues[0]?.state.eventIdx == true)
        #expect(driver.status & VirtioStatus.driverOK != 0)
        #expect(driver.status & VirtioStatus.deviceNeedsReset == 0)
    }

    @Test func disabledQueueIsNilInTheActivation() throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16))
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        let activation = try #require(driver.device.activations.first)
        #expect(activation.queues[0] != nil && activation.queues[1] == nil)
        #expect(activation.queues[0]?.state.eventIdx == false)
    }

    @Test func mmioNotificationsGoToTheHandlerOrTheDevice() throws {
        let driver = try VirtioPCIDriver()
        let notifications = TransportNotifications()
        // Before DRIVER_OK a kick reaches nobody.
        let notify1 = try #require(driver.transport.notifyAddress(queue: 1))
        driver.barWrite(notify1, size: 2, 1)
        driver.negotiate(VirtioFeature.version1)
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16))
        driver.setUpQueue(1, try MockDriverQueue(memory: driver.memory, size: 8, base: 0x3000))
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        // Without a handler the transport calls the device itself.
        driver.barWrite(notify1, size: 2, 1)
        #expect(driver.device.record.withLock { $0.notified } == [1])
        driver.transport.setNotificationHandler(notifications.handler)
        #expect(notify1 == driver.region(2) + 4 * UInt64(driver.common(CommonOffset.queueNotifyOff, size: 2)))
        driver.barWrite(driver.region(2), size: 2, 0)
        driver.barWrite(notify1, size: 4, 1)
        #expect(notifications.received == [0, 1])
        #expect(driver.device.record.withLock { $0.notified } == [1])
        #expect(driver.transport.notifyAddress(queue: 2) == nil)
    }

    @Test func resetClearsTransportStateButKeepsTheMSIXTable() throws {
        let driver = try VirtioPCIDriver()
        driver.negotiate(VirtioFeature.version1)
        driver.programVector(1, address: 0xFEE0_0000, data: 0x31)
        driver.setCommon(CommonOffset.configMSIXVector, size: 2, 0)
        driver.setUpQueue(0, try MockDriverQueue(memory: driver.memory, size: 16), vector: 1)
        driver.setStatus(driver.status | VirtioStatus.driverOK)
        driver.setStatus(0)
        #expect(driver.device.record.withLock { $0.resets } >= 2)   // negotiate's own reset + this one
        #expect(driver.status == 0)
        #expect(driver.common(CommonOffset.configMSIXVector, size: 2) == 0xFFFF)
        driver.setCommon(CommonOffset.queueSelect, size: 2, 0)
        #expect(driver.common(CommonOffset.queueMSIXVector, size: 2) == 0xFFFF)
        #expect(driver.common(CommonOffset.queueEnable, size: 2) == 0)
        #expect(driver.common(CommonOffset.queueSize, size: 2) == 16)
        #expect(driver.common(CommonOffset.queueDesc, size: 8) == 0)
        let entry = driver.barAddress + 0x4000 + 16
        #expect(driver.barRead(entry + 8, size: 4) == 0x31)
        // Feature negotiation starts over.
        driver.setCommon(CommonOffset.driverFeatureSelect, size: 4, 1)
        #expect(driver.common(CommonOffset.driverFeature, size: 4) == 0)
    }

    @Test func configAccessCapabilityReachesTheBAR() throws {
        let driver = try VirtioPCIDriver()
        let cap = try #require(driver.capabilities[5]).offset
        func access(offset: UInt32, length: UInt32) {
            driver.setConfig(cap + 4, size: 1, 0)   // BAR 0
            driver.setConfig(cap + 8, size: 4, UInt64(offset))
            driver.setConfig(cap + 12, size: 4, UInt64(length))
        }
        access(offset: 0x12, length: 2)   // num_queues
        #expect(driver.config(cap + 16, size: 4) == 2)
        access(offset: 0x14, length: 1)   // device_status
        driver.setConfig(cap + 16, size: 4, UInt64(VirtioStatus.acknowledge))
        #expect(driver.status == VirtioStatus.acknowledge)
        access(offset: 0x2000, length: 4) // device configuration
        #expect(driver.config(cap + 16, size: 4) == 0x4433_2211)
        // Misaligned, odd-length or other-BAR requests do nothing.
        access(offset: 0x13, length: 2)
        driver.setConfig(cap + 16, size: 4, 0xFFFF)
        access(offset: 0x14, length: 3)
        driver.setConfig(cap + 16, size: 4, 0)
        driver.setConfig(cap + 4, size: 1, 2)
        driver.setConfig(cap + 16, size: 4, 0)
        #expect(driver.status == VirtioStatus.acknowledge)
        access(offset: 0xFFFC, length: 4)
        #expect(driver.config(cap + 16, size: 4) == 0)
    }

    @Test func deviceConfigurationIsForwarded() throws {
        let driver = try VirtioPCIDriver()
        let config = driver.region(4)
        #expect(driver.barRead(config + 1, size: 2) == 0x3322)
        #expect(driver.barRead(config, size: 8) == 0x8877_6655_4433_2211)
        driver.barWrite(config + 4, size: 1, 0x1FF)
        #expect(driver.device.record.withLock { $0.configWrites.map { "\($0.offset) \($0.size) \($0.value)" } } == ["4 1 255"])
    }
}
