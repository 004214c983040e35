/// One MSI-X table entry (PCI 3.0 §6.8.2.6-9): 16 bytes in the BAR.
public struct MSIXTableEntry: Equatable, Sendable, Codable {
    public var addressLow: UInt32 = 0
    public var addressHigh: UInt32 = 0
    public var data: UInt32 = 0
    /// Bit 0 is the per-vector mask; it is set at reset (§6.8.2.9).
    public var vectorControl: UInt32 = 1

    public init() {}

    public var masked: Bool { vectorControl & 1 != 0 }
    public var message: MSIMessage { MSIMessage(address: UInt64(addressHigh) << 32 | UInt64(addressLow), data: data) }
}

/// The state of a function's MSI-X vectors: table, pending bits and the two message-control bits
/// (enable, function mask). Every mutation returns the controller effects it causes, so routes
/// change only when the effective message does and a pending vector fires once when unmasked.
public struct MSIXTable: Equatable, Sendable, Codable {
    /// §6.8.2.3: the table-size field is 11 bits (N-1), so at most 2048 vectors.
    public static let maximumVectors = 2048
    public static let entryBytes = 16

    public private(set) var entries: [MSIXTableEntry]
    public private(set) var pending: [Bool]
    public private(set) var enabled = false
    public private(set) var functionMasked = false

    public init(vectorCount: Int) throws(PCIError) {
        guard (1...Self.maximumVectors).contains(vectorCount) else {
            throw .invalidMSIX("vector count \(vectorCount) is not between 1 and \(Self.maximumVectors)")
        }
        entries = [MSIXTableEntry](repeating: MSIXTableEntry(), count: vectorCount)
        pending = [Bool](repeating: false, count: vectorCount)
    }

    public var vectorCount: Int { entries.count }
    public var tableBytes: Int { entries.count * Self.entryBytes }
    /// One bit per vector, in whole QWORDs (§6.8.2.10).
    public var pbaBytes: Int { (entries.count + 63) / 64 * 8 }

    /// Where vector `vector` goes now; nil when it cannot fire (disabled, masked, out of range).
    public func route(for vector: Int) -> MSIMessage? {
        guard enabled, !functionMasked, entries.indices.contains(vector), !entries[vector].masked else { return nil }
        return entries[vector].message
    }

    // MARK: Guest access

    /// Reads table bytes; any width, bytes outside the table read 0.
    public func readTable(offset: UInt64, size: Int) -> UInt64 {
        readBytes(offset: offset, size: size, limit: tableBytes) { position in
            let entry = entries[position / Self.entryBytes]
            let fields = [entry.addressLow, entry.addressHigh, entry.data, entry.vectorControl]
            let within = position % Self.entryBytes
            return UInt8(truncatingIfNeeded: fields[within / 4] >> (8 * UInt32(within % 4)))
        }
    }

    /// Reads the pending-bit array (read-only to the guest).
    public func readPBA(offset: UInt64, size: Int) -> UInt64 {
        readBytes(offset: offset, size: size, limit: pbaBytes) { position in
            var byte: UInt8 = 0
            for bit in 0..<8 where pending.indices.contains(position * 8 + bit) && pending[position * 8 + bit] {
                byte |= 1 << UInt8(bit)
            }
            return byte
        }
    }

    private func readBytes(offset: UInt64, size: Int, limit: Int, _ byte: (Int) -> UInt8) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<min(max(size, 0), 8) {
            let (position, overflow) = offset.addingReportingOverflow(UInt64(index))
            guard !overflow, position < UInt64(limit) else { continue }
            value |= UInt64(byte(Int(position))) << (8 * UInt64(index))
        }
        return value
    }

    /// §6.8.2: software uses aligned DWORD (or QWORD) accesses; anything else is ignored.
    public mutating func writeTable(offset: UInt64, size: Int, value: UInt64) -> [MSIXEffect] {
        guard size == 4 || size == 8, offset % UInt64(size) == 0,
              offset < UInt64(tableBytes), UInt64(size) <= UInt64(tableBytes) - offset else { return [] }
        let vector = Int(offset / UInt64(Self.entryBytes))
        let before = route(for: vector)
        let wasMasked = entries[vector].masked
        var field = Int(offset % UInt64(Self.entryBytes)) / 4
        var remaining = value
        for _ in 0..<(size / 4) {
            let dword = UInt32(truncatingIfNeeded: remaining)
            switch field {
            case 0: entries[vector].addressLow = dword
            case 1: entries[vector].addressHigh = dword
            case 2: entries[vector].data = dword
            default: entries[vector].vectorControl = dword & 1   // other bits reserved
            }
            field += 1
            remaining >>= 32
        }
        var effects = routeChange(vector: vector, before: before)
        if wasMasked, !entries[vector].masked { effects += deliverIfPending(vector) }
        return effects
    }

    /// The guest changed message control: re-route every vector whose effective message changed,
    /// then deliver what became deliverable.
    public mutating func setControl(enabled newEnabled: Bool, functionMasked newMasked: Bool) -> [MSIXEffect] {
        guard newEnabled != enabled || newMasked != functionMasked else { return [] }
        let before = entries.indices.map { route(for: $0) }
        enabled = newEnabled
        functionMasked = newMasked
        var effects: [MSIXEffect] = []
        for vector in entries.indices { effects += routeChange(vector: vector, before: before[vector]) }
        for vector in entries.indices { effects += deliverIfPending(vector) }
        return effects
    }

    /// The function wants to raise `vector`: fire it, or remember it in the PBA while masked.
    /// Out-of-range vectors and a disabled table do nothing (the owner falls back to INTx).
    public mutating func signal(_ vector: Int) -> [MSIXEffect] {
        guard enabled, entries.indices.contains(vector), pending.indices.contains(vector) else { return [] }
        if functionMasked || entries[vector].masked {
            pending[vector] = true
            return []
        }
        return [.trigger(vector: vector)]
    }

    /// Function reset: vectors masked, nothing pending, MSI-X disabled; routes withdrawn.
    public mutating func reset() -> [MSIXEffect] {
        let before = entries.indices.map { route(for: $0) }
        entries = [MSIXTableEntry](repeating: MSIXTableEntry(), count: entries.count)
        pending = [Bool](repeating: false, count: entries.count)
        enabled = false
        functionMasked = false
        return entries.indices.compactMap { before[$0] == nil ? nil : MSIXEffect.route(vector: $0, message: nil) }
    }

    private func routeChange(vector: Int, before: MSIMessage?) -> [MSIXEffect] {
        let after = route(for: vector)
        return after == before ? [] : [.route(vector: vector, message: after)]
    }

    private mutating func deliverIfPending(_ vector: Int) -> [MSIXEffect] {
        guard pending.indices.contains(vector), pending[vector], route(for: vector) != nil else { return [] }
        pending[vector] = false
        return [.trigger(vector: vector)]
    }
}
