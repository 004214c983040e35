import Foundation
import Synchronization

public enum FwCfgError: Error, Equatable, CustomStringConvertible {
    case invalidFileName(String, reason: String)
    case duplicateFileName(String)
    case tooManyFiles(limit: Int)
    case fileTooLarge(name: String, size: Int, limit: Int)
    case invalidCPUCount(count: UInt16, maximum: UInt16)

    public var description: String {
        switch self {
        case let .invalidFileName(name, reason): return "fw_cfg file name \"\(name)\" \(reason)"
        case let .duplicateFileName(name): return "fw_cfg file \"\(name)\" is already present"
        case let .tooManyFiles(limit): return "fw_cfg holds at most \(limit) files"
        case let .fileTooLarge(name, size, limit):
            return "fw_cfg file \"\(name)\" is \(size) bytes, limit is \(limit)"
        case let .invalidCPUCount(count, maximum):
            return "fw_cfg CPU count \(count) must be 1...\(maximum) (the maximum CPU count)"
        }
    }
}

public struct FwCfgFile: Codable, Sendable, Equatable {
    public var name: String
    public var data: [UInt8]

    public init(name: String, data: [UInt8]) {
        self.name = name
        self.data = data
    }

    // The contents (ACPI tables: kilobytes) as Data, base64 in JSON: quick to decode at restore.
    enum CodingKeys: String, CodingKey { case name, data }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        data = Array(try c.decode(Data.self, forKey: .data))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(Data(data), forKey: .data)
    }
}

/// Captured state of `FwCfg`, its contents included so a restored machine serves the same bytes.
public struct FwCfgState: Codable, Sendable, Equatable {
    public var selector: UInt16
    /// Read position within the selected item.
    public var offset: UInt32
    public var ramSize: UInt64
    public var cpuCount: UInt16
    public var maxCPUs: UInt16
    /// In selector order, starting at 0x0020.
    public var files: [FwCfgFile]
    /// High half of the DMA address, written first; the low half's write starts the transfer.
    public var dmaAddressHigh: UInt32

    public init(
        selector: UInt16, offset: UInt32, ramSize: UInt64, cpuCount: UInt16, maxCPUs: UInt16,
        files: [FwCfgFile], dmaAddressHigh: UInt32 = 0
    ) {
        self.selector = selector
        self.offset = offset
        self.ramSize = ramSize
        self.cpuCount = cpuCount
        self.maxCPUs = maxCPUs
        self.files = files
        self.dmaAddressHigh = dmaAddressHigh
    }

    public func validate() throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: "fw_cfg", field: field, problem: problem)
        }
        do {
            try FwCfg.checkCPUCounts(cpuCount, maxCPUs)
            var checked: [FwCfgFile] = []
            for file in files {
                try FwCfg.checkNewFile(file, existing: checked)
                checked.append(file)
            }
        } catch {
            throw bad("contents", error.description)
        }
        let itemLength = FwCfgItems(self, dma: false).item(selector)?.count ?? 0
        if Int(offset) > itemLength {
            throw bad("offset", "\(offset) is past the end of item 0x\(String(selector, radix: 16)) (\(itemLength) bytes)")
        }
    }
}

/// QEMU's fw_cfg in its I/O-port form: a 16-bit write to 0x510 selects an item, byte reads from
/// 0x511 return its contents and advance; reading past the end returns 0. Insert this object at
/// 0x510 with length 2, and, when built with guest memory access, `dmaPort` at 0x514 with length 8
/// (QEMU's DMA interface, advertised in the ID item only then).
public final class FwCfg: BusDevice {
    public static let defaultPort: UInt64 = 0x510
    public static let portCount: UInt64 = 2
    public static let maxFiles = 64
    public static let maxFileSize = 64 << 20
    /// Names live in a 56-byte field that must keep a terminating NUL.
    public static let maxFileNameBytes = 55

    let core: FwCfgCore
    public let dmaPort: DMAPort

