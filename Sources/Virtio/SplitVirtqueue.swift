import GuestMemory
import Synchronization

/// Everything a split virtqueue's device side remembers between requests; the snapshot unit.
public struct VirtqueueState: Codable, Equatable, Sendable {
    public var config: VirtqueueConfig
    /// Free-running count of available-ring entries consumed (§2.7.6 idx semantics).
    public var lastAvailIdx: UInt16
    /// Free-running used->idx the device has published (§2.7.8).
    public var usedIdx: UInt16
    /// VIRTIO_F_EVENT_IDX negotiated: used_event/avail_event replace the flags (§2.7.7, §2.7.10).
    public var eventIdx: Bool
    /// used->idx when the driver was last notified; nil until the first notification.
    public var signalledUsedIdx: UInt16?

    public init(config: VirtqueueConfig, lastAvailIdx: UInt16 = 0, usedIdx: UInt16 = 0,
                eventIdx: Bool = false, signalledUsedIdx: UInt16? = nil) {
        self.config = config
        self.lastAvailIdx = lastAvailIdx
        self.usedIdx = usedIdx
        self.eventIdx = eventIdx
        self.signalledUsedIdx = signalledUsedIdx
    }
}

/// Device side of one split virtqueue (VIRTIO 1.2 §2.7). A value type: the owning device keeps
/// it behind its Mutex. Guest memory is passed per call so the queue holds no host pointers.
public struct SplitVirtqueue: Sendable {
    public private(set) var state: VirtqueueState

    /// Sizes of the ring headers and elements (§2.7.6, §2.7.8).
    private static let ringHeaderBytes: UInt64 = 4
    private static let usedElementBytes: UInt64 = 8
    private static let availFlagNoInterrupt: UInt16 = 1   // VIRTQ_AVAIL_F_NO_INTERRUPT
    private static let usedFlagNoNotify: UInt16 = 1       // VIRTQ_USED_F_NO_NOTIFY

    /// Starts a queue the driver has just enabled.
    public init(config: VirtqueueConfig, eventIdx: Bool, memory: GuestMemory) throws(VirtqueueError) {
        try self.init(restoring: VirtqueueState(config: config, eventIdx: eventIdx), memory: memory)
    }

    /// Rebuilds a queue from a snapshot, checking it as hostile input like any driver setting.
    public init(restoring state: VirtqueueState, memory: GuestMemory) throws(VirtqueueError) {
        try state.config.validate(in: memory)
        // The device can only have returned chains it popped: in flight = popped - used <= size.
        let inFlight = state.lastAvailIdx &- state.usedIdx
        guard inFlight <= state.config.size else {
            throw .inconsistentState("\(inFlight) chains in flight exceed queue size \(state.config.size)")
        }
        if let signalled = state.signalledUsedIdx, state.usedIdx &- signalled > state.config.size {
            throw .inconsistentState("last notified used idx \(signalled) is more than a queue behind \(state.usedIdx)")
        }
        self.state = state
    }

    private var config: VirtqueueConfig { state.config }
    private var sizeMask: UInt16 { config.size - 1 }   // size is a validated power of two

    private func availAddress(_ offset: UInt64) -> GuestAddress {
        // Within the validated avail ring: no overflow possible.
        GuestAddress(config.availRing.raw + offset)
    }

    private func usedAddress(_ offset: UInt64) -> GuestAddress {
        GuestAddress(config.usedRing.raw + offset)
    }

    /// Number of chains the driver has published that the device has not popped yet.
    public func pendingCount(memory: GuestMemory) throws(VirtqueueError) -> UInt16 {
        let published: UInt16 = try ringAccess { try memory.read(at: availAddress(2)) }
        let pending = published &- state.lastAvailIdx
        // §2.7.6: idx wraps at 65536; the driver can never be more than a whole ring ahead.
        guard pending <= config.size else {
            throw .availIndexJump(lastSeen: state.lastAvailIdx, published: published, size: config.size)
        }
        return pending
    }

