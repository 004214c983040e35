/// What a device needs to carry on after a snapshot: its activated queues and device-specific
/// extras. The transport's registers are in `VirtioPCIState`; this is the part the device owns
/// between DRIVER_OK and reset. Snapshot files are untrusted: `VirtioDevice.restoreState`
/// re-validates every field.
public struct VirtioDeviceState: Codable, Equatable, Sendable {
    public var negotiatedFeatures: UInt64
    /// One per queue of the device (queueMaxSizes.count entries); nil = queue not enabled by the driver.
    public var queues: [VirtqueueState?]
    /// Queues that faulted (DEVICE_NEEDS_RESET): restored as faulted, never serviced until reset.
    public var faultedQueues: [Int]
    /// Host input a virtio-console had queued for the guest and not yet delivered (empty for others).
    public var pendingInput: [UInt8]

    public init(negotiatedFeatures: UInt64, queues: [VirtqueueState?], faultedQueues: [Int] = [], pendingInput: [UInt8] = []) {
        self.negotiatedFeatures = negotiatedFeatures
        self.queues = queues
        self.faultedQueues = faultedQueues
        self.pendingInput = pendingInput
    }
}

extension VirtioDeviceType {
    /// The name logs and state errors use.
    public var name: String {
        switch self {
        case .net: return "virtio-net"
        case .block: return "virtio-blk"
        case .console: return "virtio-console"
        case .entropy: return "virtio-rng"
        }
    }
}
