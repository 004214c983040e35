import KVM
import Testing
@testable import VMM

@Suite struct ExitAccountingTests {
    @Test func exitsAreCountedByPortPageAndKind() {
        let accounting = ExitAccounting()
        for _ in 0..<3 { accounting.count(.ioOut(port: 0x3F8, size: 1, count: 1)) }
        accounting.count(.ioIn(port: 0x3FD, size: 1, count: 1))
        accounting.count(.mmioWrite(address: 0xFEE0_00B0, size: 4, value: 0))
        accounting.count(.mmioWrite(address: 0xFEE0_0300, size: 4, value: 0))
        accounting.count(.interrupted)
        accounting.count(.shutdown)
        let counts = accounting.snapshot
        #expect(counts[ExitReason(kind: .pioOut, address: 0x3F8)] == 3)
        #expect(counts[ExitReason(kind: .pioIn, address: 0x3FD)] == 1)
        #expect(counts[ExitReason(kind: .mmioWrite, address: 0xFEE0_0000)] == 2)
        #expect(counts[ExitReason(kind: .interrupted)] == 1)
        #expect(counts[ExitReason(kind: .other)] == 1)
        let top = counts.top(2)
        #expect(top.map(\.reason.description) == ["pio_out 0x3f8", "mmio_write 0xfee00000"])
    }

    /// A guest walking every port cannot grow the table past its bound, and no exit goes uncounted.
    @Test func aGuestTouchingThousandsOfPortsStaysBounded() {
        let accounting = ExitAccounting()
        for port in 0..<5000 { accounting.count(.ioIn(port: UInt16(port), size: 1, count: 1)) }
        let counts = accounting.snapshot
        #expect(counts.count <= ExitAccounting.maximumReasons + 1)
        #expect(counts.values.reduce(0, +) == 5000)
        #expect(counts[ExitReason(kind: .pioIn)] == UInt64(5000 - ExitAccounting.maximumReasons))
    }
}
