import Testing
@testable import GuestMemory

@Suite struct GuestMemoryTests {
    func twoRegions() throws -> GuestMemory {
        // Two contiguous regions and a gap, like RAM split around a hole.
        try GuestMemory(ranges: [(GuestAddress(0), 0x2000), (GuestAddress(0x2000), 0x1000), (GuestAddress(0x10000), 0x1000)])
    }

    @Test func roundTripsIntegersLittleEndian() throws {
        let memory = try twoRegions()
        try memory.write(UInt32(0xdeadbeef), at: GuestAddress(0x100))
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x100)) == 0xdeadbeef)
        #expect(try memory.readBytes(at: GuestAddress(0x100), count: 4) == [0xef, 0xbe, 0xad, 0xde])
    }

    @Test func accessCrossesContiguousRegions() throws {
        let memory = try twoRegions()
        try memory.write(UInt64(0x1122334455667788), at: GuestAddress(0x1ffc))
        #expect(try memory.read(UInt64.self, at: GuestAddress(0x1ffc)) == 0x1122334455667788)
    }

    @Test func rejectsAccessIntoHoleWithoutPartialWrite() throws {
        let memory = try twoRegions()
        #expect(throws: GuestMemoryError.self) { try memory.write(UInt64.max, at: GuestAddress(0x2ffc)) }
        // The in-range half must be untouched.
        #expect(try memory.read(UInt32.self, at: GuestAddress(0x2ffc)) == 0)
        #expect(throws: GuestMemoryError.self) { try memory.read(UInt8.self, at: GuestAddress(0x5000)) }
    }

    @Test func rejectsOverflowingRanges() throws {
        let memory = try twoRegions()
        #expect(throws: GuestMemoryError.self) { try memory.readBytes(at: GuestAddress(UInt64.max - 1), count: 4) }
        #expect(!memory.isValid(GuestAddress(0x10000), length: UInt64.max))
        #expect(memory.isValid(GuestAddress(0x10000), length: 0x1000))
        #expect(!memory.isValid(GuestAddress(0x10000), length: 0x1001))
    }

    @Test func rejectsBadLayouts() {
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(GuestAddress(0), 0x2000), (GuestAddress(0x1000), 0x1000)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(GuestAddress(0x10), 0x1000)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(GuestAddress(0), 0)]) }
    }
}
