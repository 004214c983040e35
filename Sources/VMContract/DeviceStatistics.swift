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

        public init(path: String, readRequests: UInt64 = 0, readBytes: UInt64 = 0, writeRequests: UInt64 = 0,
                    writeBytes: UInt64 = 0, flushRequests: UInt64 = 0, errors: UInt64 = 0) {
            self.path = path; self.readRequests = readRequests; self.readBytes = readBytes
            self.writeRequests = writeRequests; self.writeBytes = writeBytes; self.flushRequests = flushRequests
            self.errors = errors
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

        public init(interface: String, rxPackets: UInt64 = 0, rxBytes: UInt64 = 0, rxDropped: UInt64 = 0,
                    txPackets: UInt64 = 0, txBytes: UInt64 = 0, txErrors: UInt64 = 0) {
            self.interface = interface; self.rxPackets = rxPackets; self.rxBytes = rxBytes; self.rxDropped = rxDropped
            self.txPackets = txPackets; self.txBytes = txBytes; self.txErrors = txErrors
        }
    }

    public struct Console: Codable, Equatable, Sendable {
        public var txBytes: UInt64
        enum CodingKeys: String, CodingKey { case txBytes = "tx_bytes" }
        public init(txBytes: UInt64) { self.txBytes = txBytes }
    }

    public struct Entropy: Codable, Equatable, Sendable {
        public var bytes: UInt64
        public init(bytes: UInt64) { self.bytes = bytes }
    }

    public var disks: [Disk] = []
    public var nets: [Network] = []
    public var console: Console?
    public var rng: Entropy?

    public init(disks: [Disk] = [], nets: [Network] = [], console: Console? = nil, rng: Entropy? = nil) {
        self.disks = disks; self.nets = nets; self.console = console; self.rng = rng
    }
}
