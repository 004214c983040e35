import Foundation
/// The identity fields of a type-0 configuration header (PCI 3.0 §6.2.1).
public struct PCIHeader: Equatable, Sendable, Codable {
    public var vendorID: UInt16
    public var deviceID: UInt16
    public var revision: UInt8
    /// Base class << 16 | subclass << 8 | programming interface.
    public var classCode: UInt32
    public var subsystemVendorID: UInt16
    public var subsystemID: UInt16

    public init(vendorID: UInt16, deviceID: UInt16, revision: UInt8 = 0, classCode: UInt32,
                subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0) {
        self.vendorID = vendorID
        self.deviceID = deviceID
        self.revision = revision
        self.classCode = classCode
        self.subsystemVendorID = subsystemVendorID
        self.subsystemID = subsystemID
    }
}

/// Register offsets and bits of the type-0 header that more than one file needs.
public enum PCIRegister {
    public static let command = 0x04
    public static let status = 0x06
    public static let bar0 = 0x10
    public static let capabilityPointer = 0x34
    public static let interruptLine = 0x3C
    public static let interruptPin = 0x3D

    public static let commandIOSpace: UInt16 = 1 << 0
    public static let commandMemorySpace: UInt16 = 1 << 1
    public static let commandBusMaster: UInt16 = 1 << 2
    public static let commandINTxDisable: UInt16 = 1 << 10
    public static let statusInterrupt: UInt16 = 1 << 3
    public static let statusCapabilityList: UInt16 = 1 << 4
}

/// A function's 4 KiB configuration space (256 legacy bytes + PCIe extended space reached through
/// ECAM). Guest writes go through a per-bit write mask, so read-only fields stay read-only and BAR
/// sizing falls out naturally: a BAR's writable bits are exactly its address bits above the size.
public struct PCIConfigSpace: Equatable, Sendable, Codable {
    public static let legacySize = 256
    public static let extendedSize = 4096
    static let firstCapabilityOffset = 0x40

    // Internal rather than private so snapshot validation (PCIStateValidation.swift) can check them.
    var bytes: [UInt8]
    var writeMask: [UInt8]
    /// Declared BARs by register index; the upper half of a 64-bit BAR holds nil.
    public internal(set) var bars: [PCIBARRequest?]
    var nextCapabilityOffset: Int
    var lastCapabilityOffset: Int?

    public init(header: PCIHeader) {
        bytes = [UInt8](repeating: 0, count: Self.extendedSize)
        writeMask = [UInt8](repeating: 0, count: Self.extendedSize)
        bars = [PCIBARRequest?](repeating: nil, count: 6)
        nextCapabilityOffset = Self.firstCapabilityOffset
        lastCapabilityOffset = nil
        setRaw(UInt32(header.vendorID), at: 0x00, size: 2)
        setRaw(UInt32(header.deviceID), at: 0x02, size: 2)
        setRaw(UInt32(header.revision), at: 0x08, size: 1)
        setRaw(header.classCode & 0xFF_FFFF, at: 0x09, size: 3)
        setRaw(UInt32(header.subsystemVendorID), at: 0x2C, size: 2)
        setRaw(UInt32(header.subsystemID), at: 0x2E, size: 2)
        // Command: I/O, memory, bus master, parity response, SERR#, INTx disable (§6.2.2).
        setMask(0x0547, at: PCIRegister.command, size: 2)
        setMask(0xFF, at: 0x0C, size: 1)                       // cache line size
        setMask(0xFF, at: PCIRegister.interruptLine, size: 1)  // firmware/OS scratch byte
    }

    // MARK: Guest access

    /// Reads `size` bytes little-endian; bytes past the 4 KiB space read as 0xFF.
    public func read(offset: Int, size: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in 0..<min(max(size, 0), 4) {
            let (position, overflow) = offset.addingReportingOverflow(index)
            let byte = !overflow && position >= 0 && position < bytes.count ? bytes[position] : 0xFF
            value |= UInt32(byte) << (8 * UInt32(index))
        }
        return value
    }

