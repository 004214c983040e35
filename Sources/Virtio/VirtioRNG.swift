import GuestMemory

/// virtio-rng request handling (VIRTIO 1.2 §5.4): every chain is a set of device-writable buffers
/// that the device fills with entropy. Transport, features and the host entropy source live elsewhere.
public struct VirtioRNG: Sendable {
    /// Largest number of bytes produced for one chain, so a guest cannot make us allocate 4 GiB.
    public static let maximumRequestBytes: UInt32 = 64 * 1024

    public init() {}

    /// Serves every pending request on `queue`; `source` fills the array it is handed completely.
    /// Returns the number of chains completed. Stops at the first invalid chain with its error.
    @discardableResult
    public func processRequests(queue: inout SplitVirtqueue, memory: GuestMemory,
                                source: (inout [UInt8]) -> Void) throws(VirtqueueError) -> Int {
        var completed = 0
        while let chain = try queue.popAvailable(memory: memory) {
            // §5.4.7.1: fill the device-writable buffers (using less than all is allowed); readable ones are ignored.
            var entropy = [UInt8](repeating: 0, count: Int(min(chain.writableLength, Self.maximumRequestBytes)))
            source(&entropy)
            // A source that shrinks the array only shortens the reply; it never writes past it.
            let written = try chain.writeWritable(entropy, to: memory)
            try queue.addUsed(head: chain.headIndex, length: written, memory: memory)
            completed += 1
        }
        return completed
    }
}
