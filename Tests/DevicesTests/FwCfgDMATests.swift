import Synchronization
import Testing
@testable import Devices

struct OutOfGuestMemory: Error {}

/// A small flat guest memory that refuses accesses outside itself.
final class FakeGuestMemory: DMAMemory {
    private let bytes: Mutex<[UInt8]>

    init(size: Int, fill: UInt8 = 0xAA) { bytes = Mutex([UInt8](repeating: fill, count: size)) }

    func read(at address: UInt64, count: Int) throws -> [UInt8] {
        try bytes.withLock { bytes in
            guard address <= UInt64(bytes.count), UInt64(count) <= UInt64(bytes.count) - address else { throw OutOfGuestMemory() }
            return Array(bytes[Int(address)..<(Int(address) + count)])
        }
    }

    func write(_ data: ArraySlice<UInt8>, at address: UInt64) throws {
        try bytes.withLock { bytes in
            guard address <= UInt64(bytes.count), UInt64(data.count) <= UInt64(bytes.count) - address else { throw OutOfGuestMemory() }
            bytes.replaceSubrange(Int(address)..<(Int(address) + data.count), with: data)
        }
    }

    func bigEndian32(at address: UInt64) throws -> UInt32 {
        try read(at: address, count: 4).reduce(0) { $0 << 8 | UInt32($1) }
    }
}

struct DMAFixture {
    let memory = FakeGuestMemory(size: 0x10000)
    let device: FwCfg
    static let descriptor: UInt64 = 0x100

    init() throws {
        device = try FwCfg(ramSize: 1 << 30, cpuCount: 1, dmaMemory: memory)
        try device.addFile(name: "opt/test", data: Array("abcde".utf8))
    }

    /// Writes an FWCfgDmaAccess at `descriptor` and starts it the way SeaBIOS does (two outl).
    func transfer(control: UInt32, length: UInt32, target: UInt64, descriptor: UInt64 = descriptor) throws {
        var raw: [UInt8] = []
        for shift in stride(from: 24, through: 0, by: -8) { raw.append(UInt8(truncatingIfNeeded: control >> UInt32(shift))) }
        for shift in stride(from: 24, through: 0, by: -8) { raw.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { raw.append(UInt8(truncatingIfNeeded: target >> UInt64(shift))) }
        if descriptor < 0x10000 { try memory.write(raw[...], at: descriptor) }
        device.dmaPort.write(offset: 0, size: 4, value: UInt64(UInt32(truncatingIfNeeded: descriptor >> 32).byteSwapped))
        device.dmaPort.write(offset: 4, size: 4, value: UInt64(UInt32(truncatingIfNeeded: descriptor).byteSwapped))
    }
}

@Suite struct FwCfgDMATests {
    static let selectFile: UInt32 = 0x0020 << 16 | 0x08

    @Test func portAndIDAdvertiseDMAOnlyWhenWired() throws {
        let f = try DMAFixture()
        let signature = f.device.dmaPort.read(offset: 0, size: 8)
        #expect((0..<8).map { UInt8(truncatingIfNeeded: signature >> (8 * $0)) } == Array("QEMU CFG".utf8))
        #expect(FwCfgReader(device: f.device).read(0x0001, count: 4) == [3, 0, 0, 0])
        let plain = try FwCfg(ramSize: 1 << 30, cpuCount: 1)
        #expect(plain.dmaPort.read(offset: 0, size: 8) == 0)
    }

    @Test func readCopiesTheSelectedItemAndZeroFillsPastItsEnd() throws {
        let f = try DMAFixture()
        try f.transfer(control: Self.selectFile | 0x02, length: 8, target: 0x1000)
        #expect(try f.memory.read(at: 0x1000, count: 9) == Array("abcde".utf8) + [0, 0, 0, 0xAA])
        #expect(try f.memory.bigEndian32(at: DMAFixture.descriptor) == 0)
    }

    @Test func skipAdvancesAndPIOContinuesFromThere() throws {
        let f = try DMAFixture()
        try f.transfer(control: Self.selectFile | 0x04, length: 2, target: 0)
        #expect(try f.memory.bigEndian32(at: DMAFixture.descriptor) == 0)
        #expect(f.device.read(offset: 1, size: 1) == UInt64(UInt8(ascii: "c")))
        try f.transfer(control: 0x02, length: 2, target: 0x2000)
        #expect(try f.memory.read(at: 0x2000, count: 2) == Array("de".utf8))
    }

    @Test func writesAndBadTargetsReportTheErrorBit() throws {
        let f = try DMAFixture()
        try f.transfer(control: Self.selectFile | 0x10, length: 1, target: 0x1000)
        #expect(try f.memory.bigEndian32(at: DMAFixture.descriptor) == 1)
        try f.transfer(control: Self.selectFile | 0x02, length: 5, target: 0xFFFE)
        #expect(try f.memory.bigEndian32(at: DMAFixture.descriptor) == 1)
        try f.transfer(control: Self.selectFile | 0x02, length: 0xFFFF_FFFF, target: 0x8000)  // zeros run off the end
        #expect(try f.memory.bigEndian32(at: DMAFixture.descriptor) == 1)
    }

    @Test func descriptorOutsideGuestMemoryIsIgnored() throws {
        let f = try DMAFixture()
        try f.transfer(control: Self.selectFile | 0x02, length: 1, target: 0, descriptor: 0x1_0000_0000)
        #expect(f.device.state.dmaAddressHigh == 1)
        #expect(f.device.state.selector == 0)  // nothing was read, nothing selected
    }

    @Test func eightByteWriteStartsATransferToo() throws {
        let f = try DMAFixture()
        try f.transfer(control: Self.selectFile | 0x02, length: 5, target: 0x3000, descriptor: 0x200)
        try f.memory.write([0, 0, 0, 0x02, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0x30, 0x00][...], at: 0x300)
        try f.device.addFile(name: "second", data: [9])
        f.device.write(offset: 0, size: 2, value: 0x21)
        f.device.dmaPort.write(offset: 0, size: 8, value: UInt64(0x300).byteSwapped)
        #expect(try f.memory.read(at: 0x3000, count: 2) == [9, 0])
    }
}
