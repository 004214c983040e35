import Foundation
import Synchronization
import Testing
@testable import Devices

/// The UEFI variable store's flash: the command sequences OVMF's QemuFlash.c issues, what the
/// array holds after each, when reads must reach the device, and hostile input.
@Suite struct PFlashTests {
    /// An 8 KiB flash: block 0 starts like a firmware volume (zeros, then a GUID), block 1 erased.
    static func image() -> [UInt8] {
        var bytes = [UInt8](repeating: 0xFF, count: 8192)
        for index in 0..<16 { bytes[index] = 0 }
        for index in 16..<32 { bytes[index] = UInt8(0x80 + index) }
        return bytes
    }

    final class ReadModes: Sendable {
        let changes = Mutex<[Bool]>([])
        var recorded: [Bool] { changes.withLock { $0 } }
        func record(_ registers: Bool) { changes.withLock { $0.append(registers) } }
    }

    static func flash(_ modes: ReadModes = ReadModes()) throws -> PFlash {
        PFlash(memory: try FlashMemory(copying: image()), onRegisterReads: { modes.record($0) })
    }

    /// What the array holds, as the guest reads it through the memory slot (not the device).
    static func array(_ flash: PFlash, _ range: Range<Int>) -> [UInt8] { Array(flash.memory.bytes[range]) }

    @Test func ovmfDetectsItAsFlash() throws {
        let modes = ReadModes()
        let flash = try Self.flash(modes)
        // QemuFlashDetected: the first byte that is not 0x50, 0x70 or 0 is at offset 16.
        let probe: UInt64 = 16
        let original = UInt8(flash.read(offset: probe, size: 1))
        flash.write(offset: probe, size: 1, value: 0x50)
        // Clear status leaves read-array mode: reads come from the array (the slot stays mapped).
        #expect(!flash.readsNeedDevice && modes.recorded.isEmpty)
        #expect(Self.array(flash, 16..<17) == [original])
        flash.write(offset: probe, size: 1, value: 0x70)
        #expect(flash.readsNeedDevice && modes.recorded == [true], "status reads must reach the device")
        #expect(flash.read(offset: probe, size: 1) == 0, "status after a clear is 0: OVMF's CLEARED_ARRAY_STATUS")
        flash.write(offset: probe, size: 1, value: 0xFF)
        #expect(!flash.readsNeedDevice && modes.recorded == [true, false])
        #expect(flash.read(offset: probe, size: 1) == UInt64(original))
        #expect(flash.memory.bytes == Self.image(), "detection changes nothing")
    }

    @Test func eraseThenProgramByteByByte() throws {
        let modes = ReadModes()
        let flash = try Self.flash(modes)
        // A block with data in it, erased as QemuFlashEraseBlock does (0x20, 0xD0 at its start).
        flash.write(offset: 0x1010, size: 1, value: 0x10)
        flash.write(offset: 0x1010, size: 1, value: 0x00)
        #expect(Self.array(flash, 0x1010..<0x1011) == [0])
        flash.write(offset: 0x1000, size: 1, value: 0x20)
        flash.write(offset: 0x1000, size: 1, value: 0xD0)
        #expect(Self.array(flash, 0x1000..<0x2000) == [UInt8](repeating: 0xFF, count: 0x1000))
        #expect(Self.array(flash, 0..<32) == Array(Self.image()[0..<32]), "erase stays in its 4 KiB block")
        // QemuFlashWrite: 0x10 then the byte, for each byte; 0xFF after the last.
        let text = Array("VIREO".utf8)
        for (index, byte) in text.enumerated() {
            flash.write(offset: 0x1100 + UInt64(index), size: 1, value: 0x10)
            flash.write(offset: 0x1100 + UInt64(index), size: 1, value: UInt64(byte))
        }
        flash.write(offset: 0x1104, size: 1, value: 0xFF)
        #expect(Self.array(flash, 0x1100..<0x1105) == text)
        #expect(Self.array(flash, 0x1105..<0x1106) == [0xFF])
        #expect(modes.recorded.isEmpty, "program and erase keep the array mapped (OVMF reads only after 0xFF)")
        // Without the slot (a host without read-only memory slots) reads after a program give
        // status, as QEMU's flash does, until the read-array command.
        flash.write(offset: 0x1200, size: 1, value: 0x40)
        flash.write(offset: 0x1200, size: 1, value: 0x33)
        #expect(flash.read(offset: 0x1200, size: 1) == 0x80)
        flash.write(offset: 0x1200, size: 1, value: 0xFF)
        #expect(flash.read(offset: 0x1200, size: 4) == 0xFFFF_FF33)
    }

