import KVM
import Synchronization

/// Why a vCPU left the guest, at the grain that explains where a boot's time goes: the port of a
/// PIO exit, the 4 KiB page of an MMIO exit, or the kind of any other exit.
public struct ExitReason: Hashable, Sendable, Comparable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable, Comparable {
        case pioIn, pioOut, mmioRead, mmioWrite, interrupted, halted, other
        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
    }
    public let kind: Kind
    /// Port, page address, or nil (exits without one, and the overflow bucket).
    public let address: UInt64?

    public init(kind: Kind, address: UInt64? = nil) { self.kind = kind; self.address = address }

    init(_ exit: VCPUExit) {
        switch exit {
        case let .ioIn(port, _, _): self.init(kind: .pioIn, address: UInt64(port))
        case let .ioOut(port, _, _): self.init(kind: .pioOut, address: UInt64(port))
        case let .mmioRead(address, _): self.init(kind: .mmioRead, address: address & ~0xFFF)
        case let .mmioWrite(address, _, _): self.init(kind: .mmioWrite, address: address & ~0xFFF)
        case .interrupted: self.init(kind: .interrupted)
        case .halted: self.init(kind: .halted)
        default: self.init(kind: .other)
        }
    }

    /// e.g. "pio_out 0x3f8", "mmio_write 0xfee00000", "interrupted".
    public var description: String {
        let name = switch kind {
        case .pioIn: "pio_in"
        case .pioOut: "pio_out"
        case .mmioRead: "mmio_read"
        case .mmioWrite: "mmio_write"
        case .interrupted: "interrupted"
        case .halted: "halted"
        case .other: "other"
        }
        guard let address else { return name }
        return "\(name) 0x\(String(address, radix: 16))"
    }

    public static func < (a: ExitReason, b: ExitReason) -> Bool {
        (a.kind, a.address ?? .max) < (b.kind, b.address ?? .max)
    }
}

/// Exits of one vCPU by reason. Only its own thread counts; readers take the same uncontended
/// lock (a few tens of ns against the 10-30 µs an exit costs). Bounded: a guest touching
/// thousands of ports or pages cannot grow it past `maximumReasons`.
final class ExitAccounting: Sendable {
    static let maximumReasons = 256
    private let counts = Mutex<[ExitReason: UInt64]>([:])

    func count(_ exit: VCPUExit) {
        let reason = ExitReason(exit)
        counts.withLock { counts in
            if let current = counts[reason] {
                counts[reason] = current &+ 1
            } else if counts.count < Self.maximumReasons {
                counts[reason] = 1
            } else {
                counts[ExitReason(kind: reason.kind), default: 0] &+= 1
            }
        }
    }

    var snapshot: [ExitReason: UInt64] { counts.withLock { $0 } }
}

extension Dictionary where Key == ExitReason, Value == UInt64 {
    /// The reasons with the most exits first (ties in reason order), at most `limit`.
    public func top(_ limit: Int) -> [(reason: ExitReason, count: UInt64)] {
        sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
            .prefix(limit).map { (reason: $0.key, count: $0.value) }
    }
}
