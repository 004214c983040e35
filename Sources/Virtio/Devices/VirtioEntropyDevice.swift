import GuestMemory
import Synchronization

/// virtio-rng (VIRTIO 1.2 §5.4): one request queue whose device-writable buffers are filled with
/// host entropy, at most `VirtioRNG.maximumRequestBytes` per request.
public final class VirtioEntropyDevice: VirtioDevice {
    /// Fills the whole array, or shortens it to what it could fill (the guest gets fewer bytes).
    public typealias EntropySource = @Sendable (inout [UInt8]) -> Void

    public let deviceType = VirtioDeviceType.entropy
    public let deviceFeatures = VirtioFeature.version1 | VirtioFeature.ringEventIndex | VirtioFeature.ringIndirectDescriptors
    public let queueMaxSizes: [UInt16]

    private let source: EntropySource
    private let locked = Mutex<(queues: ActiveQueues?, lastError: VirtioDeviceFault?)>((nil, nil))

    public init(queueSize: UInt16 = 64, source: @escaping EntropySource = VirtioEntropyDevice.systemEntropy) {
        queueMaxSizes = [queueSize]
        self.source = source
    }

    /// The kernel's CSPRNG: the standard library's SystemRandomNumberGenerator, which uses
    /// getrandom(2) on Linux (Glibc's module does not export getrandom itself).
    public static let systemEntropy: EntropySource = { bytes in
        var generator = SystemRandomNumberGenerator()
        var index = 0
        while index < bytes.count {
            var word = generator.next()
            for _ in 0 ..< min(8, bytes.count - index) {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
    }

    public var lastError: VirtioDeviceFault? { locked.withLock { $0.lastError } }

    /// There is no configuration space (§5.4.4).
    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let queues = try ActiveQueues(activation, required: 1)
        locked.withLock { $0.queues = queues }
    }

    public func reset() {
        locked.withLock { $0.queues = nil }
    }

    /// Requests are filled synchronously, so the queues are the whole state.
    public func captureState() -> VirtioDeviceState? {
        locked.withLock { $0.queues?.state }
    }

    public func restoreState(_ state: VirtioDeviceState, memory: GuestMemory, interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        let queues = try ActiveQueues(restoring: state, for: self, memory: memory, interrupt: interrupt, required: 1)
        locked.withLock { $0.queues = queues }
    }

    public func queueNotified(_ index: Int) {
        locked.withLock { locked in
            let source = self.source
            let fault = locked.queues?.service(index) { queue, memory in
                try VirtioRNG().processRequests(queue: &queue, memory: memory, source: source)
            }
            if let fault { locked.lastError = fault }
        }
    }
}
