import Synchronization
import Testing
@testable import Devices

/// Answers reads with its offset and records writes, so dispatch can be checked.
final class RecordingDevice: BusDevice {
    private let writes = Mutex<[(offset: UInt64, size: Int, value: UInt64)]>([])

    func read(offset: UInt64, size: Int) -> UInt64 { 0x1000 + offset }
    func write(offset: UInt64, size: Int, value: UInt64) { writes.withLock { $0.append((offset, size, value)) } }

    var recorded: [(offset: UInt64, size: Int, value: UInt64)] { writes.withLock { $0 } }
}

@Suite struct BusTests {
    @Test func overlappingAndDegenerateRangesAreRefused() throws {
        let bus = Bus()
        try bus.insert(RecordingDevice(), base: 0x100, length: 0x10)
        #expect(throws: BusError.overlap(base: 0x10F, length: 1)) { try bus.insert(RecordingDevice(), base: 0x10F, length: 1) }
        #expect(throws: BusError.overlap(base: 0xF0, length: 0x11)) { try bus.insert(RecordingDevice(), base: 0xF0, length: 0x11) }
        #expect(throws: BusError.overlap(base: 0, length: 0x1000)) { try bus.insert(RecordingDevice(), base: 0, length: 0x1000) }
        #expect(throws: BusError.invalidRange(base: 0x200, length: 0)) { try bus.insert(RecordingDevice(), base: 0x200, length: 0) }
        #expect(throws: BusError.invalidRange(base: .max, length: 2)) { try bus.insert(RecordingDevice(), base: .max, length: 2) }
        try bus.insert(RecordingDevice(), base: 0xF0, length: 0x10)  // adjacent is fine
        try bus.insert(RecordingDevice(), base: .max, length: 1)
    }

    @Test func accessesGoToTheRightDeviceWithTheirOffset() throws {
        let bus = Bus()
        let low = RecordingDevice(), high = RecordingDevice()
        try bus.insert(high, base: 0x3F8, length: 8)
        try bus.insert(low, base: 0x60, length: 1)
        #expect(bus.read(address: 0x3FD, size: 1) == 0x1005)
        #expect(bus.read(address: 0x60, size: 1) == 0x1000)
        #expect(bus.write(address: 0x3FC, size: 4, value: 7))
        #expect(high.recorded.map(\.offset) == [4])
        #expect(high.recorded.map(\.size) == [4])
        #expect(low.recorded.isEmpty)
    }

    @Test func accessesOutsideOrRunningPastADeviceFindNothing() throws {
        let bus = Bus()
        let device = RecordingDevice()
        try bus.insert(device, base: 0x3F8, length: 8)
        #expect(bus.read(address: 0x3F7, size: 1) == nil)
        #expect(bus.read(address: 0x400, size: 1) == nil)
        #expect(bus.read(address: 0x3FE, size: 4) == nil)  // starts inside, ends outside
        #expect(bus.read(address: 0x3FC, size: 4) == 0x1004)  // ends exactly at the last port
        #expect(bus.read(address: 0x3F8, size: 0) == nil)
        #expect(!bus.write(address: 0x3FF, size: 2, value: 0))
        #expect(device.recorded.isEmpty)
    }
}
