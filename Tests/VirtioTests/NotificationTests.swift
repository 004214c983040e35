import GuestMemory
import Testing
@testable import Virtio

/// Used-buffer (§2.7.7) and available-buffer (§2.7.10) notification suppression.
@Suite struct NotificationTests {
    let memory: GuestMemory
    let driver: MockDriverQueue

    init() throws {
        memory = try makeTestMemory()
        driver = try MockDriverQueue(memory: memory, size: 8)
    }

    /// Pops and completes one freshly published chain.
    func completeOne(_ queue: inout SplitVirtqueue) throws {
        try driver.publish(try driver.addChain([.writable(0x9000, 4)]))
        let chain = try #require(try queue.popAvailable(memory: memory))
        try queue.addUsed(head: chain.headIndex, length: 4, memory: memory)
    }

    @Test func noInterruptFlagSuppressesWithoutEventIdx() throws {
        var queue = try driver.makeDeviceQueue(eventIdx: false)
        try completeOne(&queue)
        #expect(try queue.needsNotification(memory: memory))
        try driver.setAvailFlags(1)
        try completeOne(&queue)
        #expect(try !queue.needsNotification(memory: memory))
        // used_event is ignored without EVENT_IDX.
        try driver.setAvailFlags(0)
        try driver.setUsedEvent(100)
        try completeOne(&queue)
        #expect(try queue.needsNotification(memory: memory))
    }

    @Test func usedEventDecidesWithEventIdx() throws {
        var queue = try driver.makeDeviceQueue(eventIdx: true)
        try driver.setAvailFlags(1)   // ignored with EVENT_IDX (§2.7.7.2)
        try completeOne(&queue)       // used idx 1
        #expect(try queue.needsNotification(memory: memory))   // first notification always goes out
        // The driver asks to hear only once used idx passes 3 (i.e. after entry 3 is used).
        try driver.setUsedEvent(3)
        try completeOne(&queue)       // used idx 2
        #expect(try !queue.needsNotification(memory: memory))
        try completeOne(&queue)       // used idx 3
        #expect(try !queue.needsNotification(memory: memory))
        try completeOne(&queue)       // used idx 4: crossed used_event 3
        #expect(try queue.needsNotification(memory: memory))
        // Nothing new since the last notification: no second interrupt.
        #expect(try !queue.needsNotification(memory: memory))
    }

    @Test func usedEventComparisonWrapsAround() throws {
        let state = VirtqueueState(config: driver.config, lastAvailIdx: 65535, usedIdx: 65535, eventIdx: true, signalledUsedIdx: 65535)
        var queue = try SplitVirtqueue(restoring: state, memory: memory)
        try driver.setAvailIdx(65535)
        try driver.setUsedEvent(65535)
        try completeOne(&queue)   // used idx wraps to 0, passing used_event 65535
        #expect(queue.state.usedIdx == 0)
        #expect(try queue.needsNotification(memory: memory))
    }

    @Test func availEventTracksConsumptionWithEventIdx() throws {
        var queue = try driver.makeDeviceQueue(eventIdx: true)
        try completeOne(&queue)
        try completeOne(&queue)
        #expect(try driver.availEvent() == 2)
        #expect(try !queue.setAvailableNotifications(enabled: true, memory: memory))
        // A chain published while notifications were off is reported when they are re-enabled.
        try driver.publish(try driver.addChain([.writable(0x9000, 4)]))
        #expect(try queue.setAvailableNotifications(enabled: true, memory: memory))
    }

    @Test func usedFlagsNoNotifyWithoutEventIdx() throws {
        let queue = try driver.makeDeviceQueue(eventIdx: false)
        #expect(try !queue.setAvailableNotifications(enabled: false, memory: memory))
        #expect(try driver.usedFlags() == 1)
        #expect(try !queue.setAvailableNotifications(enabled: true, memory: memory))
        #expect(try driver.usedFlags() == 0)
    }
}
