/// The ACPI tables for firmware that loads them itself (SeaBIOS, OVMF), in the form QEMU hands
/// them over through fw_cfg: three files the firmware reads and links in guest memory.
/// - `etc/acpi/tables`: XSDT, RSDT, FADT, FACS, MADT, MCFG and DSDT, laid out as in the
///   direct-boot image (`ACPITables`) but starting at offset 0 with the XSDT, the FACS at an
///   offset that is a multiple of 64.
/// - `etc/acpi/rsdp`: the 36-byte RSDP.
/// - `etc/table-loader`: 128-byte "BIOS linker/loader" commands. The firmware allocates both
///   files (the RSDP in the F segment, where OSes scan for it), adds each file's allocated
///   address to the pointer fields that hold offsets into it, then recomputes the checksums
///   of every table a pointer changed.
///
/// Pointer fields in both files hold the offset of their target within `etc/acpi/tables`, and
/// every target is the first byte of a table (OVMF installs each pointed-at table through the
/// UEFI ACPI protocol and rebuilds the RSDP, XSDT and RSDT itself). The checksum bytes that the
/// loader recomputes are 0 in the files: OVMF stores the checksum of the range including the
/// old byte, so a pre-filled value would come out wrong.
public struct FirmwareACPITables: Sendable {
    public static let tablesFile = "etc/acpi/tables"
    public static let rsdpFile = "etc/acpi/rsdp"
    public static let loaderFile = "etc/table-loader"

    /// Contents of `etc/acpi/tables`.
    public let tables: [UInt8]
    /// Contents of `etc/acpi/rsdp`.
    public let rsdp: [UInt8]
    /// Contents of `etc/table-loader`: a whole number of 128-byte commands.
    public let loader: [UInt8]
    /// Offset of each table in `tables`, by signature ("XSDT", "RSDT", "FACP", "FACS", "APIC",
    /// "MCFG", "DSDT").
    public let tableOffsets: [String: UInt32]

    /// The tables file's alignment: the FACS inside it must stay 64-byte aligned.
    static let tablesAlignment = UInt32(FACS.alignment)
    static let rsdpAlignment = UInt32(ACPITables.rsdpAlignment)

    /// The fw_cfg files and their contents, in the order a VMM would register them.
    public var files: [(name: String, contents: [UInt8])] {
        [(Self.rsdpFile, rsdp), (Self.tablesFile, tables), (Self.loaderFile, loader)]
    }

    /// Builds the three files for `platform`; the same tables as `ACPITables.build`.
    public static func build(_ platform: ACPIPlatform) throws(BootError) -> FirmwareACPITables {
        let image = try ACPITables.layOut(platform, at: 0, withRSDP: false)
        var offsets: [String: UInt32] = [:]
        for (signature, address) in image.addresses {
            guard let offset = UInt32(exactly: address) else { throw .acpi("\(signature) offset \(hex(address)) exceeds 32 bits") }
            offsets[signature] = offset
        }
        func offset(_ signature: String) throws(BootError) -> UInt32 {
            guard let offset = offsets[signature] else { throw .acpi("no \(signature) in the firmware tables") }
            return offset
        }
        var tables = image.bytes
        var rsdp = ACPITables.buildRSDP(xsdt: UInt64(try offset("XSDT")), rsdt: UInt64(try offset("RSDT")))

        var loader = TableLoader(sizes: [tablesFile: tables.count, rsdpFile: rsdp.count])
        try loader.allocate(rsdpFile, alignment: rsdpAlignment, zone: .fSegment)
        try loader.allocate(tablesFile, alignment: tablesAlignment, zone: .high)

        // The tables holding pointers, each with its pointer fields (offset in the table, size,
        // target table), in QEMU's order: a table's pointers, then its checksum.
        let entries = ACPITables.rootEntries
        let pointerTables: [(String, [(Int, Int, String)])] = [
            ("FACP", [(FADT.Offset.firmwareControl, 4, "FACS"), (FADT.Offset.dsdt, 4, "DSDT"), (FADT.Offset.xDSDT, 8, "DSDT")]),
            ("XSDT", entries.enumerated().map { (ACPITableHeader.size + 8 * $0.offset, 8, $0.element) }),
            ("RSDT", entries.enumerated().map { (ACPITableHeader.size + 4 * $0.offset, 4, $0.element) }),
        ]
        for (signature, pointers) in pointerTables {
            let start = Int(try offset(signature))
            for (field, size, target) in pointers {
                try loader.addPointer(in: tablesFile, at: start + field, size: size, to: tablesFile,
                                      holding: try offset(target), contents: tables)
            }
            guard let length = tables.le(UInt32.self, at: start + ACPITableHeader.lengthOffset) else {
                throw .acpi("\(signature) header lies outside the firmware tables")
            }
            tables[start + ACPITableHeader.checksumOffset] = 0
            try loader.addChecksum(in: tablesFile, at: start + ACPITableHeader.checksumOffset, start: start, length: Int(length))
        }

        try loader.addPointer(in: rsdpFile, at: ACPITables.RSDPOffset.rsdt, size: 4, to: tablesFile,
                              holding: try offset("RSDT"), contents: rsdp)
        try loader.addPointer(in: rsdpFile, at: ACPITables.RSDPOffset.xsdt, size: 8, to: tablesFile,
                              holding: try offset("XSDT"), contents: rsdp)
        rsdp[ACPITables.RSDPOffset.checksum] = 0
        rsdp[ACPITables.RSDPOffset.extendedChecksum] = 0
        // The ACPI 1.0 checksum first: the extended one covers its byte.
        try loader.addChecksum(in: rsdpFile, at: ACPITables.RSDPOffset.checksum, start: 0,
                               length: ACPITables.RSDPOffset.checksummedLength)
        try loader.addChecksum(in: rsdpFile, at: ACPITables.RSDPOffset.extendedChecksum, start: 0, length: rsdp.count)

        return FirmwareACPITables(tables: tables, rsdp: rsdp, loader: loader.commands, tableOffsets: offsets)
    }
}

