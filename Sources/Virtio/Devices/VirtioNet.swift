import GuestMemory
import Synchronization

/// A virtio-net interface (VIRTIO 1.2 §5.1) with one receive queue (0) and one transmit queue (1),
/// no control queue. Frames carry struct virtio_net_hdr_v1 (12 bytes) in both directions.
///
/// The VMM's I/O thread calls `queueNotified` (ioeventfd) and `backendReadable` (backend fd
/// readable); neither blocks. Received frames the guest has no buffer for are dropped and
/// counted, so a level-triggered poller never spins on a backend the device will not drain.
/// With VIRTIO_NET_F_MRG_RXBUF a frame may span several receive chains, published together with
/// one used-idx update; Linux then posts page-sized buffers instead of 64 KiB "big" chains for GSO.
public final class VirtioNet: VirtioDevice {
    public static let headerBytes = 12
    /// A 64 KiB GSO packet plus Ethernet and VLAN headers (65550) plus the virtio header.
    public static let maxFrameBytes = 65562
    /// Frames taken from the backend per `backendReadable` call, so one busy link cannot starve
    /// the I/O thread's other work.
    public static let receiveBatchLimit = 256
    public static let receiveQueue = 0
    public static let transmitQueue = 1

    public let deviceType = VirtioDeviceType.net
    public let deviceFeatures: UInt64
    public let queueMaxSizes: [UInt16]

    private struct Locked {
        var queues: ActiveQueues?
        /// Receive chains popped for a frame that did not fit, kept for the next frame rather
        /// than returned empty (§5.1.6.3 lets the device choose which buffers to fill).
        var heldReceiveChains: [DescriptorChain] = []
        /// VIRTIO_NET_F_MRG_RXBUF was negotiated.
        var mergeable = false
    }

    private let backend: any NetworkBackend
    private let configSpace: ConfigSpace
    private let locked = Mutex(Locked())
    private let observed = Mutex<(statistics: VirtioNetStatistics, lastError: VirtioDeviceFault?)>((VirtioNetStatistics(), nil))

    public init(backend: any NetworkBackend, configuration: VirtioNetConfiguration) throws(VirtioNetConfigurationError) {
        try configuration.validate()
        self.backend = backend
        queueMaxSizes = [configuration.queueSize, configuration.queueSize]

        var features = VirtioFeature.version1 | VirtioFeature.ringEventIndex | VirtioFeature.ringIndirectDescriptors
            | VirtioNetFeature.mac | VirtioNetFeature.status | VirtioNetFeature.mergeableRxBuffers
        if configuration.mtu != nil { features |= VirtioNetFeature.mtu }
        // §5.1.3.1: each TSO feature depends on the matching checksum feature.
        let offloads = backend.offloads
        if offloads.contains(.checksum) {
            features |= VirtioNetFeature.checksum | VirtioNetFeature.guestChecksum
            if offloads.contains(.tso4) { features |= VirtioNetFeature.hostTSO4 | VirtioNetFeature.guestTSO4 }
            if offloads.contains(.tso6) { features |= VirtioNetFeature.hostTSO6 | VirtioNetFeature.guestTSO6 }
        }
        deviceFeatures = features

        // struct virtio_net_config (§5.1.4): mac[6], status, max_virtqueue_pairs, mtu.
        var space = ConfigSpace(size: 12)
        for (index, byte) in configuration.mac.enumerated() { space.set(byte, at: index) }
        space.set(UInt16(1), at: 6)   // VIRTIO_NET_S_LINK_UP
        space.set(UInt16(1), at: 8)
        space.set(configuration.mtu ?? 0, at: 10)
        configSpace = space
    }

    public var statistics: VirtioNetStatistics { observed.withLock { $0.statistics } }
    public var lastError: VirtioDeviceFault? { observed.withLock { $0.lastError } }

    public func readConfig(offset: Int, size: Int) -> UInt64 { configSpace.read(offset: offset, size: size) }

