import Testing
@testable import Boot

/// Executes an `etc/table-loader` command list the way firmware does, written from the command
/// layout (QEMU's BIOS linker/loader) rather than from Vireo's encoder: 128-byte commands,
/// ALLOCATE = 1 (name[56], u32 align, u8 zone), ADD_POINTER = 2 (dest[56], src[56], u32 offset,
/// u8 size), ADD_CHECKSUM = 3 (name[56], u32 offset, u32 start, u32 length). It is as strict as
/// SeaBIOS and OVMF together: NUL-terminated names, known and allocated files, power-of-2
/// alignments, fields inside their files, pointer values inside the pointee file (OVMF) and
/// representable in the field after relocation.
struct TableLoaderInterpreter {
    enum Command: Equatable, CustomStringConvertible {
        case allocate(file: String, alignment: UInt32, zone: UInt8)
        case addPointer(destination: String, source: String, offset: UInt32, size: UInt8)
        case addChecksum(file: String, offset: UInt32, start: UInt32, length: UInt32)

        var description: String {
            switch self {
            case let .allocate(file, alignment, zone): "ALLOCATE \(file) align \(alignment) zone \(zone)"
            case let .addPointer(destination, source, offset, size): "ADD_POINTER \(destination)+\(offset)/\(size) -> \(source)"
            case let .addChecksum(file, offset, start, length): "ADD_CHECKSUM \(file)+\(offset) over \(start)+\(length)"
            }
        }
    }

    /// SeaBIOS subtracts the range's sum from the checksum byte; OVMF overwrites the byte with
    /// the negated sum of the range (which includes the byte itself).
    enum ChecksumRule { case seaBIOS, ovmf }

    static func name(_ command: [UInt8], at offset: Int) throws -> String {
        let field = Array(command[offset..<(offset + 56)])
        guard field[55] == 0, let end = field.firstIndex(of: 0), end > 0 else { throw TestFailure("file name at \(offset) is not NUL-terminated") }
        guard field[end...].allSatisfy({ $0 == 0 }) else { throw TestFailure("file name at \(offset) is not NUL-padded") }
        return String(decoding: field[..<end], as: UTF8.self)
    }

    static func decode(_ loader: [UInt8]) throws -> [Command] {
        guard loader.count % 128 == 0, !loader.isEmpty else { throw TestFailure("loader size \(loader.count) is not n * 128") }
        return try stride(from: 0, to: loader.count, by: 128).map { start in
            let command = Array(loader[start..<(start + 128)])
            func u32(_ offset: Int) -> UInt32 { command.le(UInt32.self, at: offset) ?? 0 }
            let used: Int
            let decoded: Command
            switch u32(0) {
            case 1:
                decoded = .allocate(file: try name(command, at: 4), alignment: u32(60), zone: command[64]); used = 65
            case 2:
                decoded = .addPointer(destination: try name(command, at: 4), source: try name(command, at: 60),
                                      offset: u32(116), size: command[120]); used = 121
            case 3:
                decoded = .addChecksum(file: try name(command, at: 4), offset: u32(60), start: u32(64), length: u32(68)); used = 72
            default:
                throw TestFailure("unknown command \(u32(0)) at \(start)")
            }
            guard command[used...].allSatisfy({ $0 == 0 }) else { throw TestFailure("\(decoded): padding is not zero") }
            return decoded
        }
    }

    struct Blob {
        var address: UInt64
        var bytes: [UInt8]
    }

    var blobs: [String: Blob] = [:]
    /// Every ADD_POINTER's source file and the offset its field held before relocation.
    var pointees: [(source: String, offset: UInt64)] = []