/// Encoder of QEMU's BIOS linker/loader commands (`etc/table-loader`). Each command is 128
/// bytes: a little-endian u32 command number, then its fields, zero-padded:
/// - ALLOCATE (1): file name, u32 alignment (a power of 2), u8 zone (1 high memory, 2 F segment).
/// - ADD_POINTER (2): destination file, source file, u32 offset of the pointer field in the
///   destination, u8 field size (1, 2, 4 or 8); the loader adds the source's address to the
///   little-endian value there.
/// - ADD_CHECKSUM (3): file, u32 offset of the checksum byte, u32 start and u32 length of the
///   range that must sum to 0.
/// File names are NUL-padded to 56 bytes (the last always NUL). Every command is checked the
/// way SeaBIOS and OVMF check it, so a layout mistake throws here instead of making the
/// firmware skip or reject the tables.
struct TableLoader {
    static let commandSize = 128
    static let fileNameSize = 56

    enum Command: UInt32 {
        case allocate = 1, addPointer = 2, addChecksum = 3
    }

    enum Zone: UInt8 {
        case high = 1, fSegment = 2
    }

    /// Field offsets within a command.
    enum Offset {
        static let command = 0, firstFile = 4
        static let allocateAlignment = 60, allocateZone = 64
        static let pointerSourceFile = 60, pointerOffset = 116, pointerSize = 120
        static let checksumOffset = 60, checksumStart = 64, checksumLength = 68
    }

    /// The size of each file commands may name.
    let sizes: [String: Int]
    private(set) var commands: [UInt8] = []
    private var allocated: Set<String> = []

    init(sizes: [String: Int]) { self.sizes = sizes }

    mutating func allocate(_ file: String, alignment: UInt32, zone: Zone) throws(BootError) {
        guard alignment != 0, alignment & (alignment - 1) == 0 else {
            throw .acpi("table-loader alignment \(alignment) of \(file) is not a power of 2")
        }
        guard sizes[file].map({ $0 > 0 }) == true, !allocated.contains(file) else {
            throw .acpi("table-loader file \(file) is unknown, empty or allocated twice")
        }
        allocated.insert(file)
        var command = try Self.command(.allocate, file)
        command.put(alignment, at: Offset.allocateAlignment)
        command[Offset.allocateZone] = zone.rawValue
        commands += command
    }

    /// Makes the loader add `source`'s address to the `size`-byte field at `offset` of
    /// `destination`, whose current `contents` must hold `value`, an offset inside `source`.
    mutating func addPointer(in destination: String, at offset: Int, size: Int, to source: String,
                             holding value: UInt32, contents: [UInt8]) throws(BootError) {
        let destinationSize = try allocatedSize(destination), sourceSize = try allocatedSize(source)
        guard [1, 2, 4, 8].contains(size), offset >= 0, offset <= destinationSize - size,
              contents.count == destinationSize else {
            throw .acpi("table-loader pointer at \(offset) (\(size) bytes) lies outside \(destination)")
        }
        let stored = contents[offset..<(offset + size)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard stored == UInt64(value), Int(value) < sourceSize else {
            throw .acpi("table-loader pointer at \(offset) in \(destination) holds \(hex(stored)), not offset \(hex(UInt64(value))) inside \(source)")
        }
        var command = try Self.command(.addPointer, destination)
        command.put(bytes: try Self.fileName(source), at: Offset.pointerSourceFile)
        command.put(UInt32(offset), at: Offset.pointerOffset)
        command[Offset.pointerSize] = UInt8(size)
        commands += command
    }

    mutating func addChecksum(in file: String, at offset: Int, start: Int, length: Int) throws(BootError) {
        let size = try allocatedSize(file)
        guard offset >= 0, offset < size, start >= 0, length >= 0, start <= size - length,
              (start..<(start + length)).contains(offset) else {
            throw .acpi("table-loader checksum at \(offset) over \(start)+\(length) lies outside \(file)")
        }
        var command = try Self.command(.addChecksum, file)
        command.put(UInt32(offset), at: Offset.checksumOffset)
        command.put(UInt32(start), at: Offset.checksumStart)
        command.put(UInt32(length), at: Offset.checksumLength)
        commands += command
    }

    private func allocatedSize(_ file: String) throws(BootError) -> Int {
        guard allocated.contains(file), let size = sizes[file] else {
            throw .acpi("table-loader command names \(file) before allocating it")
        }
        return size
    }

    private static func command(_ command: Command, _ file: String) throws(BootError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: commandSize)
        bytes.put(command.rawValue, at: Offset.command)
        bytes.put(bytes: try fileName(file), at: Offset.firstFile)
        return bytes
    }

    /// `name` NUL-padded to 56 bytes; at most 55 bytes, no NULs of its own.
    static func fileName(_ name: String) throws(BootError) -> [UInt8] {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count < fileNameSize, !bytes.contains(0) else {
            throw .acpi("fw_cfg file name \"\(name)\" must be 1-\(fileNameSize - 1) bytes without NULs")
        }
        return bytes + [UInt8](repeating: 0, count: fileNameSize - bytes.count)
    }
}
