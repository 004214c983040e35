import Devices
import Synchronization
import Testing

final class BARChangeRecorder: Sendable {
    private let changes = Mutex<[String]>([])
    var observer: PCIRootComplex.BARObserver {
        { device, index, address in self.changes.withLock { $0.append("\(device) \(index) \(address.map { String($0, radix: 16) } ?? "off")") } }
    }
    var recorded: [String] { changes.withLock { $0 } }
}

@Suite struct PCIBARWindowTests {
    /// The 32-bit window as the VMM's MMIO bus would see it.
    func windowRead(_ root: PCIRootComplex, _ address: UInt64, size: Int = 8) -> UInt64 {
        root.mmio32Window.read(offset: address - root.mmio32Window.base, size: size)
    }

    func windowWrite(_ root: PCIRootComplex, _ address: UInt64, value: UInt64) {
        root.mmio32Window.write(offset: address - root.mmio32Window.base, size: 8, value: value)
    }

    @Test func accessesReachTheBARThatCoversThem() throws {
        let (root, function, _, address) = try makeRootWithFunction()
        let scratch = try #require(root.decodedBARs(of: address).first { $0.index == TestPCIFunction.scratchBAR })
        windowWrite(root, scratch.address + 0x10, value: 0xDEAD_BEEF)
        #expect(windowRead(root, scratch.address + 0x10) == 0xDEAD_BEEF)
        #expect(function.log.contains("write 0 16 8 3735928559"))
        // Outside every BAR the window floats high; an access straddling a BAR's end is unclaimed.
        #expect(windowRead(root, 0xDF00_0000, size: 4) == 0xFFFF_FFFF)
        #expect(windowRead(root, scratch.address + 0xFFC) == UInt64.max)
    }

    @Test func relocatedBARMovesAndTheObserverHearsIt() throws {
        let (root, _, _, address) = try makeRootWithFunction()
        let recorder = BARChangeRecorder()
        root.setBARObserver(recorder.observer)
        let old = try #require(root.decodedBARs(of: address).first { $0.index == 0 }).address
        windowWrite(root, old, value: 42)
        let new: UInt64 = 0xD000_0000
        root.configWrite(address, offset: 0x10, size: 4, value: UInt32(new))
        #expect(recorder.recorded == ["00:03.0 0 d0000000"])
        #expect(windowRead(root, new) == 42)
        #expect(windowRead(root, old) == UInt64.max)
        // Turning memory decoding off withdraws every memory BAR; I/O stays.
        let command = root.configRead(address, offset: 0x04, size: 2)
        root.configWrite(address, offset: 0x04, size: 2, value: command & ~0x2)
        #expect(recorder.recorded.suffix(2) == ["00:03.0 0 off", "00:03.0 2 off"])
        #expect(windowRead(root, new) == UInt64.max)
        #expect(root.decodedBARs(of: address).map(\.kind) == [.io])
    }

    @Test func sizingAllOnesReadsTheSizeMaskAndRestores() throws {
        let (root, _, _, address) = try makeRootWithFunction()
        func size(of register: Int) -> UInt32 {
            let saved = root.configRead(address, offset: register, size: 4)
            root.configWrite(address, offset: register, size: 4, value: 0xFFFF_FFFF)
            let mask = root.configRead(address, offset: register, size: 4)
            root.configWrite(address, offset: register, size: 4, value: saved)
            #expect(root.configRead(address, offset: register, size: 4) == saved)
            return mask
        }
        #expect(size(of: 0x10) == 0xFFFF_F000)                 // 4 KiB, 32-bit, non-prefetchable
        #expect(size(of: 0x18) == 0xFFFF_C00C)                 // 16 KiB, 64-bit prefetchable low half
        #expect(size(of: 0x1C) == 0xFFFF_FFFF)                 // high half: all address bits
        #expect(size(of: 0x20) == 0xFFFF_FFE1)                 // 32-byte I/O BAR
        #expect(size(of: 0x14) == 0)                           // undeclared BAR
        #expect(size(of: 0x30) == 0)                           // no expansion ROM
    }

    @Test func ioWindowDispatchesIOBARs() throws {
        let (root, function, _, address) = try makeRootWithFunction()
        let io = try #require(root.decodedBARs(of: address).first { $0.kind == .io })
        let window = try #require(root.ioWindow)
        window.write(offset: io.address - window.base + 4, size: 2, value: 7)
        #expect(function.log.last == "write 4 4 2 7")
        // Memory windows never dispatch to I/O BARs.
        #expect(root.mmio32Window.read(offset: io.address, size: 1) == 0xFF)
    }
}
