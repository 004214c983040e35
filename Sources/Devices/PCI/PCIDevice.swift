/// Where a function sits in configuration space (bus, device 0-31, function 0-7).
public struct PCIDeviceAddress: Hashable, Sendable, Codable, CustomStringConvertible {
    public var bus: UInt8
    public var device: UInt8
    public var function: UInt8

    public init(bus: UInt8 = 0, device: UInt8, function: UInt8 = 0) {
        self.bus = bus
        self.device = device
        self.function = function
    }

    /// lspci's "bb:dd.f" spelling, for logs.
    public var description: String {
        func hex(_ value: UInt8, _ width: Int) -> String {
            let digits = String(value, radix: 16)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(hex(bus, 2)):\(hex(device, 2)).\(function)"
    }
}

/// What a base address register decodes (PCI 3.0 §6.2.5.1).
public enum PCIBARKind: Equatable, Hashable, Sendable, Codable {
    case io
    case memory32(prefetchable: Bool)
    case memory64(prefetchable: Bool)

    public var isMemory: Bool { self != .io }

    /// A 64-bit BAR occupies its register and the next one.
    public var registerCount: Int {
        if case .memory64 = self { return 2 }
        return 1
    }

    /// The read-only low bits of the BAR register: space indicator, type and prefetchable.
    var typeBits: UInt32 {
        switch self {
        case .io: return 0x1
        case let .memory32(prefetchable): return prefetchable ? 0x8 : 0x0
        case let .memory64(prefetchable): return 0x4 | (prefetchable ? 0x8 : 0x0)
        }
    }
}

/// A BAR a function wants: register index (0-5), power-of-two size and kind.
public struct PCIBARRequest: Equatable, Sendable, Codable {
    public var index: Int
    public var size: UInt64
    public var kind: PCIBARKind

    public init(index: Int, size: UInt64, kind: PCIBARKind) {
        self.index = index
        self.size = size
        self.kind = kind
    }
}

/// A BAR that currently decodes: its kind's space is enabled in the command register and it
/// holds an address whose range does not wrap.
public struct PCIBARMapping: Equatable, Hashable, Sendable {
    public var index: Int
    public var kind: PCIBARKind
    public var address: UInt64
    public var size: UInt64

    public init(index: Int, kind: PCIBARKind, address: UInt64, size: UInt64) {
        self.index = index
        self.kind = kind
        self.address = address
        self.size = size
    }

    func covers(_ start: UInt64, size accessSize: Int) -> Bool {
        guard start >= address, accessSize > 0 else { return false }
        let offset = start - address
        return offset < size && UInt64(accessSize) <= size - offset
    }
}

/// The legacy INTx wiring of a function: the line its INTA# pin drives and the number the
/// firmware writes to the interrupt line register (0x3C), i.e. the GSI the VMM routed it to.
public struct PCIINTxWiring: Sendable {
    public var line: any InterruptLine
    public var irq: UInt8

    public init(line: any InterruptLine, irq: UInt8) {
        self.line = line
        self.irq = irq
    }
}

/// What the root complex hands a function when inserting it: its address, the BAR addresses
/// "firmware" assigned (index → address) and its INTx wiring, if any.
public struct PCIAttachment: Sendable {
    public var address: PCIDeviceAddress
    public var barAddresses: [Int: UInt64]
    public var intx: PCIINTxWiring?

    public init(address: PCIDeviceAddress, barAddresses: [Int: UInt64], intx: PCIINTxWiring?) {
        self.address = address
        self.barAddresses = barAddresses
        self.intx = intx
    }
}

/// One PCI function on the root bus. The root complex serializes configuration accesses; BAR
/// accesses come from any vCPU thread at once, so implementations keep state behind a Mutex.
/// Offsets are already range-checked by the caller: config `offset + size <= 4096`, BAR
/// accesses lie wholly inside the BAR and are 1, 2, 4 or 8 bytes wide (alignment is not checked).
public protocol PCIDevice: AnyObject, Sendable {
    /// BARs the function wants; the root assigns each an address at insertion.
    var barRequests: [PCIBARRequest] { get }
    /// Called once by the root at insertion, before any guest access.
    func attach(_ attachment: PCIAttachment)
    /// Reads 1, 2 or 4 bytes of configuration space, little-endian.
    func configRead(offset: Int, size: Int) -> UInt32
    /// Writes 1, 2 or 4 bytes of configuration space; read-only bits keep their value.
    func configWrite(offset: Int, size: Int, value: UInt32)
    func barRead(_ index: Int, offset: UInt64, size: Int) -> UInt64
    func barWrite(_ index: Int, offset: UInt64, size: Int, value: UInt64)
    /// The BARs that decode now (read after every configuration write to track relocation).
    func decodedBARs() -> [PCIBARMapping]
}

/// Everything that can go wrong while assembling the PCI topology (host configuration errors;
/// guest accesses never throw).
public enum PCIError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidBAR(index: Int, why: String)
    case capabilitySpaceFull(needed: Int)
    case invalidSlot(Int)
    case slotInUse(Int)
    case windowExhausted(kind: PCIBARKind, size: UInt64)
    case invalidWindow(String)
    case invalidMSIX(String)

    public var description: String {
        switch self {
        case let .invalidBAR(index, why): return "PCI BAR \(index): \(why)"
        case let .capabilitySpaceFull(needed): return "PCI capability of \(needed) bytes does not fit below offset 0x100"
        case let .invalidSlot(slot): return "PCI slot \(slot) is not between 1 and 31"
        case let .slotInUse(slot): return "PCI slot \(slot) already holds a device"
        case let .windowExhausted(kind, size): return "no room for a \(kind) BAR of 0x\(String(size, radix: 16)) bytes in the PCI windows"
        case let .invalidWindow(why): return "PCI window: \(why)"
        case let .invalidMSIX(why): return "MSI-X: \(why)"
        }
    }
}