    @Test func anEraseNotConfirmedIsASequenceErrorAndChangesNothing() throws {
        let flash = try Self.flash()
        flash.write(offset: 0x20, size: 1, value: 0x20)
        flash.write(offset: 0x20, size: 1, value: 0x55)
        #expect(flash.memory.bytes == Self.image())
        flash.write(offset: 0x20, size: 1, value: 0x70)
        #expect(flash.read(offset: 0x20, size: 1) & 0x30 == 0x30, "status reports the sequence error")
        flash.write(offset: 0x20, size: 1, value: 0x50)
        flash.write(offset: 0x20, size: 1, value: 0x70)
        #expect(flash.read(offset: 0x20, size: 1) == 0)
    }

    @Test func identifierAndQueryAnswerFromTheDevice() throws {
        let modes = ReadModes()
        let flash = try Self.flash(modes)
        flash.write(offset: 0, size: 1, value: 0x90)
        #expect(flash.read(offset: 0, size: 1) == 0x89 && flash.read(offset: 1, size: 1) == 0x18)
        flash.write(offset: 0, size: 1, value: 0x98)
        #expect(flash.read(offset: 0x10, size: 1) == 0x51 && flash.read(offset: 0x11, size: 2) == 0x5952)
        flash.write(offset: 0, size: 1, value: 0x00)
        #expect(modes.recorded == [true, false], "one unmap for both register modes, one map back")
    }

    @Test func hostileAccessesChangeNothingOutsideTheArray() throws {
        let flash = try Self.flash()
        let size = UInt64(flash.memory.count)
        for (offset, width) in [(size, 1), (size - 1, 2), (UInt64.max, 8), (UInt64.max - 3, 4), (0, 0), (0, 16)] {
            flash.write(offset: offset, size: width, value: 0x10)
            flash.write(offset: offset, size: width, value: 0)
            flash.write(offset: offset, size: width, value: 0x20)
            flash.write(offset: offset, size: width, value: 0xD0)
            _ = flash.read(offset: offset, size: width)
        }
        #expect(flash.memory.bytes == Self.image())
        // A wide program at the very end stays inside.
        flash.write(offset: size - 8, size: 8, value: 0x10)
        flash.write(offset: size - 8, size: 8, value: 0x0102_0304_0506_0708)
        #expect(Self.array(flash, Int(size) - 8..<Int(size)) == [8, 7, 6, 5, 4, 3, 2, 1])
    }

    @Test func stateRoundTripsAndBadStatesAreRefused() throws {
        let flash = try Self.flash()
        flash.write(offset: 0x1000, size: 1, value: 0x10)
        flash.write(offset: 0x1000, size: 1, value: 0x42)
        flash.write(offset: 0x1000, size: 1, value: 0x70)
        let saved = flash.state
        let modes = ReadModes()
        let restored = try PFlash(memory: try FlashMemory(copying: Self.image()), restoring: saved, onRegisterReads: { modes.record($0) })
        #expect(restored.state == saved)
        #expect(restored.readsNeedDevice && restored.read(offset: 0, size: 1) == 0x80)
        #expect(Self.array(restored, 0x1000..<0x1001) == [0x42], "the restored flash holds the saved array")
        var short = saved
        short.contents.removeLast()
        #expect(throws: DeviceStateError.self) { try PFlash(memory: try FlashMemory(copying: Self.image()), restoring: short) }
        var unknown = saved
        unknown.command = 0x33
        #expect(throws: DeviceStateError.self) { try PFlash(memory: try FlashMemory(copying: Self.image()), restoring: unknown) }
        var halfRead = saved
        halfRead.awaitingSecondCycle = true
        #expect(throws: DeviceStateError.self) { try PFlash(memory: try FlashMemory(copying: Self.image()), restoring: halfRead) }
    }

    @Test func aFileGetsEveryProgramAtReadArray() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-pflash-\(getpid()).fd").path
        defer { unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(Self.image())))
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        do {
            let flash = PFlash(memory: try FlashMemory(file: fd, path: path))
            flash.write(offset: 0x1800, size: 1, value: 0x10)
            flash.write(offset: 0x1800, size: 1, value: 0x5A)
            flash.write(offset: 0x1800, size: 1, value: 0xFF)
        }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(bytes.count == 8192 && bytes[0x1800] == 0x5A && bytes[0x1801] == 0xFF)
        // Not a regular file: refused, the descriptor closed.
        let devNull = open("/dev/null", O_RDWR)
        #expect(throws: FlashError.cannotMap(path: "/dev/null", reason: "not a non-empty regular file")) {
            try FlashMemory(file: devNull, path: "/dev/null")
        }
    }
}
