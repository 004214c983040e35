import Foundation
import GuestMemory
import Storage
import Synchronization
import Testing
@testable import Virtio

/// An in-memory disk that counts flushes and can be told to fail, for what a file cannot show.
final class CountingDisk: BlockDevice {
    let size: UInt64
    let isReadOnly = false
    private let state = Mutex<(flushes: Int, failing: Bool)>((0, false))

    init(size: UInt64) { self.size = size }

    var flushes: Int { state.withLock { $0.flushes } }
    func setFailing(_ failing: Bool) { state.withLock { $0.failing = failing } }
    private func check() throws { if state.withLock({ $0.failing }) { throw StorageError.readOnly(path: "counting disk") } }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try check()
        buffer.initializeMemory(as: UInt8.self, repeating: 0x11)
    }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws { try check() }
    func flush() throws {
        try check()
        state.withLock { $0.flushes += 1 }
    }
    func discard(at offset: UInt64, length: UInt64) throws { try check() }
    func writeZeroes(at offset: UInt64, length: UInt64) throws { try check() }
}

@Suite struct VirtioBlockTests {
    @Test func configSpaceDescribesTheDisk() throws {
        let fixture = try BlockFixture(size: 1 << 20, configuration: VirtioBlockConfiguration(serial: "disk0"))
        let device = fixture.device
        #expect(device.deviceType == .block)
        #expect(device.queueMaxSizes == [256])
        #expect(device.readConfig(offset: 0, size: 8) == 2048)            // capacity in 512-byte sectors
        #expect(device.readConfig(offset: 0, size: 4) == 2048)
        #expect(device.readConfig(offset: 8, size: 4) == 1 << 20)         // size_max
        #expect(device.readConfig(offset: 12, size: 4) == 254)            // seg_max = queue size - 2
        #expect(device.readConfig(offset: 20, size: 4) == 512)            // blk_size
        #expect(device.readConfig(offset: 36, size: 4) == 1 << 17)        // max_discard_sectors
        #expect(device.readConfig(offset: 40, size: 4) == 16)             // max_discard_seg
        #expect(device.readConfig(offset: 44, size: 4) == 1)              // discard_sector_alignment
        #expect(device.readConfig(offset: 48, size: 4) == 1 << 17)        // max_write_zeroes_sectors
        #expect(device.readConfig(offset: 72, size: 1) == 0)              // past the end
        #expect(device.readConfig(offset: 70, size: 4) == 0)              // straddles the end
        #expect(device.readConfig(offset: 0, size: 3) == 0)               // not an access size
        let features = device.deviceFeatures
        for bit in [VirtioFeature.version1, VirtioFeature.ringEventIndex, VirtioFeature.ringIndirectDescriptors,
                    VirtioBlockFeature.flush, VirtioBlockFeature.segMax, VirtioBlockFeature.sizeMax,
                    VirtioBlockFeature.blockSize, VirtioBlockFeature.discard, VirtioBlockFeature.writeZeroes] {
            #expect(features & bit == bit)
        }
        #expect(features & VirtioBlockFeature.readOnly == 0)
        device.writeConfig(offset: 0, size: 8, value: 7)
        #expect(device.readConfig(offset: 0, size: 8) == 2048)
    }

    @Test func largerLogicalBlocksRoundTheCapacityDown() throws {
        let fixture = try BlockFixture(size: (1 << 20) + 3000, configuration: VirtioBlockConfiguration(logicalBlockSize: 4096))
        #expect(fixture.device.capacitySectors == 2048)
        #expect(fixture.device.readConfig(offset: 20, size: 4) == 4096)
        #expect(fixture.device.readConfig(offset: 44, size: 4) == 8)
    }

