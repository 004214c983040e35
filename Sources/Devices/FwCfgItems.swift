/// The item table derived from a state; rebuilt whenever files change.
struct FwCfgItems: Sendable {
    static let signature: UInt16 = 0x0000
    static let id: UInt16 = 0x0001
    static let ramSize: UInt16 = 0x0003
    static let cpuCount: UInt16 = 0x0005
    static let maxCPUs: UInt16 = 0x000F
    static let fileDirectory: UInt16 = 0x0019
    static let firstFile: UInt16 = 0x0020
    /// Bit 14 marks a write selection and bit 15 an architecture-specific item; Vireo has no
    /// arch items, so only the low 14 bits name one of its items.
    static let entryMask: UInt16 = 0x3FFF
    static let archLocal: UInt16 = 0x8000

    private var fixed: [UInt16: [UInt8]]
    private var files: [[UInt8]]

    /// Feature bits of the ID item: the traditional interface, and DMA when it is wired.
    static let featureTraditional: UInt64 = 0x01
    static let featureDMA: UInt64 = 0x02

    init(_ state: FwCfgState, dma: Bool) {
        fixed = [
            Self.signature: Array("QEMU".utf8),
            Self.id: littleEndian(Self.featureTraditional | (dma ? Self.featureDMA : 0), bytes: 4),
            Self.ramSize: littleEndian(state.ramSize, bytes: 8),
            Self.cpuCount: littleEndian(UInt64(state.cpuCount), bytes: 2),
            Self.maxCPUs: littleEndian(UInt64(state.maxCPUs), bytes: 2),
        ]
        files = state.files.map(\.data)
        // FILE_DIR is big-endian: count, then {size, select, reserved, name[56]} per file.
        var directory = bigEndian(UInt64(state.files.count), bytes: 4)
        for (index, file) in state.files.enumerated() {
            directory += bigEndian(UInt64(file.data.count), bytes: 4)
            directory += bigEndian(UInt64(Self.firstFile) + UInt64(index), bytes: 2)
            directory += [0, 0]
            let name = Array(file.name.utf8.prefix(FwCfg.maxFileNameBytes))
            directory += name + [UInt8](repeating: 0, count: 56 - name.count)
        }
        fixed[Self.fileDirectory] = directory
    }

    func item(_ selector: UInt16) -> [UInt8]? {
        if selector & Self.archLocal != 0 { return nil }
        let key = selector & Self.entryMask
        if key >= Self.firstFile {
            let index = Int(key - Self.firstFile)
            return index < files.count ? files[index] : nil
        }
        return fixed[key]
    }
}

func littleEndian(_ value: UInt64, bytes: Int) -> [UInt8] {
    (0..<bytes).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
}

func bigEndian(_ value: UInt64, bytes: Int) -> [UInt8] {
    littleEndian(value, bytes: bytes).reversed()
}
