/// Offloads a network backend can honour, in both directions (TAP with IFF_VNET_HDR: all three).
public struct NetworkOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Frames may carry a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM); TUN_F_CSUM.
    public static let checksum = NetworkOffloads(rawValue: 1 << 0)
    /// TCP segmentation offload over IPv4; TUN_F_TSO4.
    public static let tso4 = NetworkOffloads(rawValue: 1 << 1)
    /// TCP segmentation offload over IPv6; TUN_F_TSO6.
    public static let tso6 = NetworkOffloads(rawValue: 1 << 2)
}

/// Where a virtio-net device's frames go and come from (a TAP device, a test double).
///
/// Every frame, in both directions, starts with a 12-byte struct virtio_net_hdr_v1 (§5.1.6) —
/// what a TAP opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12 exchanges. A backend without
/// header support reports no offloads, strips the header on send and prepends a zero one on receive.
/// Calls come from the device's I/O thread and must never block.
public protocol NetworkBackend: AnyObject, Sendable {
    /// Sends one frame (header included). Throwing drops the frame; the device counts it.
    func send(_ frame: [UInt8]) throws
    /// One received frame (header included) of at most `maxLength` bytes, or nil when none is ready.
    func receive(maxLength: Int) throws -> [UInt8]?
    /// Offloads the backend can take from and hand to the guest; the device offers only these.
    var offloads: NetworkOffloads { get }
    /// The offloads the guest accepted for received frames (TUNSETOFFLOAD on a TAP).
    func setOffloads(_ accepted: NetworkOffloads) throws
}

/// virtio-net feature bits (VIRTIO 1.2 §5.1.3).
public enum VirtioNetFeature {
    public static let checksum: UInt64 = 1 << 0
    public static let guestChecksum: UInt64 = 1 << 1
    public static let mtu: UInt64 = 1 << 3
    public static let mac: UInt64 = 1 << 5
    public static let guestTSO4: UInt64 = 1 << 7
    public static let guestTSO6: UInt64 = 1 << 8
    public static let hostTSO4: UInt64 = 1 << 11
    public static let hostTSO6: UInt64 = 1 << 12
    public static let mergeableRxBuffers: UInt64 = 1 << 15
    public static let status: UInt64 = 1 << 16
}

/// Host settings for one virtio-net interface (`--net tap=..,mac=..`).
public struct VirtioNetConfiguration: Sendable, Equatable {
    /// The guest's MAC address (six bytes).
    public var mac: [UInt8]
    /// Offered as VIRTIO_NET_F_MTU when set: 68 (the IPv4 minimum) to 65535.
    public var mtu: UInt16?
    /// Descriptors in each of the rx and tx queues: a power of two from 4 to 1024.
    public var queueSize: UInt16

    public init(mac: [UInt8], mtu: UInt16? = nil, queueSize: UInt16 = 256) {
        self.mac = mac
        self.mtu = mtu
        self.queueSize = queueSize
    }

    /// Parses "52:54:00:12:34:56" (colon- or dash-separated hex pairs).
    public static func parseMAC(_ text: String) -> [UInt8]? {
        let parts = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    func validate() throws(VirtioNetConfigurationError) {
        guard mac.count == 6 else { throw .invalidMAC(mac) }
        // A multicast address as a station address breaks the guest's receive filter.
        guard mac[0] & 1 == 0 else { throw .multicastMAC(mac) }
        if let mtu, mtu < 68 { throw .invalidMTU(mtu) }
        guard queueSize >= 4, queueSize <= 1024, queueSize & (queueSize - 1) == 0 else { throw .invalidQueueSize(queueSize) }
    }
}

public enum VirtioNetConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidMAC([UInt8])
    case multicastMAC([UInt8])
    case invalidMTU(UInt16)
    case invalidQueueSize(UInt16)

    public var description: String {
        switch self {
        case let .invalidMAC(bytes): return "MAC address has \(bytes.count) bytes, expected 6"
        case let .multicastMAC(bytes):
            return "MAC address \(bytes.map { String($0, radix: 16) }.joined(separator: ":")) is multicast (low bit of the first byte set)"
        case let .invalidMTU(mtu): return "MTU \(mtu) is below the IPv4 minimum of 68"
        case let .invalidQueueSize(size): return "virtio-net queue size \(size) is not a power of two from 4 to 1024"
        }
    }
}

/// Traffic counters for domstats (like /proc/net/dev); they wrap at 2^64.
public struct VirtioNetStatistics: Sendable, Equatable, Codable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    /// Frames the guest could not take: no receive buffer, or one too small for the frame.
    public var rxDropped: UInt64 = 0
    /// Backend receive failures and frames without a valid header.
    public var rxErrors: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    /// Frames the backend refused (full, down).
    public var txDropped: UInt64 = 0
    /// Malformed transmit chains: no header, or larger than any frame can be.
    public var txErrors: UInt64 = 0

    public init() {}
}