    public convenience init(
        ramSize: UInt64, cpuCount: UInt16, maxCPUs: UInt16? = nil, dmaMemory: (any DMAMemory)? = nil
    ) throws(FwCfgError) {
        let maxCPUs = maxCPUs ?? cpuCount
        try Self.checkCPUCounts(cpuCount, maxCPUs)
        let state = FwCfgState(selector: 0, offset: 0, ramSize: ramSize, cpuCount: cpuCount, maxCPUs: maxCPUs, files: [])
        self.init(validState: state, dmaMemory: dmaMemory)
    }

    public convenience init(restoring state: FwCfgState, dmaMemory: (any DMAMemory)? = nil) throws(DeviceStateError) {
        try state.validate()
        self.init(validState: state, dmaMemory: dmaMemory)
    }

    private init(validState: FwCfgState, dmaMemory: (any DMAMemory)?) {
        core = FwCfgCore(state: validState, dmaMemory: dmaMemory)
        dmaPort = DMAPort(core: core)
    }

    public var state: FwCfgState { core.locked.withLock { $0.state } }

    /// Adds a named file; it gets the next selector from 0x0020 and an entry in the directory.
    public func addFile(name: String, data: [UInt8]) throws(FwCfgError) {
        let file = FwCfgFile(name: name, data: data)
        try core.locked.withLock { (locked) throws(FwCfgError) in
            try Self.checkNewFile(file, existing: locked.state.files)
            locked.state.files.append(file)
            locked.rebuildItems(dma: core.dmaMemory != nil)
        }
    }

    /// Machine reset: the selection goes back to the signature; contents stay.
    public func reset() {
        core.locked.withLock { locked in
            locked.state.selector = 0
            locked.state.offset = 0
            locked.state.dmaAddressHigh = 0
        }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset == 1, size == 1 else { return 0 }
        return core.locked.withLock { locked in
            UInt64(locked.readDataByte())
        }
    }

    /// Only a 16-bit selector write does anything: items are read-only (QEMU ignores data-port
    /// writes too).
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset == 0, size == 2 else { return }
        core.locked.withLock { $0.select(UInt16(truncatingIfNeeded: value)) }
    }

    static func checkCPUCounts(_ count: UInt16, _ maximum: UInt16) throws(FwCfgError) {
        guard count >= 1, count <= maximum else { throw .invalidCPUCount(count: count, maximum: maximum) }
    }

    static func checkNewFile(_ file: FwCfgFile, existing: [FwCfgFile]) throws(FwCfgError) {
        let nameBytes = file.name.utf8.count
        if nameBytes == 0 { throw .invalidFileName(file.name, reason: "is empty") }
        if nameBytes > maxFileNameBytes {
            throw .invalidFileName(file.name, reason: "is \(nameBytes) bytes, limit is \(maxFileNameBytes)")
        }
        if file.name.utf8.contains(0) { throw .invalidFileName(file.name, reason: "contains a NUL byte") }
        if existing.count >= maxFiles { throw .tooManyFiles(limit: maxFiles) }
        if existing.contains(where: { $0.name == file.name }) { throw .duplicateFileName(file.name) }
        if file.data.count > maxFileSize {
            throw .fileTooLarge(name: file.name, size: file.data.count, limit: maxFileSize)
        }
    }
}

/// State and item table shared by the PIO ports and the DMA port.
final class FwCfgCore: Sendable {
    struct Locked {
        var state: FwCfgState
        var items: FwCfgItems

        mutating func rebuildItems(dma: Bool) { items = FwCfgItems(state, dma: dma) }

        mutating func select(_ selector: UInt16) {
            state.selector = selector
            state.offset = 0
        }

        /// The selected item's remaining bytes, empty when nothing (more) is there.
        var remainingItem: ArraySlice<UInt8> {
            guard let item = items.item(state.selector), Int(state.offset) < item.count else { return [] }
            return item[Int(state.offset)...]
        }

        mutating func readDataByte() -> UInt8 {
            guard let byte = remainingItem.first else { return 0 }
            state.offset += 1  // below the item's length, which fits in UInt32
            return byte
        }
    }

    let locked: Mutex<Locked>
    let dmaMemory: (any DMAMemory)?

    init(state: FwCfgState, dmaMemory: (any DMAMemory)?) {
        locked = Mutex(Locked(state: state, items: FwCfgItems(state, dma: dmaMemory != nil)))
        self.dmaMemory = dmaMemory
    }
}