    @Test func invalidConfigurationsAreRefused() throws {
        let disk = CountingDisk(size: 1 << 20)
        #expect(throws: VirtioBlockConfigurationError.serialTooLong("123456789012345678901", bytes: 21)) {
            try VirtioBlock(backend: disk, configuration: VirtioBlockConfiguration(serial: "123456789012345678901"))
        }
        #expect(throws: VirtioBlockConfigurationError.invalidBlockSize(1000)) {
            try VirtioBlock(backend: disk, configuration: VirtioBlockConfiguration(logicalBlockSize: 1000))
        }
        #expect(throws: VirtioBlockConfigurationError.invalidQueueSize(2)) {
            try VirtioBlock(backend: disk, configuration: VirtioBlockConfiguration(queueSize: 2))
        }
    }

    @Test func writeThenReadThroughScatteredBuffers() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        let data = pattern(count: 1024, seed: 0x33)
        let base = BlockFixture.dataAddress
        try fixture.memory.writeBytes(data, to: GuestAddress(base))
        // Two readable data buffers that split a sector in the middle.
        let written = try fixture.request(type: BlockWire.write, sector: 3, data: [.readable(base, 700), .readable(base + 700, 324)])
        #expect(written.status == BlockWire.ok)
        #expect(written.used == 1)
        #expect(try fixture.fileBytes(at: 1536, count: 1024) == data)
        #expect(try fixture.fileBytes(at: 1024, count: 512) == pattern(count: 1536, seed: 0x5a).suffix(512).map { $0 })

        let readBack = base + 0x4000
        let read = try fixture.request(type: BlockWire.read, sector: 3, data: [.writable(readBack, 100), .writable(readBack + 0x800, 924)])
        #expect(read.status == BlockWire.ok)
        #expect(read.used == 1025)
        let first = try fixture.memory.readBytes(at: GuestAddress(readBack), count: 100)
        let second = try fixture.memory.readBytes(at: GuestAddress(readBack + 0x800), count: 924)
        #expect(first + second == data)

        let stats = fixture.device.statistics
        #expect(stats.writeRequests == 1 && stats.writeBytes == 1024)
        #expect(stats.readRequests == 1 && stats.readBytes == 1024)
        #expect(stats.errors == 0)
        #expect(fixture.harness.interrupt.signalledQueues == [0, 0])
    }

    @Test func largeReadCrossesScratchChunksAndRegions() throws {
        let fixture = try BlockFixture(size: 1 << 20)
        try fixture.activate()
        // 600 KiB into one buffer that crosses the RAM region edge at 1 MiB: three scratch chunks.
        let length = 600 << 10
        let address: UInt64 = 0x100000 - 0x1000
        let result = try fixture.request(type: BlockWire.read, sector: 8, data: [.writable(address, UInt32(length))])
        #expect(result.status == BlockWire.ok)
        #expect(result.used == UInt32(length) + 1)
        #expect(try fixture.memory.readBytes(at: GuestAddress(address), count: length) == fixture.fileBytes(at: 4096, count: length))
    }

    @Test func flushReachesTheBackendAndWritesAreWriteThroughWithoutIt() throws {
        let disk = CountingDisk(size: 1 << 20)
        let device = try VirtioBlock(backend: disk)
        let harness = try DeviceHarness(queueCount: 1)
        try harness.activate(device)
        try harness.memory.write(BlockWire.flush, at: GuestAddress(0x10000))
        try harness.submit([.readable(0x10000, 16), .writable(0x10100, 1)], queue: 0, to: device)
        #expect(disk.flushes == 1)
        #expect(try harness.memory.read(UInt8.self, at: GuestAddress(0x10100)) == BlockWire.ok)
        #expect(device.statistics.flushRequests == 1)
        // A negotiated FLUSH leaves durability to the driver: a plain write does not sync.
        try harness.memory.write(BlockWire.write, at: GuestAddress(0x10000))
        try harness.submit([.readable(0x10000, 16), .readable(0x20000, 512), .writable(0x10100, 1)], queue: 0, to: device)
        #expect(disk.flushes == 1)

        // Without FLUSH negotiated every write is synced before it completes (write-through).
        device.reset()
        let legacy = try DeviceHarness(queueCount: 1)
        try legacy.activate(device, features: device.deviceFeatures & ~VirtioBlockFeature.flush)
        try legacy.memory.write(BlockWire.write, at: GuestAddress(0x10000))
        try legacy.submit([.readable(0x10000, 16), .readable(0x20000, 512), .writable(0x10100, 1)], queue: 0, to: device)
        #expect(disk.flushes == 2)

        // A failing flush is an I/O error for the guest, not a crash.
        disk.setFailing(true)
        try legacy.memory.write(BlockWire.flush, at: GuestAddress(0x10000))
        try legacy.submit([.readable(0x10000, 16), .writable(0x10100, 1)], queue: 0, to: device)
        #expect(try legacy.memory.read(UInt8.self, at: GuestAddress(0x10100)) == BlockWire.ioError)
        #expect(device.statistics.errors == 1)
    }

    @Test func getIDReturnsTheNulPaddedSerial() throws {
        let fixture = try BlockFixture(configuration: VirtioBlockConfiguration(serial: "vireo-disk-1"))
        try fixture.activate()
        let address = BlockFixture.dataAddress
        try fixture.memory.writeBytes([UInt8](repeating: 0xAA, count: 24), to: GuestAddress(address))
        let result = try fixture.request(type: BlockWire.getID, sector: 0, data: [.writable(address, 20)])
        #expect(result.status == BlockWire.ok)
        #expect(result.used == 21)
        let id = try fixture.memory.readBytes(at: GuestAddress(address), count: 24)
        #expect(id == Array("vireo-disk-1".utf8) + [UInt8](repeating: 0, count: 8) + [0xAA, 0xAA, 0xAA, 0xAA])
    }

    @Test func writeZeroesAndDiscardClearRangesOnTheFile() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        let ranges = try fixture.ranges([(sector: 4, sectors: 2, flags: 1), (sector: 100, sectors: 1, flags: 0)])
        #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [ranges]).status == BlockWire.ok)
        #expect(try fixture.fileBytes(at: 2048, count: 1024) == [UInt8](repeating: 0, count: 1024))
        #expect(try fixture.fileBytes(at: 100 * 512, count: 512) == [UInt8](repeating: 0, count: 512))
        // The sectors around the ranges are untouched.
        #expect(try fixture.fileBytes(at: 1536, count: 512) == Array(pattern(count: 2048, seed: 0x5a)[1536...]))

        let discard = try fixture.ranges([(sector: 10, sectors: 8, flags: 0)])
        #expect(try fixture.request(type: BlockWire.discard, sector: 0, data: [discard]).status == BlockWire.ok)
        #expect(fixture.device.statistics.discardRequests == 2)
    }

    @Test func badDiscardRangesAreRefusedBeforeAnyIsApplied() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        let before = try fixture.fileBytes(at: 0, count: 4096)
        // §5.2.6.2: unmap on DISCARD, and unknown flags, are UNSUPP.
        let unmap = try fixture.ranges([(sector: 0, sectors: 1, flags: 1)])
        #expect(try fixture.request(type: BlockWire.discard, sector: 0, data: [unmap]).status == BlockWire.unsupported)
        let unknownFlag = try fixture.ranges([(sector: 0, sectors: 1, flags: 4)])
        #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [unknownFlag]).status == BlockWire.unsupported)
        // A valid first range and an out-of-range second: nothing is written.
        let outOfRange = try fixture.ranges([(sector: 0, sectors: 8, flags: 0), (sector: 2047, sectors: 2, flags: 0)])
        #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [outOfRange]).status == BlockWire.ioError)
        let tooMany = try fixture.ranges([(sector: 0, sectors: (1 << 17) + 1, flags: 0)])
        #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [tooMany]).status == BlockWire.ioError)
        let seventeen = try fixture.ranges(Array(repeating: (sector: 0, sectors: 1, flags: 0), count: 17))
        #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [seventeen]).status == BlockWire.ioError)
        #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [.readable(0x30000, 15)]).status == BlockWire.ioError)
        #expect(try fixture.fileBytes(at: 0, count: 4096) == before)
    }

    @Test func readOnlyDisksRefuseWritesAndDoNotOfferDiscard() throws {
        for fixture in [try BlockFixture(readOnlyImage: true), try BlockFixture(configuration: VirtioBlockConfiguration(readOnly: true))] {
            #expect(fixture.device.isReadOnly)
            #expect(fixture.device.deviceFeatures & VirtioBlockFeature.readOnly != 0)
            #expect(fixture.device.deviceFeatures & (VirtioBlockFeature.discard | VirtioBlockFeature.writeZeroes) == 0)
            try fixture.activate()
            let before = try fixture.fileBytes(at: 0, count: 1024)
            try fixture.memory.writeBytes([UInt8](repeating: 0x77, count: 1024), to: GuestAddress(BlockFixture.dataAddress))
            let result = try fixture.request(type: BlockWire.write, sector: 0, data: [.readable(BlockFixture.dataAddress, 1024)])
            #expect(result.status == BlockWire.ioError)
            #expect(try fixture.fileBytes(at: 0, count: 1024) == before)
            // Not negotiated, so unsupported rather than an error.
            let ranges = try fixture.ranges([(sector: 0, sectors: 1, flags: 0)])
            #expect(try fixture.request(type: BlockWire.writeZeroes, sector: 0, data: [ranges]).status == BlockWire.unsupported)
            #expect(try fixture.request(type: BlockWire.read, sector: 0, data: [.writable(BlockFixture.dataAddress, 512)]).status == BlockWire.ok)
            #expect(fixture.device.statistics.errors == 1)
        }
    }

    @Test func outOfRangeAndMisshapenRequestsGetStatusNotACrash() throws {
        let fixture = try BlockFixture()
        try fixture.activate()
        let data = BlockFixture.dataAddress
        // Last sector plus one past the end; a sector whose byte offset overflows 64 bits.
        #expect(try fixture.request(type: BlockWire.read, sector: 2047, data: [.writable(data, 1024)]).status == BlockWire.ioError)
        #expect(try fixture.request(type: BlockWire.read, sector: 2048, data: [.writable(data, 512)]).status == BlockWire.ioError)
        #expect(try fixture.request(type: BlockWire.write, sector: .max, data: [.readable(data, 512)]).status == BlockWire.ioError)
        #expect(try fixture.request(type: BlockWire.write, sector: UInt64.max / 512, data: [.readable(data, 512)]).status == BlockWire.ioError)
        // Data that is not a whole number of sectors.
        #expect(try fixture.request(type: BlockWire.read, sector: 0, data: [.writable(data, 513)]).status == BlockWire.ioError)
        #expect(try fixture.request(type: BlockWire.write, sector: 0, data: [.readable(data, 100)]).status == BlockWire.ioError)
        // Unknown request types.
        #expect(try fixture.request(type: 99, sector: 0).status == BlockWire.unsupported)
        #expect(try fixture.request(type: 10, sector: 0, data: [.writable(data, 24)]).status == BlockWire.unsupported)
        #expect(fixture.device.statistics.errors == 6)
        #expect(fixture.device.statistics.unsupported == 2)
        // The last sector itself is fine, and the device still serves requests.
        #expect(try fixture.request(type: BlockWire.read, sector: 2047, data: [.writable(data, 512)]).status == BlockWire.ok)
        #expect(fixture.harness.interrupt.needsResetCount == 0)
        #expect(fixture.device.lastError == nil)
    }
}
