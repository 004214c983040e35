/// Snapshot checks for the PCI building blocks. A decoded state is untrusted: it must describe
/// the same function the host configuration builds (the `template`), differing only where a
/// guest or the device itself could have changed it.
extension PCIConfigSpace {
    /// Status bit 3 (interrupt pending) and the pin register (set when the root attaches the
    /// function) are the only read-only bytes the device itself changes.
    private static let deviceManaged: Set<Int> = [PCIRegister.status, PCIRegister.interruptPin]

    public func validateRestored(as template: PCIConfigSpace, device: String) throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: device, field: field, problem: problem)
        }
        guard bytes.count == Self.extendedSize, writeMask.count == Self.extendedSize, bars.count == 6 else {
            throw bad("config space", "has the wrong size")
        }
        guard writeMask == template.writeMask, bars == template.bars,
              nextCapabilityOffset == template.nextCapabilityOffset, lastCapabilityOffset == template.lastCapabilityOffset else {
            throw bad("config space", "describes a different function (BARs, capabilities or writable bits differ)")
        }
        for offset in 0..<Self.extendedSize where writeMask[offset] != 0xFF && !Self.deviceManaged.contains(offset) {
            let readOnly = ~writeMask[offset]
            guard bytes[offset] & readOnly == template.bytes[offset] & readOnly else {
                throw bad("config byte 0x\(String(offset, radix: 16))", "changes read-only bits")
            }
        }
        guard status & ~PCIRegister.statusInterrupt == template.status & ~PCIRegister.statusInterrupt else {
            throw bad("status register", "changes read-only bits")
        }
        guard bytes[PCIRegister.interruptPin] <= 1 else { throw bad("interrupt pin", "is not INTA# or none") }
    }
}

extension MSIXTable {
    public func validateRestored(as template: MSIXTable, device: String) throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: device, field: field, problem: problem)
        }
        guard entries.count == template.entries.count, pending.count == entries.count else {
            throw bad("MSI-X table", "has \(entries.count) entries and \(pending.count) pending bits, expected \(template.entries.count)")
        }
        if let vector = entries.firstIndex(where: { $0.vectorControl & ~1 != 0 }) {
            throw bad("MSI-X vector \(vector) control", "sets reserved bits")
        }
    }

    /// Every vector's current route, to re-install the routes in a fresh controller after restore.
    public func currentRoutes() -> [MSIXEffect] {
        entries.indices.compactMap { vector in route(for: vector).map { MSIXEffect.route(vector: vector, message: $0) } }
    }
}
