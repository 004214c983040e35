import Devices
import GuestMemory
import Synchronization

/// A single-port virtio console (VIRTIO 1.2 §5.3, no F_SIZE, no MULTIPORT): receiveq 0 carries
/// host input to the guest (Linux's /dev/hvc0), transmitq 1 carries guest output to a sink.
///
/// Host input waits in a bounded FIFO until the guest posts receive buffers; like the 16550, the
/// caller keeps what did not fit and retries after `onInputSpace` fires. Output goes to the same
/// `SerialOutput` the UART uses (the VMM's ConsoleLog), from the I/O thread, under the device lock.
public final class VirtioConsole: VirtioDevice {
    public static let inputCapacity = 4096
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    /// Guest output moves to the sink in pieces of this size, however long the chain.
    static let outputChunkBytes = 4096

    public let deviceType = VirtioDeviceType.console
    public let deviceFeatures = VirtioFeature.version1 | VirtioFeature.ringEventIndex | VirtioFeature.ringIndirectDescriptors
    public let queueMaxSizes: [UInt16]

    private struct Locked {
        var queues: ActiveQueues?
        var input: [UInt8] = []
        var lastError: VirtioDeviceFault?
    }

    private let output: any SerialOutput
    private let onInputSpace: (@Sendable () -> Void)?
    private let locked = Mutex(Locked())
    /// struct virtio_console_config (§5.3.4): cols, rows, max_nr_ports, emerg_wr. All unused: zero.
    private let configSpace = ConfigSpace(size: 12)

    /// `onInputSpace` is called (outside the lock) when a full input FIFO gets room again.
    public init(output: any SerialOutput, queueSize: UInt16 = 128, onInputSpace: (@Sendable () -> Void)? = nil) {
        self.output = output
        self.onInputSpace = onInputSpace
        // Sizes outside the transport's range would be refused when the driver enables the queue.
        queueMaxSizes = [queueSize, queueSize]
    }

    public var lastError: VirtioDeviceFault? { locked.withLock { $0.lastError } }

    /// Bytes the input FIFO can take now.
    public var inputSpace: Int { locked.withLock { Self.inputCapacity - $0.input.count } }

    public func readConfig(offset: Int, size: Int) -> UInt64 { configSpace.read(offset: offset, size: size) }

    /// emerg_wr is only writable with VIRTIO_CONSOLE_F_EMERG_WRITE, which is not offered.
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let queues = try ActiveQueues(activation, required: 2)
        locked.withLock { $0.queues = queues }
        // Input typed before the driver came up goes out as soon as it has posted buffers.
        deliverInput()
    }

    /// Host input typed before the reset stays queued for the next driver.
    public func reset() {
        locked.withLock { $0.queues = nil }
    }

    /// The queues plus the host input not yet delivered. Input typed while no driver is active is
    /// not captured (there is no activated state to carry it).
    public func captureState() -> VirtioDeviceState? {
        locked.withLock { locked in
            guard var state = locked.queues?.state else { return nil }
            state.pendingInput = locked.input
            return state
        }
    }

    /// Delivers nothing yet: the pending input goes out at the next receive-queue notification.
    public func restoreState(_ state: VirtioDeviceState, memory: GuestMemory, interrupt: any VirtioInterrupt) throws(VirtioDeviceError) {
        let queues = try ActiveQueues(restoring: state, for: self, memory: memory, interrupt: interrupt,
                                      required: 2, inputCapacity: Self.inputCapacity)
        locked.withLock { $0.queues = queues; $0.input = state.pendingInput }
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.receiveQueue: deliverInput()
        case Self.transmitQueue: drainOutput()
        default: break
        }
    }

    /// Offers host input; returns how many leading bytes were accepted. Never drops: what does
    /// not fit stays with the caller.
    public func enqueueInput(_ bytes: some Collection<UInt8>) -> Int {
        let accepted = locked.withLock { locked in
            let accepted = min(Self.inputCapacity - locked.input.count, bytes.count)
            locked.input.append(contentsOf: bytes.prefix(accepted))
            return accepted
        }
        deliverInput()
        return accepted
    }

    private func deliverInput() {
        let spaceAppeared = locked.withLock { locked -> Bool in
            let wasFull = locked.input.count >= Self.inputCapacity
            var input = locked.input
            let fault = locked.queues?.service(Self.receiveQueue) { queue, memory in
                while !input.isEmpty, let chain = try queue.popAvailable(memory: memory) {
                    let written = try chain.writeWritable(Array(input.prefix(Int(chain.writableLength))), to: memory)
                    input.removeFirst(Int(written))
                    try queue.addUsed(head: chain.headIndex, length: written, memory: memory)
                }
            }
            locked.input = input
            if let fault { locked.lastError = fault }
            return wasFull && locked.input.count < Self.inputCapacity
        }
        if spaceAppeared { onInputSpace?() }
    }

    private func drainOutput() {
        locked.withLock { locked in
            let output = self.output
            let fault = locked.queues?.service(Self.transmitQueue) { queue, memory in
                var chunk = [UInt8](repeating: 0, count: Self.outputChunkBytes)
                while let chain = try queue.popAvailable(memory: memory) {
                    var cursor = GuestBufferCursor(chain.readable)
                    while cursor.remaining > 0 {
                        let count = try chunk.withUnsafeMutableBytes { buffer throws(VirtqueueError) in
                            try cursor.gather(into: buffer, from: memory)
                        }
                        for byte in chunk.prefix(count) { output.emit(byte) }
                    }
                    // §5.3.6: the device only reads transmit buffers.
                    try queue.addUsed(head: chain.headIndex, length: 0, memory: memory)
                }
            }
            if let fault { locked.lastError = fault }
        }
    }
}
