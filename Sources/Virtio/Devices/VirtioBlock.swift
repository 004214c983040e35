import GuestMemory
import Storage
import Synchronization

/// A virtio-blk disk (VIRTIO 1.2 §5.2) over any Storage backend: raw, qcow2, ...
///
/// One request queue. Requests run synchronously on the thread that calls `queueNotified` (the
/// VMM's I/O thread), under the queue lock; configuration reads never take that lock, so a vCPU
/// reading config space is never held up by disk I/O. `reset` waits for a batch in progress.
public final class VirtioBlock: VirtioDevice {
    public let deviceType = VirtioDeviceType.block
    public let deviceFeatures: UInt64
    public let queueMaxSizes: [UInt16]
    /// Disk size the guest sees, in 512-byte sectors (a whole number of logical blocks).
    public let capacitySectors: UInt64
    /// Whether the guest sees a read-only disk (VIRTIO_BLK_F_RO).
    public let isReadOnly: Bool

    private let configSpace: ConfigSpace
    private let handler: BlockRequestHandler
    private let active = Mutex<ActiveQueues?>(nil)
    private let observed = Mutex<(statistics: VirtioBlockStatistics, lastError: VirtioDeviceFault?)>((VirtioBlockStatistics(), nil))

    public init(backend: any BlockDevice, configuration: VirtioBlockConfiguration = VirtioBlockConfiguration())
        throws(VirtioBlockConfigurationError) {
        let serial = try configuration.validatedSerial()
        let blockSize = UInt64(configuration.logicalBlockSize)
        // A partial trailing logical block is not exposed: the guest could not address it cleanly.
        capacitySectors = backend.size / blockSize * (blockSize / VirtioBlockLimits.sectorSize)
        isReadOnly = configuration.readOnly || backend.isReadOnly
        queueMaxSizes = [configuration.queueSize]
        // Linux needs two descriptors of a chain for header and status (seg_max <= queue size - 2).
        let segMax = UInt32(configuration.queueSize) - 2

        var features = VirtioFeature.version1 | VirtioFeature.ringEventIndex | VirtioFeature.ringIndirectDescriptors
            | VirtioBlockFeature.sizeMax | VirtioBlockFeature.segMax | VirtioBlockFeature.blockSize | VirtioBlockFeature.flush
        let offersDiscard = configuration.discard && !isReadOnly
        if isReadOnly { features |= VirtioBlockFeature.readOnly }
        if offersDiscard { features |= VirtioBlockFeature.discard | VirtioBlockFeature.writeZeroes }
        deviceFeatures = features

        var space = ConfigSpace(size: VirtioBlockConfigLayout.size)
        space.set(capacitySectors, at: VirtioBlockConfigLayout.capacity)
        space.set(VirtioBlockLimits.sizeMax, at: VirtioBlockConfigLayout.sizeMax)
        space.set(segMax, at: VirtioBlockConfigLayout.segMax)
        space.set(configuration.logicalBlockSize, at: VirtioBlockConfigLayout.blockSize)
        if offersDiscard {
            let alignment = configuration.logicalBlockSize / UInt32(VirtioBlockLimits.sectorSize)
            space.set(VirtioBlockLimits.maxDiscardSectors, at: VirtioBlockConfigLayout.maxDiscardSectors)
            space.set(VirtioBlockLimits.maxDiscardSegments, at: VirtioBlockConfigLayout.maxDiscardSegments)
            space.set(alignment, at: VirtioBlockConfigLayout.discardSectorAlignment)
            space.set(VirtioBlockLimits.maxDiscardSectors, at: VirtioBlockConfigLayout.maxWriteZeroesSectors)
            space.set(VirtioBlockLimits.maxDiscardSegments, at: VirtioBlockConfigLayout.maxWriteZeroesSegments)
            // write_zeroes_may_unmap stays 0: backends are not required to deallocate on zeroing.
        }
        configSpace = space
        handler = BlockRequestHandler(
            backend: backend, readOnly: isReadOnly, capacityBytes: capacitySectors * VirtioBlockLimits.sectorSize,
            maxDataBytes: UInt64(segMax) * UInt64(VirtioBlockLimits.sizeMax), serial: serial,
            scratch: ScratchBuffer(count: VirtioBlockLimits.scratchBytes))
    }

    /// Counters since the device was created (they survive driver resets).
    public var statistics: VirtioBlockStatistics { observed.withLock { $0.statistics } }

    /// The last protocol fault that put the device into DEVICE_NEEDS_RESET, for logs and tests.
    public var lastError: VirtioDeviceFault? { observed.withLock { $0.lastError } }

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        configSpace.read(offset: offset, size: size)
    }

    /// Every field this device offers is read-only (no CONFIG_WCE), so writes are ignored.
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let queues = try ActiveQueues(activation, required: 1)
        active.withLock { $0 = queues }
    }

    public func reset() {
        active.withLock { $0 = nil }
    }

    /// Requests complete synchronously under the queue lock, so a quiesced device has none in
    /// flight: the queues are the whole state.
    public func captureState() -> VirtioDeviceState? {
        active.withLock { $0?.state }
    }

    public func restoreState(_ state: VirtioDeviceState, memory: GuestMemory, interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        let queues = try ActiveQueues(restoring: state, for: self, memory: memory, interrupt: interrupt, required: 1)
        active.withLock { $0 = queues }
    }

    public func queueNotified(_ index: Int) {
        active.withLock { active in
            let handler = self.handler
            let features = active?.negotiatedFeatures ?? 0
            let fault = active?.service(index) { queue, memory in
                while let chain = try queue.popAvailable(memory: memory) {
                    let outcome = try handler.handle(chain, memory: memory, features: features)
                    try queue.addUsed(head: chain.headIndex, length: outcome.usedLength, memory: memory)
                    record(outcome)
                }
            }
            if let fault { observed.withLock { $0.lastError = fault } }
        }
    }

    private func record(_ outcome: BlockRequestOutcome) {
        observed.withLock { observed in
            var stats = observed.statistics
            switch outcome.kind {
            case .read: stats.readRequests &+= 1; stats.readBytes &+= outcome.bytes
            case .write: stats.writeRequests &+= 1; stats.writeBytes &+= outcome.bytes
            case .flush: stats.flushRequests &+= 1
            case .discard: stats.discardRequests &+= 1
            case .getID, .other: break
            }
            if outcome.status == BlockStatus.ioError { stats.errors &+= 1 }
            if outcome.status == BlockStatus.unsupported { stats.unsupported &+= 1 }
            observed.statistics = stats
        }
    }
}
