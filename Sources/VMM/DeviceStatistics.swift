import Devices
import Synchronization
import Virtio

/// Counts what passes through to another output (the virtio console's bytes).
final class CountingSerialOutput: SerialOutput {
    let next: any SerialOutput
    let count = Atomic<UInt64>(0)
    init(_ next: any SerialOutput) { self.next = next }
    func emit(_ byte: UInt8) {
        count.add(1, ordering: .relaxed)
        next.emit(byte)
    }
}

/// Counts entropy handed to the guest.
final class CountingEntropySource: Sendable {
    let count = Atomic<UInt64>(0)
    func source() -> VirtioEntropyDevice.EntropySource {
        { [self] bytes in
            VirtioEntropyDevice.systemEntropy(&bytes)
            count.add(UInt64(bytes.count), ordering: .relaxed)
        }
    }
}
