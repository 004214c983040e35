import Devices
import Synchronization
import Virtio

/// Per-device counters of a machine, for `vireo domstats`, /metrics and the control API.
public struct DeviceStatistics: Codable, Equatable, Sendable {
    public struct Disk: Codable, Equatable, Sendable {
        public var path: String
        public var readRequests: UInt64, readBytes: UInt64, writeRequests: UInt64, writeBytes: UInt64
        public var flushRequests: UInt64, errors: UInt64
        enum CodingKeys: String, CodingKey {
            case path, errors
            case readRequests = "read_requests", readBytes = "read_bytes", writeRequests = "write_requests"
            case writeBytes = "write_bytes", flushRequests = "flush_requests"
        }
    }
    public struct Network: Codable, Equatable, Sendable {
        public var interface: String
        public var rxPackets: UInt64, rxBytes: UInt64, rxDropped: UInt64
        public var txPackets: UInt64, txBytes: UInt64, txErrors: UInt64
        enum CodingKeys: String, CodingKey {
            case interface
            case rxPackets = "rx_packets", rxBytes = "rx_bytes", rxDropped = "rx_dropped"
            case txPackets = "tx_packets", txBytes = "tx_bytes", txErrors = "tx_errors"
        }
    }
    public struct Console: Codable, Equatable, Sendable {
        public var txBytes: UInt64
        enum CodingKeys: String, CodingKey { case txBytes = "tx_bytes" }
    }
    public struct Entropy: Codable, Equatable, Sendable {
        public var bytes: UInt64
    }
    public var disks: [Disk] = []
    public var nets: [Network] = []
    public var console: Console?
    public var rng: Entropy?
}

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
