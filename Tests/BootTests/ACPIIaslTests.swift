import Foundation
import Testing
@testable import Boot

private let iaslPath: String? = ["/usr/bin/iasl", "/usr/local/bin/iasl", "/usr/sbin/iasl"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }

/// Hands the generated tables to ACPICA's own disassembler and compiler (`iasl`, package
/// acpica-tools, installed by scripts/setup-acpi.sh): the same parser family Linux runs, so a
/// table it cannot read, or AML it disassembles into something that does not recompile, fails.
@Suite("ACPI tables through ACPICA's iasl", .enabled(if: iaslPath != nil, "iasl not installed: run scripts/setup-acpi.sh (apt package acpica-tools)"))
struct ACPIIaslTests {
    static var iasl: String? { iaslPath }
    static let acpiexec = "/usr/bin/acpiexec"

    struct Run {
        var status: Int32
        var output: String
    }

    static func run(_ arguments: [String], in directory: URL, tool: String? = iaslPath) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(tool))
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    /// Writes `table` as `<name>.dat`, disassembles it and returns the .dsl text.
    static func disassemble(_ table: [UInt8], name: String, in directory: URL) throws -> String {
        let input = directory.appendingPathComponent("\(name).dat")
        try Data(table).write(to: input)
        let result = try run(["-d", input.lastPathComponent], in: directory)
        #expect(result.status == 0, "iasl -d \(name): \(result.output)")
        #expect(!result.output.contains("Error"), "iasl -d \(name): \(result.output)")
        return try String(contentsOf: directory.appendingPathComponent("\(name).dsl"), encoding: .utf8)
    }

    static func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-acpi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// VIREO_KEEP_ACPI=1 keeps the .dat/.dsl files for inspection.
    static func cleanUp(_ directory: URL) {
        if ProcessInfo.processInfo.environment["VIREO_KEEP_ACPI"] == "1" {
            print("ACPI tables kept in \(directory.path)")
        } else {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    static func tables(vcpus: Int = 4) throws -> ACPITestReader {
        ACPITestReader(try ACPITables.build(ACPIPlatform(vcpuCount: vcpus, pciMMIO64: 0x100_0000_0000..<0x200_0000_0000)))
    }

    @Test("the DSDT disassembles cleanly and declares the expected objects")
    func dsdtDisassembles() throws {
        let directory = try Self.scratch()
        defer { Self.cleanUp(directory) }
        let dsl = try Self.disassemble(try Self.tables().table("DSDT"), name: "dsdt", in: directory)
        for expected in [
            "DefinitionBlock (\"\", \"DSDT\", 2, \"VIREO \", \"VIREOVM \"", "Name (_S5, Package (0x04)",
            "Scope (\\_SB)", "Device (PCI0)", "Name (_HID, EisaId (\"PNP0A08\")", "Name (_CID, EisaId (\"PNP0A03\")",
            "Name (_SEG, Zero)", "Name (_BBN, Zero)", "Name (_PRT, Package (0x80)",
            "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
            "IO (Decode16,", "0x0CF8,", "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,",
            "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,",
            "QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,",
            "Device (MRES)", "EisaId (\"PNP0C02\")", "Memory32Fixed (ReadWrite,",
            "Device (COM1)", "EisaId (\"PNP0501\")", "IRQNoFlags ()", "{4}",
            "Device (PS2K)", "EisaId (\"PNP0303\")", "{1}", "Device (PS2M)", "EisaId (\"PNP0F13\")", "{12}",
            "Device (RTC)", "EisaId (\"PNP0B00\")", "{8}", "Device (FWCF)", "\"QEMU0002\"",
            "Device (C000)", "Device (C003)", "Name (_HID, \"ACPI0007\"",
        ] {
            #expect(dsl.contains(expected), "DSDT disassembly lacks \(expected)")
        }
    }

    @Test("the disassembled DSDT recompiles to the same AML (ASL and AML agree byte for byte)")
    func dsdtRoundTrips() throws {
        let directory = try Self.scratch()
        defer { Self.cleanUp(directory) }
        let dsdt = try Self.tables().table("DSDT")
        _ = try Self.disassemble(dsdt, name: "dsdt", in: directory)
        // -oa: no optimisations, so the compiler keeps \_SB's root prefix rather than shortening it.
        let compiled = try Self.run(["-oa", "-p", "recompiled", "dsdt.dsl"], in: directory)
        #expect(compiled.status == 0, "iasl compile: \(compiled.output)")
        #expect(compiled.output.contains("0 Errors"), "iasl compile: \(compiled.output)")
        let aml = try [UInt8](Data(contentsOf: directory.appendingPathComponent("recompiled.aml")))
        // The compiler writes its own creator id and checksum: compare everything else.
        #expect(aml.count == dsdt.count)
        #expect(Array(aml[0..<28]).enumerated().allSatisfy { $0.offset == 9 || $0.element == dsdt[$0.offset] })
        #expect(Array(aml.dropFirst(36)) == Array(dsdt.dropFirst(36)))
    }

    @Test("FADT, MADT, MCFG, FACS, XSDT and RSDT disassemble with the fields we set (iasl 2020 cannot read an RSDP file)")
    func fixedTablesDisassemble() throws {
        let directory = try Self.scratch()
        defer { Self.cleanUp(directory) }
        let reader = try Self.tables()
        let fadt = try Self.disassemble(try reader.table("FACP"), name: "facp", in: directory)
        for expected in [
            "Revision : 06", "SCI Interrupt : 0009", "PM1A Event Block Address : 00000600",
            "PM1A Control Block Address : 00000604", "PM Timer Block Address : 00000608",
            "PM1 Event Block Length : 04", "PM1 Control Block Length : 02", "PM Timer Block Length : 04",
            "Control Method Power Button (V1) : 0", "Control Method Sleep Button (V1) : 1",
            "8042 Present on ports 60/64 (V2) : 1", "VGA Not Present (V4) : 1", "Hardware Reduced (V5) : 0",
            "Reset Register Supported (V2) : 1", "32-bit PM Timer (V1) : 1", "Value to cause reset : FE",
            "RTC Century Index : 32", "FADT Minor Revision : 05", "Encoded Access Width : 02 [Word Access:16]",
        ] {
            #expect(Self.squeezed(fadt).contains(expected), "FADT disassembly lacks \(expected)")
        }
        #expect(!fadt.contains("Invalid") && !fadt.contains("Warning"), "\(fadt)")
        let madt = try Self.disassemble(try reader.table("APIC"), name: "apic", in: directory)
        #expect(Self.squeezed(madt).components(separatedBy: "Subtable Type : 00 [Processor Local APIC]").count == 5)
        #expect(Self.squeezed(madt).contains("Subtable Type : 01 [I/O APIC]"))
        #expect(Self.squeezed(madt).contains("Interrupt : 00000009"))
        let mcfg = try Self.disassemble(try reader.table("MCFG"), name: "mcfg", in: directory)
        #expect(Self.squeezed(mcfg).contains("Base Address : 00000000E0000000"))
        let facsAddress = try #require(reader.tables.tableAddresses["FACS"])
        _ = try Self.disassemble(try reader.bytes(at: facsAddress, count: 64), name: "facs", in: directory)
        _ = try Self.disassemble(try reader.table(at: try #require(reader.tables.tableAddresses["XSDT"])), name: "xsdt", in: directory)
        _ = try Self.disassemble(try reader.table(at: try #require(reader.tables.tableAddresses["RSDT"])), name: "rsdt", in: directory)
    }

    /// iasl aligns field names with runs of spaces; collapse them so expectations stay readable.
    static func squeezed(_ text: String) -> String {
        text.split(separator: "\n").map { line in
            line.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        }.joined(separator: "\n")
    }

    @Test("ACPICA's interpreter (acpiexec) loads FADT, DSDT, MADT and MCFG and evaluates \\_S5, _CRS and _PRT",
          .enabled(if: FileManager.default.isExecutableFile(atPath: ACPIIaslTests.acpiexec)))
    func interpreterLoadsTables() throws {
        let directory = try Self.scratch()
        defer { Self.cleanUp(directory) }
        let reader = try Self.tables()
        for (signature, file) in [("DSDT", "dsdt.dat"), ("FACP", "facp.dat"), ("APIC", "apic.dat"), ("MCFG", "mcfg.dat")] {
            try Data(try reader.table(signature)).write(to: directory.appendingPathComponent(file))
        }
        let commands = "evaluate \\_S5; evaluate \\_SB.PCI0._CRS; evaluate \\_SB.PCI0._PRT; evaluate \\_SB.C003._UID"
        let result = try Self.run(["-b", commands, "-di", "dsdt.dat", "facp.dat", "apic.dat", "mcfg.dat"], in: directory,
                                  tool: Self.acpiexec)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("ACPI: 1 ACPI AML tables successfully acquired and loaded"), "\(result.output)")
        #expect(result.output.contains("(v06 VIREO  VIREOVM  00000001 VIRE 00000001)"), "FADT not loaded: \(result.output)")
        #expect(!result.output.contains("failed with status"), "\(result.output)")
        #expect(result.output.contains("[Package] Contains 4 Elements:"))        // \_S5
        #expect(result.output.contains("[Package] Contains 128 Elements:"))      // _PRT
        #expect(result.output.contains("[Integer] = 0000000000000003"))          // C003._UID
        // acpiexec's own hardware self-test pokes PM2_CNT.ARB_DIS ("aetests" lines); there is
        // no PM2 block on this platform (it is optional), so those are expected. Nothing else may
        // warn: e.g. ACPICA reports FADT 32/64X length or address mismatches as warnings.
        let complaints = result.output.split(separator: "\n").filter { line in
            !line.contains("aetests") && (line.contains("Warning") || line.contains("Error") || line.contains("mismatch")
                                          || line.contains("ACPI Error") || line.contains("ACPI Warning"))
        }
        #expect(complaints.isEmpty, "\(complaints)")
    }
}