    /// Applies a guest write through the write mask; bytes past the space are dropped.
    public mutating func write(offset: Int, size: Int, value: UInt32) {
        for index in 0..<min(max(size, 0), 4) {
            let (position, overflow) = offset.addingReportingOverflow(index)
            // Both arrays are checked: a decoded, not yet validated space may have short ones.
            guard !overflow, position >= 0, position < bytes.count, position < writeMask.count else { continue }
            let mask = writeMask[position]
            let incoming = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index)))
            bytes[position] = (bytes[position] & ~mask) | (incoming & mask)
        }
    }

    // MARK: Device-side access (ignores the write mask)

    /// Stores device-owned bits (status, capability contents) regardless of the guest mask.
    public mutating func setRaw(_ value: UInt32, at offset: Int, size: Int) {
        for index in 0..<min(max(size, 0), 4) {
            guard let position = Self.position(offset, index), position < bytes.count else { continue }
            bytes[position] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(index)))
        }
    }

    private mutating func setMask(_ mask: UInt32, at offset: Int, size: Int) {
        for index in 0..<min(max(size, 0), 4) {
            guard let position = Self.position(offset, index), position < writeMask.count else { continue }
            writeMask[position] = UInt8(truncatingIfNeeded: mask >> (8 * UInt32(index)))
        }
    }

    /// `offset + index` when it is a valid byte position of the 4 KiB space.
    private static func position(_ offset: Int, _ index: Int) -> Int? {
        let (position, overflow) = offset.addingReportingOverflow(index)
        return !overflow && position >= 0 && position < extendedSize ? position : nil
    }

    public var command: UInt16 { UInt16(truncatingIfNeeded: read(offset: PCIRegister.command, size: 2)) }
    public var status: UInt16 { UInt16(truncatingIfNeeded: read(offset: PCIRegister.status, size: 2)) }
    public var intxDisabled: Bool { command & PCIRegister.commandINTxDisable != 0 }

    /// Reflects the function's INTx request in status bit 3 (set even while INTx is disabled).
    public mutating func setInterruptStatus(_ pending: Bool) {
        let updated = pending ? status | PCIRegister.statusInterrupt : status & ~PCIRegister.statusInterrupt
        setRaw(UInt32(updated), at: PCIRegister.status, size: 2)
    }

    /// What firmware writes: the routed IRQ in 0x3C and INTA# (1) in the read-only pin register.
    public mutating func setInterruptRouting(irq: UInt8, pin: UInt8 = 1) {
        setRaw(UInt32(irq), at: PCIRegister.interruptLine, size: 1)
        setRaw(UInt32(pin), at: PCIRegister.interruptPin, size: 1)
    }

    // MARK: BARs

    /// Declares a BAR: sizes are powers of two (memory ≥ 16 bytes, at most 2 GiB for 32-bit BARs;
    /// I/O 4-256 bytes); a 64-bit BAR also takes the next register.
    public mutating func declareBAR(_ request: PCIBARRequest) throws(PCIError) {
        let index = request.index, size = request.size, kind = request.kind
        guard bars.count == 6, (0..<6).contains(index), index + kind.registerCount <= 6 else {
            throw .invalidBAR(index: index, why: "register index out of 0-5 (a 64-bit BAR needs two)")
        }
        guard (index..<index + kind.registerCount).allSatisfy({ registerIsFree($0) }) else {
            throw .invalidBAR(index: index, why: "register already declared")
        }
        guard size != 0, size & (size - 1) == 0 else { throw .invalidBAR(index: index, why: "size \(size) is not a power of two") }
        switch kind {
        case .io: guard (4...256).contains(size) else { throw .invalidBAR(index: index, why: "I/O size \(size) not in 4-256") }
        case .memory32: guard (16...(1 << 31)).contains(size) else { throw .invalidBAR(index: index, why: "32-bit memory size \(size) not in 16 B-2 GiB") }
        case .memory64: guard size >= 16, size <= 1 << 62 else { throw .invalidBAR(index: index, why: "64-bit memory size \(size) not in 16 B-4 EiB") }
        }
        bars[index] = request
        let offset = PCIRegister.bar0 + 4 * index
        let addressMask = ~(size - 1)   // as a 64-bit mask
        let lowFlagBits: UInt64 = kind == .io ? 0x3 : 0xF
        setRaw(kind.typeBits, at: offset, size: 4)
        setMask(UInt32(truncatingIfNeeded: addressMask & ~lowFlagBits), at: offset, size: 4)
        if kind.registerCount == 2 {
            setMask(UInt32(truncatingIfNeeded: addressMask >> 32), at: offset + 4, size: 4)
        }
    }

    private func registerIsFree(_ register: Int) -> Bool {
        for (declared, bar) in bars.enumerated() {
            guard let bar else { continue }
            if (declared..<declared + bar.kind.registerCount).contains(register) { return false }
        }
        return true
    }

    /// The address programmed in BAR `index`, without the type bits; nil when not declared.
    public func barAddress(_ index: Int) -> UInt64? {
        guard bars.indices.contains(index), let bar = bars[index] else { return nil }
        let offset = PCIRegister.bar0 + 4 * index
        let low = UInt64(read(offset: offset, size: 4)) & (bar.kind == .io ? ~0x3 : ~0xF)
        guard bar.kind.registerCount == 2 else { return low & 0xFFFF_FFFF }
        return UInt64(read(offset: offset + 4, size: 4)) << 32 | (low & 0xFFFF_FFFF)
    }

    /// Firmware assignment: stores `address` (aligned down to the size) keeping the type bits.
    public mutating func setBARAddress(_ index: Int, _ address: UInt64) {
        guard bars.indices.contains(index), let bar = bars[index] else { return }
        let offset = PCIRegister.bar0 + 4 * index
        let aligned = address & ~(bar.size - 1)
        setRaw(UInt32(truncatingIfNeeded: aligned) | bar.kind.typeBits, at: offset, size: 4)
        if bar.kind.registerCount == 2 { setRaw(UInt32(truncatingIfNeeded: aligned >> 32), at: offset + 4, size: 4) }
    }

    /// BARs whose space is enabled in the command register and which hold a non-zero address
    /// whose range fits the address space (a BAR mid-sizing holds the mask; it still decodes,
    /// as on hardware, unless it would wrap).
    public func decodedBARs() -> [PCIBARMapping] {
        var mappings: [PCIBARMapping] = []
        for (index, bar) in bars.enumerated() {
            guard let bar, let address = barAddress(index), address != 0 else { continue }
            let enabled = bar.kind == .io ? command & PCIRegister.commandIOSpace != 0 : command & PCIRegister.commandMemorySpace != 0
            guard enabled, !address.addingReportingOverflow(bar.size - 1).overflow else { continue }
            mappings.append(PCIBARMapping(index: index, kind: bar.kind, address: address, size: bar.size))
        }
        return mappings
    }

    // MARK: Capabilities

    /// Appends a capability (PCI 3.0 §6.7): `body` is everything after the ID and next-pointer
    /// bytes; `writableMask` (same length or shorter) says which body bits the guest may change.
    /// Returns the capability's offset in configuration space.
    @discardableResult
    public mutating func addCapability(id: UInt8, body: [UInt8], writableMask: [UInt8] = []) throws(PCIError) -> Int {
        let length = 2 + body.count
        let offset = nextCapabilityOffset
        guard length <= Self.legacySize, offset >= 0, offset + length <= Self.legacySize,
              bytes.count == Self.extendedSize, writeMask.count == Self.extendedSize,
              (lastCapabilityOffset ?? Self.firstCapabilityOffset) < Self.legacySize - 1 else { throw .capabilitySpaceFull(needed: length) }
        bytes[offset] = id
        bytes[offset + 1] = 0
        for (position, byte) in body.enumerated() { bytes[offset + 2 + position] = byte }
        for (position, mask) in writableMask.prefix(body.count).enumerated() { writeMask[offset + 2 + position] = mask }
        if let last = lastCapabilityOffset {
            bytes[last + 1] = UInt8(offset)
        } else {
            setRaw(UInt32(offset), at: PCIRegister.capabilityPointer, size: 1)
            setRaw(UInt32(status | PCIRegister.statusCapabilityList), at: PCIRegister.status, size: 2)
        }
        lastCapabilityOffset = offset
        // Capabilities are DWORD aligned (§6.7: the bottom two pointer bits are reserved).
        nextCapabilityOffset = (offset + length + 3) & ~3
        return offset
    }
}