    /// MAC and status are read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (§5.1.4.2).
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        try start(ActiveQueues(activation, required: 2))
    }

    /// Held receive chains go back to the driver's side of the ring: the receive queue's
    /// lastAvailIdx is rewound by their number, so the restored device pops them again. They are
    /// always the most recently popped chains (used ones leave `held` from the front), and the
    /// driver cannot have reused their avail slots while they are outstanding (§2.7.13.2), so no
    /// buffer is lost or completed twice.
    public func captureState() -> VirtioDeviceState? {
        locked.withLock { locked in
            guard var state = locked.queues?.state else { return nil }
            if var receive = state.queues[Self.receiveQueue] {
                receive.lastAvailIdx &-= UInt16(truncatingIfNeeded: locked.heldReceiveChains.count)
                state.queues[Self.receiveQueue] = receive
            }
            return state
        }
    }

    /// Re-applies the guest's offloads to the (new) backend, as activation does.
    public func restoreState(_ state: VirtioDeviceState, memory: GuestMemory, interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        try start(ActiveQueues(restoring: state, for: self, memory: memory, interrupt: interrupt, required: 2))
    }

    /// Takes over `queues` once the backend accepts the negotiated offloads; on error nothing changes.
    private func start(_ queues: ActiveQueues) throws(VirtioDeviceError) {
        // The 12-byte header (num_buffers always present) is the VERSION_1 layout (§5.1.6).
        guard queues.negotiated(VirtioFeature.version1) else { throw .backend("virtio-net needs VIRTIO_F_VERSION_1") }
        var accepted: NetworkOffloads = []
        if queues.negotiated(VirtioNetFeature.guestChecksum) { accepted.insert(.checksum) }
        if queues.negotiated(VirtioNetFeature.guestTSO4) { accepted.insert(.tso4) }
        if queues.negotiated(VirtioNetFeature.guestTSO6) { accepted.insert(.tso6) }
        do { try backend.setOffloads(accepted) } catch {
            throw .backend("virtio-net backend refused offloads \(accepted.rawValue): \(error)")
        }
        let mergeable = queues.negotiated(VirtioNetFeature.mergeableRxBuffers)
        locked.withLock { $0 = Locked(queues: queues, heldReceiveChains: [], mergeable: mergeable) }
    }

    public func reset() {
        locked.withLock { $0 = Locked() }
        // Nobody can take checksum-offloaded or GSO frames until a driver negotiates again.
        try? backend.setOffloads([])
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.receiveQueue: receiveFrames()
        case Self.transmitQueue: transmitFrames()
        default: break
        }
    }

    /// The backend has frames: move up to `receiveBatchLimit` of them into receive buffers,
    /// dropping those with nowhere to go. Returns true when it stopped at the limit (call again).
    @discardableResult
    public func backendReadable() -> Bool {
        receiveFrames()
    }

    @discardableResult
    private func receiveFrames() -> Bool {
        locked.withLock { locked in
            var queues = locked.queues
            var held = locked.heldReceiveChains
            let mergeable = locked.mergeable
            var taken = 0
            var fault: VirtioDeviceFault?
            if queues?.isServiceable(Self.receiveQueue) == true {
                fault = queues?.service(Self.receiveQueue) { queue, memory in
                    while taken < Self.receiveBatchLimit {
                        // Buffer first: a chain that faults then never costs a frame already taken.
                        if held.isEmpty, let chain = try queue.popAvailable(memory: memory) { held.append(chain) }
                        guard let frame = nextFrame() else { break }
                        taken += 1
                        // §5.1.6.4: without MRG_RXBUF a frame must fit one buffer; with it, take
                        // chains until it fits (at most a queue's worth).
                        var capacity = held.reduce(UInt64(0)) { $0 + UInt64($1.writableLength) }
                        while mergeable, capacity < UInt64(frame.count), held.count < Int(queue.state.config.size),
                              let chain = try queue.popAvailable(memory: memory) {
                            held.append(chain)
                            capacity += UInt64(chain.writableLength)
                        }
                        guard let used = Self.chainsNeeded(for: frame.count, in: held, mergeable: mergeable) else {
                            count { $0.rxDropped &+= 1 }
                            continue
                        }
                        var bytes = frame
                        bytes[10] = UInt8(truncatingIfNeeded: used)   // num_buffers (§5.1.6.4)
                        bytes[11] = UInt8(truncatingIfNeeded: used >> 8)
                        var elements: [(head: UInt16, length: UInt32)] = []
                        var offset = 0
                        for chain in held.prefix(used) {
                            let end = min(bytes.count, offset + Int(chain.writableLength))
                            let written = try chain.writeWritable(Array(bytes[offset..<end]), to: memory)
                            elements.append((chain.headIndex, written))
                            offset = end
                        }
                        held.removeFirst(used)
                        try queue.addUsed(elements, memory: memory)
                        count { $0.rxPackets &+= 1; $0.rxBytes &+= UInt64(frame.count - Self.headerBytes) }
                    }
                }
            } else {
                // No driver (or a faulted queue): nothing can take frames, so they are dropped.
                while taken < Self.receiveBatchLimit, nextFrame() != nil {
                    taken += 1
                    count { $0.rxDropped &+= 1 }
                }
            }
            locked.queues = queues
            locked.heldReceiveChains = fault == nil ? held : []
            if let fault { observed.withLock { $0.lastError = fault } }
            return taken == Self.receiveBatchLimit
        }
    }

    /// How many of the held chains (in order) a frame of `length` bytes fills, or nil when they
    /// cannot hold it (without MRG_RXBUF only the first chain may be used).
    static func chainsNeeded(for length: Int, in chains: [DescriptorChain], mergeable: Bool) -> Int? {
        var capacity = 0
        for (index, chain) in chains.enumerated() {
            capacity += Int(chain.writableLength)
            if capacity >= length { return index + 1 }
            if !mergeable { return nil }
        }
        return nil
    }

    /// One frame from the backend that is long enough to carry the header, or nil when none is ready.
    private func nextFrame() -> [UInt8]? {
        while true {
            let frame: [UInt8]?
            do { frame = try backend.receive(maxLength: Self.maxFrameBytes) } catch {
                count { $0.rxErrors &+= 1 }
                return nil
            }
            guard let frame else { return nil }
            // The backend's length cap is a contract, not a guarantee: check it here too.
            guard frame.count >= Self.headerBytes, frame.count <= Self.maxFrameBytes else {
                count { $0.rxErrors &+= 1 }
                continue
            }
            return frame
        }
    }

    private func transmitFrames() {
        locked.withLock { locked in
            let backend = self.backend
            let fault = locked.queues?.service(Self.transmitQueue) { queue, memory in
                while let chain = try queue.popAvailable(memory: memory) {
                    let length = Int(chain.readableLength)
                    if length < Self.headerBytes || length > Self.maxFrameBytes {
                        count { $0.txErrors &+= 1 }
                    } else {
                        let frame = try chain.readReadable(from: memory, maxBytes: Self.maxFrameBytes)
                        do {
                            try backend.send(frame)
                            count { $0.txPackets &+= 1; $0.txBytes &+= UInt64(frame.count - Self.headerBytes) }
                        } catch {
                            count { $0.txDropped &+= 1 }
                        }
                    }
                    // §5.1.6.2: transmit buffers are only read, so the used length is 0.
                    try queue.addUsed(head: chain.headIndex, length: 0, memory: memory)
                }
            }
            if let fault { observed.withLock { $0.lastError = fault } }
        }
    }

    private func count(_ update: (inout VirtioNetStatistics) -> Void) {
        observed.withLock { update(&$0.statistics) }
    }
}
