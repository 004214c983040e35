import Testing
@testable import Devices

/// Drives fw_cfg the way SeaBIOS and Linux's qemu_fw_cfg do: outw selector, insb data.
struct FwCfgReader {
    let device: FwCfg

    func read(_ selector: UInt16, count: Int) -> [UInt8] {
        device.write(offset: 0, size: 2, value: UInt64(selector))
        return (0..<count).map { _ in UInt8(device.read(offset: 1, size: 1)) }
    }

    func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
    func littleEndian(_ bytes: [UInt8]) -> UInt64 { bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) } }

    /// Parses FILE_DIR into (name, selector, size).
    func directory() -> [(String, UInt16, UInt32)] {
        let count = Int(bigEndian(read(0x19, count: 4)[...]))
        guard count <= FwCfg.maxFiles else {
            Issue.record("FILE_DIR count \(count) exceeds the file limit")
            return []
        }
        let entries = Array(read(0x19, count: 4 + 64 * count).dropFirst(4))
        return (0..<count).map { index in
            let entry = entries[(index * 64)..<(index * 64 + 64)]
            let size = UInt32(bigEndian(entry.prefix(4)))
            let selector = UInt16(bigEndian(entry.dropFirst(4).prefix(2)))
            let name = String(decoding: entry.dropFirst(8).prefix { $0 != 0 }, as: UTF8.self)
            return (name, selector, size)
        }
    }
}

@Suite struct FwCfgTests {
    @Test func fixedItemsMatchQEMU() throws {
        let reader = FwCfgReader(device: try FwCfg(ramSize: 512 << 20, cpuCount: 2, maxCPUs: 4))
        #expect(reader.read(0x0000, count: 4) == Array("QEMU".utf8))
        #expect(reader.littleEndian(reader.read(0x0001, count: 4)) == 1)  // no DMA bit
        #expect(reader.littleEndian(reader.read(0x0003, count: 8)) == 512 << 20)
        #expect(reader.littleEndian(reader.read(0x0005, count: 2)) == 2)
        #expect(reader.littleEndian(reader.read(0x000F, count: 2)) == 4)
    }

    @Test func filesAppearInTheDirectoryWithSequentialSelectors() throws {
        let device = try FwCfg(ramSize: 1 << 30, cpuCount: 1)
        try device.addFile(name: "etc/boot-fail-wait", data: [5, 0, 0, 0])
        try device.addFile(name: "opt/vireo/marker", data: Array("hello".utf8))
        let reader = FwCfgReader(device: device)
        let directory = reader.directory()
        #expect(directory.map(\.0) == ["etc/boot-fail-wait", "opt/vireo/marker"])
        #expect(directory.map(\.1) == [0x20, 0x21])
        #expect(directory.map(\.2) == [4, 5])
        #expect(reader.read(0x21, count: 7) == Array("hello".utf8) + [0, 0])  // zeros past the end
    }

    @Test func unknownSelectorsReadAsZero() throws {
        let reader = FwCfgReader(device: try FwCfg(ramSize: 1 << 30, cpuCount: 1))
        #expect(reader.read(0x1234, count: 4) == [0, 0, 0, 0])
        #expect(reader.read(0x8000, count: 4) == [0, 0, 0, 0])  // no arch-specific items
        #expect(reader.read(0x4000, count: 4) == Array("QEMU".utf8))  // write flag ignored
    }

    @Test func byteWriteToTheSelectorIsIgnored() throws {
        let device = try FwCfg(ramSize: 1 << 30, cpuCount: 1)
        let reader = FwCfgReader(device: device)
        _ = reader.read(0x0005, count: 0)
        device.write(offset: 0, size: 1, value: 0x00)
        #expect(device.read(offset: 1, size: 1) == 1)  // still NB_CPUS
        #expect(device.read(offset: 0, size: 2) == 0)
    }

    @Test func badFilesAreRefusedWithTheReason() throws {
        let device = try FwCfg(ramSize: 1 << 30, cpuCount: 1)
        #expect(throws: FwCfgError.invalidFileName("", reason: "is empty")) { try device.addFile(name: "", data: []) }
        let long = String(repeating: "x", count: 56)
        #expect(throws: FwCfgError.invalidFileName(long, reason: "is 56 bytes, limit is 55")) {
            try device.addFile(name: long, data: [])
        }
        #expect(throws: FwCfgError.invalidFileName("a\0b", reason: "contains a NUL byte")) {
            try device.addFile(name: "a\0b", data: [])
        }
        try device.addFile(name: String(repeating: "y", count: 55), data: [])
        #expect(throws: FwCfgError.duplicateFileName("y")) {
            try device.addFile(name: "y", data: [])
            try device.addFile(name: "y", data: [])
        }
        for index in 2..<FwCfg.maxFiles { try device.addFile(name: "f\(index)", data: []) }
        #expect(throws: FwCfgError.tooManyFiles(limit: FwCfg.maxFiles)) { try device.addFile(name: "last", data: []) }
        #expect(throws: FwCfgError.invalidCPUCount(count: 0, maximum: 0)) { try FwCfg(ramSize: 0, cpuCount: 0) }
    }

    @Test func capturedStateRestoresSelectionAndContents() throws {
        let device = try FwCfg(ramSize: 1 << 30, cpuCount: 2)
        try device.addFile(name: "a", data: [1, 2, 3])
        let reader = FwCfgReader(device: device)
        #expect(reader.read(0x20, count: 1) == [1])
        let restored = try FwCfg(restoring: device.state)
        #expect(restored.state == device.state)
        #expect(restored.read(offset: 1, size: 1) == 2)
    }

    @Test func restoringRejectsBadOffsetsAndFiles() throws {
        let good = try FwCfg(ramSize: 1 << 30, cpuCount: 1).state
        var pastEnd = good
        pastEnd.offset = 5  // signature is 4 bytes
        var duplicate = good
        duplicate.files = [FwCfgFile(name: "a", data: []), FwCfgFile(name: "a", data: [])]
        var cpus = good
        cpus.maxCPUs = 0
        for state in [pastEnd, duplicate, cpus] {
            #expect(throws: DeviceStateError.self) { try FwCfg(restoring: state) }
        }
    }
}