    /// Runs `loader` over the fw_cfg `files`, placing each allocated file at `placement[name]`.
    init(files: [String: [UInt8]], loader: [UInt8], placement: [String: UInt64], rule: ChecksumRule) throws {
        for command in try Self.decode(loader) {
            switch command {
            case let .allocate(file, alignment, zone):
                guard let contents = files[file], !contents.isEmpty, blobs[file] == nil else { throw TestFailure("\(command): bad file") }
                guard alignment != 0, alignment & (alignment - 1) == 0, alignment <= 4096 else { throw TestFailure("\(command): bad alignment") }
                guard let address = placement[file], address % UInt64(alignment) == 0 else { throw TestFailure("\(command): placement not aligned") }
                switch zone {
                case 1: break
                case 2: guard address >= 0xF0000, address + UInt64(contents.count) <= 0x10_0000 else { throw TestFailure("\(command): not in the F segment") }
                default: throw TestFailure("\(command): unknown zone")
                }
                blobs[file] = Blob(address: address, bytes: contents)
            case let .addPointer(destination, source, offset, size):
                guard var pointer = blobs[destination], let pointee = blobs[source] else { throw TestFailure("\(command): file not allocated") }
                let width = Int(size), start = Int(offset)
                guard [1, 2, 4, 8].contains(width), start + width <= pointer.bytes.count else { throw TestFailure("\(command): bad field") }
                let value = pointer.bytes[start..<(start + width)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                guard value < UInt64(pointee.bytes.count) else { throw TestFailure("\(command): value \(value) outside \(source)") }
                let relocated = value + pointee.address
                guard width == 8 || relocated >> (8 * UInt64(width)) == 0 else { throw TestFailure("\(command): \(relocated) does not fit") }
                for index in 0..<width { pointer.bytes[start + index] = UInt8(truncatingIfNeeded: relocated >> (8 * UInt64(index))) }
                blobs[destination] = pointer
                pointees.append((source, value))
            case let .addChecksum(file, offset, start, length):
                guard var blob = blobs[file] else { throw TestFailure("\(command): file not allocated") }
                let (at, from, count) = (Int(offset), Int(start), Int(length))
                guard at < blob.bytes.count, from + count <= blob.bytes.count else { throw TestFailure("\(command): range outside the file") }
                let sum = blob.bytes[from..<(from + count)].reduce(UInt8(0), &+)
                switch rule {
                case .seaBIOS: blob.bytes[at] = blob.bytes[at] &- sum
                case .ovmf: blob.bytes[at] = 0 &- sum
                }
                blobs[file] = blob
            }
        }
    }

    /// `count` bytes at guest-physical `address`, from whichever loaded file holds them.
    func bytes(at address: UInt64, count: Int) throws -> [UInt8] {
        for blob in blobs.values where address >= blob.address && address - blob.address + UInt64(count) <= UInt64(blob.bytes.count) {
            let start = Int(address - blob.address)
            return Array(blob.bytes[start..<(start + count)])
        }
        throw TestFailure("\(count) bytes at 0x\(String(address, radix: 16)) are not in any loaded file")
    }

    /// The standard-header table at `address`, its length taken from the header.
    func table(at address: UInt64) throws -> [UInt8] {
        let header = try bytes(at: address, count: 36)
        guard let length = header.le(UInt32.self, at: 4), length >= 36 else { throw TestFailure("bad table length at \(address)") }
        return try bytes(at: address, count: Int(length))
    }
}

@Suite("Firmware ACPI tables: etc/acpi/tables, etc/acpi/rsdp and the etc/table-loader commands")
struct ACPIFirmwareTablesTests {
    static let tables = "etc/acpi/tables", rsdp = "etc/acpi/rsdp", loader = "etc/table-loader"

    static func run(_ firmware: FirmwareACPITables, rsdpAt: UInt64 = 0xF5A40, tablesAt: UInt64 = 0x7FFE_0000,
                    rule: TableLoaderInterpreter.ChecksumRule = .ovmf) throws -> TableLoaderInterpreter {
        try TableLoaderInterpreter(files: [tables: firmware.tables, rsdp: firmware.rsdp], loader: firmware.loader,
                                   placement: [tables: tablesAt, rsdp: rsdpAt], rule: rule)
    }

