import GuestMemory
import Testing
@testable import Boot

@Suite("MP table (Intel MP spec 1.4)")
struct MPTableTests {
    @Test("floating pointer and config table checksums, one processor entry per vCPU", arguments: [1, 2, 8, 254])
    func tableContents(vcpus: Int) throws {
        let memory = try TestImages.memory(64 << 20)
        let kernel = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: [0xF4])])
        _ = try KernelLoader.load(TestImages.request(kernel, vcpus: vcpus), into: memory)

        for pointerAddress in [X86Layout.mpTableAddress, X86Layout.mpFloatingPointerCopyAddress] {
            let pointer = try memory.bytes(pointerAddress, 16)
            #expect(Array(pointer[0..<4]) == Array("_MP_".utf8))
            #expect(pointer.reduce(UInt8(0), &+) == 0)
            #expect(pointer.le(UInt32.self, at: 4) == UInt32(X86Layout.mpTableAddress + 16))
        }
        let tableAddress = X86Layout.mpTableAddress + 16
        let length = Int(try memory.u16(tableAddress + 4))
        #expect(length == MPTable.size(vcpuCount: vcpus) - 16)
        let table = try memory.bytes(tableAddress, length)
        #expect(Array(table[0..<4]) == Array("PCMP".utf8))
        #expect(table.reduce(UInt8(0), &+) == 0)
        #expect(table.le(UInt32.self, at: 36) == 0xFEE0_0000)
        #expect(table.le(UInt16.self, at: 34) == UInt16(vcpus + 1 + 1 + 16 + 2))

        var processors: [(id: UInt8, flags: UInt8)] = []
        var ioInterrupts: [(irq: UInt8, pin: UInt8, apic: UInt8)] = []
        var local: [(type: UInt8, lint: UInt8)] = []
        var ioapic: (id: UInt8, address: UInt32)?
        var cursor = 44
        while cursor < table.count {
            switch table[cursor] {
            case 0: processors.append((table[cursor + 1], table[cursor + 3])); cursor += 20
            case 1: #expect(Array(table[(cursor + 2)..<(cursor + 8)]) == Array("ISA   ".utf8)); cursor += 8
            case 2: ioapic = (table[cursor + 1], table.le(UInt32.self, at: cursor + 4) ?? 0); cursor += 8
            case 3: ioInterrupts.append((table[cursor + 5], table[cursor + 7], table[cursor + 6])); cursor += 8
            case 4: local.append((table[cursor + 1], table[cursor + 7])); cursor += 8
            default: Issue.record("unknown entry type \(table[cursor])"); return
            }
        }
        #expect(processors.map(\.id) == (0..<vcpus).map { UInt8($0) })
        #expect(processors.map(\.flags) == [3] + [UInt8](repeating: 1, count: vcpus - 1))
        #expect(ioapic?.id == UInt8(vcpus) && ioapic?.address == 0xFEC0_0000)
        #expect(ioInterrupts.map(\.irq) == (0..<16).map { UInt8($0) })
        #expect(ioInterrupts.allSatisfy { $0.irq == $0.pin && $0.apic == UInt8(vcpus) })
        #expect(local.map(\.type) == [3, 1] && local.map(\.lint) == [0, 1])
        #expect(try memory.u16(0x40E) == 0x9FC0)
    }

    @Test("vCPU counts outside 1...254 are refused", arguments: [0, 255, -1])
    func vcpuBounds(vcpus: Int) throws {
        let kernel = TestImages.elf(entry: 0x100_0000, segments: [.init(0x100_0000, data: [0xF4])])
        let error = TestImages.loadError(TestImages.request(kernel, vcpus: vcpus), memory: try TestImages.memory(64 << 20))
        #expect(error == .invalidVCPUCount(vcpus, maximum: 254))
    }
}
