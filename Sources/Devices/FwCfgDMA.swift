/// Guest memory as a DMA-capable device reaches it. The VMM implements this over GuestMemory,
/// whose range checks turn a bad guest address into a thrown error, never a host access.
public protocol DMAMemory: Sendable {
    func read(at address: UInt64, count: Int) throws -> [UInt8]
    func write(_ bytes: ArraySlice<UInt8>, at address: UInt64) throws
}

extension FwCfg {
    /// QEMU's fw_cfg DMA interface (docs/specs/fw_cfg.rst): the guest writes the big-endian
    /// address of an FWCfgDmaAccess {be32 control, be32 length, be64 address}, high half at
    /// offset 0 and low half at offset 4 (which starts the transfer), or all 8 bytes at once.
    /// Reads return the "QEMU CFG" signature. Does nothing unless the FwCfg has guest memory.
    public final class DMAPort: BusDevice {
        public static let defaultPort: UInt64 = 0x514
        public static let portCount: UInt64 = 8
        static let signature = Array("QEMU CFG".utf8)

        let core: FwCfgCore

        init(core: FwCfgCore) { self.core = core }

        public func read(offset: UInt64, size: Int) -> UInt64 {
            guard core.dmaMemory != nil else { return 0 }
            return readBytewise(offset: offset, size: size) { index in
                index < 8 ? Self.signature[Int(index)] : 0
            }
        }

        /// The guest stores each half with cpu_to_be32, so the port value is byte-swapped.
        public func write(offset: UInt64, size: Int, value: UInt64) {
            guard let memory = core.dmaMemory else { return }
            core.locked.withLock { locked in
                switch (offset, size) {
                case (0, 4):
                    locked.state.dmaAddressHigh = UInt32(truncatingIfNeeded: value).byteSwapped
                case (4, 4):
                    let low = UInt64(UInt32(truncatingIfNeeded: value).byteSwapped)
                    locked.dmaTransfer(descriptor: UInt64(locked.state.dmaAddressHigh) << 32 | low, memory: memory)
                case (0, 8):
                    locked.dmaTransfer(descriptor: value.byteSwapped, memory: memory)
                default:
                    break
                }
            }
        }
    }
}

enum FwCfgDMAControl {
    static let error: UInt32 = 0x01
    static let read: UInt32 = 0x02
    static let skip: UInt32 = 0x04
    static let select: UInt32 = 0x08
    static let write: UInt32 = 0x10
    static let descriptorSize = 16
    /// Zeros for reads past an item's end are written in pieces, never one guest-sized buffer.
    static let zeroChunk = 4096
}

extension FwCfgCore.Locked {
    /// Runs one DMA request and writes its status (0, or the error bit) back to the descriptor.
    /// A descriptor that cannot be read gets no status: there is nowhere to put it.
    mutating func dmaTransfer(descriptor: UInt64, memory: any DMAMemory) {
        guard let raw = try? memory.read(at: descriptor, count: FwCfgDMAControl.descriptorSize),
              raw.count == FwCfgDMAControl.descriptorSize
        else { return }
        let field = { (range: Range<Int>) in raw[range].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        let control = UInt32(field(0..<4))
        let succeeded = perform(control: control, length: UInt32(field(4..<8)), target: field(8..<16), memory: memory)
        let status = bigEndian(UInt64(succeeded ? 0 : FwCfgDMAControl.error), bytes: 4)
        try? memory.write(status[...], at: descriptor)
    }

    private mutating func perform(control: UInt32, length: UInt32, target: UInt64, memory: any DMAMemory) -> Bool {
        if control & FwCfgDMAControl.select != 0 { select(UInt16(truncatingIfNeeded: control >> 16)) }
        let reading = control & FwCfgDMAControl.read != 0
        if !reading && control & FwCfgDMAControl.write != 0 { return false }  // every item is read-only
        if !reading && control & FwCfgDMAControl.skip == 0 { return true }  // nothing asked
        var remaining = UInt64(length)
        var target = target
        while remaining > 0 {
            let available = remainingItem
            // Past the item's end a read gets zeros and a skip just ends (as QEMU does).
            let count = available.isEmpty ? min(remaining, UInt64(FwCfgDMAControl.zeroChunk)) : min(remaining, UInt64(available.count))
            if reading {
                let bytes = available.isEmpty ? [UInt8](repeating: 0, count: Int(count))[...] : available.prefix(Int(count))
                do { try memory.write(bytes, at: target) } catch { return false }
            } else if available.isEmpty {
                return true
            }
            if !available.isEmpty { state.offset += UInt32(count) }  // count <= item length < 2^32
            let (next, overflow) = target.addingReportingOverflow(count)
            remaining -= count
            if overflow && remaining > 0 { return false }
            target = next
        }
        return true
    }
}