    @Test("file names and the exact command list: allocations first, each table's pointers then its checksum")
    func commandList() throws {
        let firmware = try FirmwareACPITables.build(ACPIPlatform(vcpuCount: 2))
        #expect(FirmwareACPITables.tablesFile == Self.tables && FirmwareACPITables.rsdpFile == Self.rsdp
            && FirmwareACPITables.loaderFile == Self.loader)
        #expect(firmware.files.map(\.name) == [Self.rsdp, Self.tables, Self.loader])
        #expect(firmware.loader.count == 18 * 128)
        // Every name field is the name then NULs up to 56 bytes.
        let padded = Array(Self.tables.utf8) + [UInt8](repeating: 0, count: 56 - 15)
        #expect(Array(firmware.loader[(128 + 4)..<(128 + 60)]) == padded)
        #expect(firmware.loader.le(UInt32.self, at: 0) == 1 && firmware.loader.le(UInt32.self, at: 60) == 16 && firmware.loader[64] == 2)
        typealias C = TableLoaderInterpreter.Command
        // XSDT at 0 (60 bytes), RSDT at 64 (48), FADT at 112 (276), FACS at 448, MADT at 512.
        #expect(firmware.tableOffsets["XSDT"] == 0 && firmware.tableOffsets["RSDT"] == 64 && firmware.tableOffsets["FACP"] == 112)
        #expect(firmware.tableOffsets["FACS"] == 448 && firmware.tableOffsets["APIC"] == 512)
        let expected: [C] = [
            .allocate(file: Self.rsdp, alignment: 16, zone: 2),
            .allocate(file: Self.tables, alignment: 64, zone: 1),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 112 + 36, size: 4),    // FIRMWARE_CTRL
            .addPointer(destination: Self.tables, source: Self.tables, offset: 112 + 40, size: 4),    // DSDT
            .addPointer(destination: Self.tables, source: Self.tables, offset: 112 + 140, size: 8),   // X_DSDT
            .addChecksum(file: Self.tables, offset: 112 + 9, start: 112, length: 276),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 36, size: 8),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 44, size: 8),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 52, size: 8),
            .addChecksum(file: Self.tables, offset: 9, start: 0, length: 60),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 64 + 36, size: 4),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 64 + 40, size: 4),
            .addPointer(destination: Self.tables, source: Self.tables, offset: 64 + 44, size: 4),
            .addChecksum(file: Self.tables, offset: 64 + 9, start: 64, length: 48),
            .addPointer(destination: Self.rsdp, source: Self.tables, offset: 16, size: 4),
            .addPointer(destination: Self.rsdp, source: Self.tables, offset: 24, size: 8),
            .addChecksum(file: Self.rsdp, offset: 8, start: 0, length: 20),
            .addChecksum(file: Self.rsdp, offset: 32, start: 0, length: 36),
        ]
        #expect(try TableLoaderInterpreter.decode(firmware.loader) == expected)
    }

    @Test("the files hold offsets and zeroed checksums where the loader patches, valid checksums elsewhere")
    func unpatchedFiles() throws {
        let firmware = try FirmwareACPITables.build(ACPIPlatform(vcpuCount: 2))
        let (tables, rsdp) = (firmware.tables, firmware.rsdp)
        #expect(rsdp.count == 36 && Array(rsdp[0..<8]) == Array("RSD PTR ".utf8) && rsdp[15] == 2)
        #expect(rsdp.le(UInt32.self, at: 16) == 64 && rsdp.le(UInt64.self, at: 24) == 0)
        #expect(rsdp[8] == 0 && rsdp[32] == 0)   // OVMF sums the old byte in: it must start at 0
        #expect(tables[9] == 0 && tables[64 + 9] == 0 && tables[112 + 9] == 0)
        #expect(tables.le(UInt64.self, at: 36) == 112 && tables.le(UInt64.self, at: 44) == 512)
        #expect(tables.le(UInt32.self, at: 112 + 36) == 448 && tables.le(UInt32.self, at: 112 + 40) == firmware.tableOffsets["DSDT"])
        #expect(tables.le(UInt64.self, at: 112 + 132) == 0)   // X_FIRMWARE_CTRL unused
        for signature in ["APIC", "MCFG", "DSDT"] {
            let offset = Int(try #require(firmware.tableOffsets[signature]))
            let length = Int(try #require(tables.le(UInt32.self, at: offset + 4)))
            #expect(Array(tables[offset..<(offset + 4)]) == Array(signature.utf8))
            #expect(tables[offset..<(offset + length)].reduce(UInt8(0), &+) == 0, "\(signature)")
        }
        #expect(Array(tables[448..<456]) == Array("FACS".utf8) + [64, 0, 0, 0])
    }

    @Test("after loading, the RSDP, XSDT, RSDT and FADT reach every table with valid checksums",
          arguments: [(1, UInt64(0x7FFE_0000), UInt64(0xF5A40)), (8, 0xBFF0_0040, 0xF0000), (254, 0x0010_0000, 0xFFFD0)])
    func loaded(vcpus: Int, tablesAt: UInt64, rsdpAt: UInt64) throws {
        let platform = ACPIPlatform(vcpuCount: vcpus, pciMMIO64: 0x10_0000_0000..<0x20_0000_0000)
        let firmware = try FirmwareACPITables.build(platform)
        let memory = try Self.run(firmware, rsdpAt: rsdpAt, tablesAt: tablesAt)
        let rsdp = try memory.bytes(at: rsdpAt, count: 36)
        #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8) && rsdp[15] == 2 && rsdp.le(UInt32.self, at: 20) == 36)
        #expect(rsdp[0..<20].reduce(UInt8(0), &+) == 0 && rsdp.reduce(UInt8(0), &+) == 0)
        let xsdtAddress = try #require(rsdp.le(UInt64.self, at: 24))
        let rsdtAddress = UInt64(try #require(rsdp.le(UInt32.self, at: 16)))
        #expect(xsdtAddress == tablesAt && rsdtAddress == tablesAt + 64)

        let xsdt = try memory.table(at: xsdtAddress), rsdt = try memory.table(at: rsdtAddress)
        #expect(Array(xsdt[0..<4]) == Array("XSDT".utf8) && Array(rsdt[0..<4]) == Array("RSDT".utf8))
        let xsdtEntries = stride(from: 36, to: xsdt.count, by: 8).compactMap { xsdt.le(UInt64.self, at: $0) }
        let rsdtEntries = stride(from: 36, to: rsdt.count, by: 4).compactMap { rsdt.le(UInt32.self, at: $0).map(UInt64.init) }
        #expect(xsdtEntries == rsdtEntries && xsdtEntries.count == 3)
        let signatures = try xsdtEntries.map { String(decoding: try memory.bytes(at: $0, count: 4), as: UTF8.self) }
        #expect(signatures == ["FACP", "APIC", "MCFG"])
        #expect(xsdtEntries.first == tablesAt + 112 && xsdtEntries.dropFirst().first == tablesAt + 512)

        let fadt = try memory.table(at: xsdtEntries[0])
        #expect(fadt.count == 276)
        let dsdtAddress = try #require(fadt.le(UInt64.self, at: 140))
        #expect(fadt.le(UInt32.self, at: 40).map(UInt64.init) == dsdtAddress)
        let dsdt = try memory.table(at: dsdtAddress)
        #expect(Array(dsdt[0..<4]) == Array("DSDT".utf8))
        let facsAddress = UInt64(try #require(fadt.le(UInt32.self, at: 36)))
        #expect(facsAddress == tablesAt + 448 && facsAddress % 64 == 0)
        #expect(fadt.le(UInt64.self, at: 132) == 0)
        #expect(try memory.bytes(at: facsAddress, count: 8) == Array("FACS".utf8) + [64, 0, 0, 0])
        for table in [xsdt, rsdt, fadt, dsdt] + (try xsdtEntries.dropFirst().map { try memory.table(at: $0) }) {
            #expect(table.reduce(UInt8(0), &+) == 0, "\(String(decoding: table[0..<4], as: UTF8.self)) checksum")
        }
        // Nothing but the two files was touched, and the tables file kept its size.
        #expect(memory.blobs.count == 2 && memory.blobs[Self.tables]?.bytes.count == firmware.tables.count)
    }

    @Test("OVMF's rule: every pointer into the tables file targets the start of a table (FACS or checksummed header)",
          arguments: [1, 254])
    func pointeesAreTables(vcpus: Int) throws {
        let firmware = try FirmwareACPITables.build(ACPIPlatform(vcpuCount: vcpus))
        let tablesAt: UInt64 = 0x7FFE_0000
        let memory = try Self.run(firmware, tablesAt: tablesAt)
        let starts = Set(firmware.tableOffsets.values.map(UInt64.init))
        #expect(memory.pointees.count == 11)
        var targets: Set<String> = []
        for (source, offset) in memory.pointees {
            #expect(source == Self.tables && starts.contains(offset), "pointer to \(source)+\(offset)")
            let address = tablesAt + offset
            let signature = String(decoding: try memory.bytes(at: address, count: 4), as: UTF8.self)
            let length = Int(try #require(try memory.bytes(at: address, count: 8).le(UInt32.self, at: 4)))
            #expect(Int(offset) + length <= firmware.tables.count)
            if signature != "FACS" {
                #expect(try memory.table(at: address).reduce(UInt8(0), &+) == 0, "\(signature)")
            }
            targets.insert(signature)
        }
        #expect(targets == ["FACS", "DSDT", "FACP", "APIC", "MCFG", "RSDT", "XSDT"])
    }

    @Test("the loaded image equals the absolute-address build at the same place, and the tables equal the direct-boot set")
    func matchesDirectBoot() throws {
        let platform = ACPIPlatform(vcpuCount: 4)
        let firmware = try FirmwareACPITables.build(platform)
        let tablesAt: UInt64 = 0x7FFE_0000, rsdpAt: UInt64 = 0xF5A40
        let ovmf = try Self.run(firmware, rsdpAt: rsdpAt, tablesAt: tablesAt, rule: .ovmf)
        let seaBIOS = try Self.run(firmware, rsdpAt: rsdpAt, tablesAt: tablesAt, rule: .seaBIOS)
        let loadedTables = try #require(ovmf.blobs[Self.tables]?.bytes), loadedRSDP = try #require(ovmf.blobs[Self.rsdp]?.bytes)
        #expect(seaBIOS.blobs[Self.tables]?.bytes == loadedTables && seaBIOS.blobs[Self.rsdp]?.bytes == loadedRSDP)

        let absolute = try ACPITables.layOut(platform, at: tablesAt, withRSDP: false)
        // The first differing offset, not two multi-kilobyte arrays, when this fails.
        try #require(loadedTables.count == absolute.bytes.count)
        #expect(loadedTables.indices.first { loadedTables[$0] != absolute.bytes[$0] } == nil)
        #expect(loadedRSDP == ACPITables.buildRSDP(xsdt: tablesAt, rsdt: tablesAt + 64))

        // Against the direct-boot image: identical tables, but for pointer fields and checksums.
        let direct = try ACPITables.build(platform)
        let directReader = ACPITestReader(direct)
        let fields: [String: [Range<Int>]] = [
            "XSDT": [9..<10, 36..<60], "RSDT": [9..<10, 36..<48], "FACP": [9..<10, 36..<44, 140..<148],
        ]
        for signature in ["XSDT", "RSDT", "FACP", "FACS", "APIC", "MCFG", "DSDT"] {
            let offset = UInt64(try #require(firmware.tableOffsets[signature]))
            let address = try #require(direct.tableAddresses[signature])
            let count = signature == "FACS" ? 64 : try directReader.table(at: address).count
            var ours = try ovmf.bytes(at: tablesAt + offset, count: count)
            var theirs = try directReader.bytes(at: address, count: count)
            #expect(theirs.count == count && ours.count == count)
            for range in fields[signature] ?? [] {
                ours.replaceSubrange(range, with: [UInt8](repeating: 0, count: range.count))
                theirs.replaceSubrange(range, with: [UInt8](repeating: 0, count: range.count))
            }
            #expect(ours == theirs, "\(signature)")
        }
    }

    @Test("a placement the pointers cannot express, or a tampered command list, is rejected by the interpreter")
    func interpreterRejects() throws {
        let firmware = try FirmwareACPITables.build(ACPIPlatform(vcpuCount: 1))
        #expect(throws: TestFailure.self) { try Self.run(firmware, tablesAt: 0x1_0000_0000) }   // RSDT/FADT hold 32 bits
        #expect(throws: TestFailure.self) { try Self.run(firmware, tablesAt: 0x7FFE_0020) }     // not 64-aligned
        #expect(throws: TestFailure.self) { try Self.run(firmware, rsdpAt: 0xE0000) }           // not the F segment
        var badSize = firmware.loader
        badSize[2 * 128 + 120] = 3
        #expect(throws: TestFailure.self) {
            try TableLoaderInterpreter(files: [Self.tables: firmware.tables, Self.rsdp: firmware.rsdp], loader: badSize,
                                       placement: [Self.tables: 0x7FFE_0000, Self.rsdp: 0xF5A40], rule: .ovmf)
        }
        // A pre-filled checksum byte breaks OVMF's rule (the result comes out wrong).
        var filled = firmware.tables
        filled[112 + 9] = 0x5A
        let loaded = try TableLoaderInterpreter(files: [Self.tables: filled, Self.rsdp: firmware.rsdp], loader: firmware.loader,
                                                placement: [Self.tables: 0x7FFE_0000, Self.rsdp: 0xF5A40], rule: .ovmf)
        #expect(try loaded.table(at: 0x7FFE_0000 + 112).reduce(UInt8(0), &+) == 0xA6)
    }

    @Test("invalid platforms throw the same errors as the direct-boot tables", arguments: [
        ACPIPlatform(vcpuCount: 0),
        ACPIPlatform(vcpuCount: 255),
        ACPIPlatform(vcpuCount: 1, pciECAMBase: 0xE008_0000),
        ACPIPlatform(vcpuCount: 1, pciBusCount: 257),
        ACPIPlatform(vcpuCount: 1, pciMMIO64: 0x8000_0000..<0x1_8000_0000),
        ACPIPlatform(vcpuCount: 1, lapicAddress: 0x1_0000_0000),
    ])
    func invalidPlatforms(platform: ACPIPlatform) {
        var direct: BootError?
        do { _ = try ACPITables.build(platform) } catch { direct = error }
        #expect(direct != nil)
        #expect(throws: direct ?? BootError.acpi("expected an error")) { try FirmwareACPITables.build(platform) }
    }

    @Test("the command encoder refuses names, alignments, pointers and ranges firmware would reject")
    func encoderRefuses() throws {
        #expect(throws: BootError.self) { try TableLoader.fileName(String(repeating: "a", count: 56)) }
        #expect(throws: BootError.self) { try TableLoader.fileName("") }
        #expect(try TableLoader.fileName(String(repeating: "a", count: 55)).last == 0)
        var loader = TableLoader(sizes: ["a": 64, "b": 16])
        #expect(throws: BootError.self) { try loader.addChecksum(in: "a", at: 9, start: 0, length: 64) }   // not allocated
        #expect(throws: BootError.self) { try loader.allocate("a", alignment: 48, zone: .high) }
        #expect(throws: BootError.self) { try loader.allocate("c", alignment: 16, zone: .high) }            // unknown
        try loader.allocate("a", alignment: 64, zone: .high)
        try loader.allocate("b", alignment: 16, zone: .fSegment)
        #expect(throws: BootError.self) { try loader.allocate("a", alignment: 64, zone: .high) }            // twice
        var contents = [UInt8](repeating: 0, count: 64)
        contents[8] = 12
        #expect(throws: BootError.self) { try loader.addPointer(in: "a", at: 8, size: 4, to: "b", holding: 4, contents: contents) }
        #expect(throws: BootError.self) { try loader.addPointer(in: "a", at: 8, size: 3, to: "b", holding: 12, contents: contents) }
        #expect(throws: BootError.self) { try loader.addPointer(in: "a", at: 62, size: 4, to: "b", holding: 0, contents: contents) }
        contents[8] = 16   // one past the end of "b"
        #expect(throws: BootError.self) { try loader.addPointer(in: "a", at: 8, size: 4, to: "b", holding: 16, contents: contents) }
        #expect(throws: BootError.self) { try loader.addChecksum(in: "a", at: 9, start: 32, length: 33) }
        #expect(throws: BootError.self) { try loader.addChecksum(in: "a", at: 40, start: 0, length: 36) }  // byte outside range
        contents[8] = 15
        try loader.addPointer(in: "a", at: 8, size: 4, to: "b", holding: 15, contents: contents)
        try loader.addChecksum(in: "a", at: 9, start: 0, length: 64)
        #expect(loader.commands.count == 4 * 128)
    }
}