    /// Takes the next published chain, or nil when the ring is empty. The avail entry is consumed
    /// even when its chain is invalid, so a bad chain is reported once, not forever.
    public mutating func popAvailable(memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        guard try pendingCount(memory: memory) > 0 else { return nil }
        // Pairs with the driver's write barrier before its idx store (§2.7.13.3): read the ring
        // entry only after seeing idx. x86 keeps loads ordered; the fence stops the compiler.
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(state.lastAvailIdx & sizeMask)
        let head: UInt16 = try ringAccess { try memory.read(at: availAddress(Self.ringHeaderBytes + 2 * slot)) }
        state.lastAvailIdx &+= 1
        if state.eventIdx {
            // §2.7.10: avail_event asks the driver to notify once it publishes past this index.
            try ringAccess { try memory.write(state.lastAvailIdx, at: usedAddress(Self.ringHeaderBytes + Self.usedElementBytes * UInt64(config.size))) }
        }
        return try walkDescriptorChain(head: head, config: config, memory: memory)
    }

    /// Returns a chain to the driver with the number of bytes the device wrote into it (§2.7.8).
    public mutating func addUsed(head: UInt16, length: UInt32, memory: GuestMemory) throws(VirtqueueError) {
        try addUsed([(head: head, length: length)], memory: memory)
    }

    /// Returns several chains and publishes them with one used-idx update, so the driver sees all
    /// or none of them (a frame spread over mergeable receive buffers, §5.1.6.4.2).
    public mutating func addUsed(_ elements: [(head: UInt16, length: UInt32)], memory: GuestMemory) throws(VirtqueueError) {
        guard elements.count <= Int(config.size) else { throw .inconsistentState("\(elements.count) used elements for a queue of \(config.size)") }
        for (position, element) in elements.enumerated() {
            // The heads come from chains we validated, but a device bug must not corrupt the ring.
            guard element.head < config.size else { throw .usedHeadOutOfRange(head: element.head, size: config.size) }
            let slot = UInt64((state.usedIdx &+ UInt16(position)) & sizeMask)
            let address = usedAddress(Self.ringHeaderBytes + Self.usedElementBytes * slot)
            try ringAccess {
                try memory.write(UInt32(element.head), at: address)
                try memory.write(element.length, at: GuestAddress(address.raw + 4))
            }
        }
        // §2.7.8.2 / §2.7.13: the elements must be visible before the idx that publishes them.
        atomicMemoryFence(ordering: .releasing)
        state.usedIdx &+= UInt16(elements.count)
        try ringAccess { try memory.write(state.usedIdx, at: usedAddress(2)) }
    }

    /// Whether the driver wants a used-buffer notification now (§2.7.7). Call after a batch of
    /// addUsed; with EVENT_IDX it records that the driver has been notified up to here.
    public mutating func needsNotification(memory: GuestMemory) throws(VirtqueueError) -> Bool {
        // The used idx store must be globally visible before we read the driver's suppression
        // fields, or both sides may decide the other will act (lost interrupt).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        guard state.eventIdx else {
            // §2.7.7.2 without EVENT_IDX: flags == 1 means SHOULD NOT notify, 0 means MUST.
            let flags: UInt16 = try ringAccess { try memory.read(at: availAddress(0)) }
            return flags & Self.availFlagNoInterrupt == 0
        }
        // §2.7.7.2 with EVENT_IDX: notify when used->idx passed used_event since the last notification.
        let usedEvent: UInt16 = try ringAccess { try memory.read(at: availAddress(Self.ringHeaderBytes + 2 * UInt64(config.size))) }
        let new = state.usedIdx
        defer { state.signalledUsedIdx = new }
        guard let old = state.signalledUsedIdx else { return true }
        // vring_need_event(): true iff used_event lies in [old, new).
        return new &- usedEvent &- 1 < new &- old
    }

    /// Asks the driver to stop (false) or resume (true) available-buffer notifications (§2.7.10).
    /// Returns true when chains are already pending, since the driver may have published them
    /// without notifying while suppression was on; the caller must then process them.
    public func setAvailableNotifications(enabled: Bool, memory: GuestMemory) throws(VirtqueueError) -> Bool {
        if state.eventIdx {
            // avail_event: notify when idx moves past what we have consumed; disabling is implicit.
            if enabled {
                try ringAccess { try memory.write(state.lastAvailIdx, at: usedAddress(Self.ringHeaderBytes + Self.usedElementBytes * UInt64(config.size))) }
            }
        } else {
            try ringAccess { try memory.write(enabled ? 0 : Self.usedFlagNoNotify, at: usedAddress(0)) }
        }
        guard enabled else { return false }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return try pendingCount(memory: memory) > 0
    }
}