// The two 4 KiB arrays as Data (base64 in JSON): as arrays of numbers they were three quarters of
// a machine's state and most of the time spent encoding it while a migrating guest is stopped.
// Arrays of numbers (snapshots written before) are still read.
extension PCIConfigSpace {
    enum CodingKeys: String, CodingKey { case bytes, writeMask, bars, nextCapabilityOffset, lastCapabilityOffset }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func blob(_ key: CodingKeys) throws -> [UInt8] {
            if let data = try? c.decode(Data.self, forKey: key) { return Array(data) }
            return try c.decode([UInt8].self, forKey: key)
        }
        bytes = try blob(.bytes)
        writeMask = try blob(.writeMask)
        bars = try c.decode([PCIBARRequest?].self, forKey: .bars)
        nextCapabilityOffset = try c.decode(Int.self, forKey: .nextCapabilityOffset)
        lastCapabilityOffset = try c.decodeIfPresent(Int.self, forKey: .lastCapabilityOffset)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Data(bytes), forKey: .bytes)
        try c.encode(Data(writeMask), forKey: .writeMask)
        try c.encode(bars, forKey: .bars)
        try c.encode(nextCapabilityOffset, forKey: .nextCapabilityOffset)
        try c.encodeIfPresent(lastCapabilityOffset, forKey: .lastCapabilityOffset)
    }
}
