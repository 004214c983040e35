import Testing
@testable import Devices

struct I8042Fixture {
    let events = RecordingEventSink()
    let keyboardLine = RecordingInterruptLine()
    let auxLine = RecordingInterruptLine()
    let controller: I8042
    let bus = Bus()

    init() throws {
        controller = I8042(events: events, keyboardInterrupt: keyboardLine, auxInterrupt: auxLine)
        try bus.insert(controller.dataPort, base: 0x60, length: 1)
        try bus.insert(controller.commandPort, base: 0x64, length: 1)
    }

    func command(_ byte: UInt8) { bus.write(address: 0x64, size: 1, value: UInt64(byte)) }
    func data(_ byte: UInt8) { bus.write(address: 0x60, size: 1, value: UInt64(byte)) }
    var status: UInt8 { UInt8(bus.read(address: 0x64, size: 1) ?? 0) }
    func readData() -> UInt8 { UInt8(bus.read(address: 0x60, size: 1) ?? 0) }
}

@Suite struct I8042Tests {
    @Test func selfTestAnswers55ThroughTheOutputBuffer() throws {
        let f = try I8042Fixture()
        #expect(f.status & 0x01 == 0)
        f.command(0xAA)
        #expect(f.status & 0x01 == 0x01)
        #expect(f.status & 0x08 == 0x08)  // last write was a command
        #expect(f.readData() == 0x55)
        #expect(f.status & 0x01 == 0)
    }

    @Test func commandByteReadsBackWhatWasWritten() throws {
        let f = try I8042Fixture()
        f.command(0x20)
        #expect(f.readData() == 0x47)
        f.command(0x60)
        f.data(0x65)
        #expect(f.status & 0x08 == 0)
        f.command(0x20)
        #expect(f.readData() == 0x65)
        #expect(f.controller.state.commandByte == 0x65)
    }

    @Test func portEnableCommandsToggleTheCommandByteBits() throws {
        let f = try I8042Fixture()
        f.command(0xA7)
        f.command(0xAD)
        #expect(f.controller.state.commandByte & 0x30 == 0x30)
        f.command(0xA8)
        #expect(f.controller.state.commandByte & 0x30 == 0x10)
        f.command(0xAE)
        #expect(f.controller.state.commandByte & 0x30 == 0)
    }

    @Test func interfaceTestsAndOutputPortReadReport() throws {
        let f = try I8042Fixture()
        f.command(0xAB)
        #expect(f.readData() == 0x00)
        f.command(0xA9)
        #expect(f.readData() == 0x00)
        f.command(0xD0)
        #expect(f.readData() & 0x03 == 0x03)  // not in reset, A20 on
    }

    @Test func pulseResetRaisesAResetEvent() throws {
        let f = try I8042Fixture()
        f.command(0xFF)  // pulses nothing
        #expect(f.events.events.isEmpty)
        f.command(0xFE)
        #expect(f.events.events == [.reset])
    }

    @Test func clearingOutputPortBitZeroResets() throws {
        let f = try I8042Fixture()
        f.command(0xD1)
        f.data(0x03)
        #expect(f.events.events.isEmpty)
        f.command(0xD1)
        f.data(0x02)
        #expect(f.events.events == [.reset])
    }

    @Test func auxLoopbackArrivesAsAuxDataWithIRQ12() throws {
        let f = try I8042Fixture()
        f.command(0xD3)
        f.data(0x5A)
        #expect(f.status & 0x21 == 0x21)
        #expect(f.auxLine.isHigh)
        #expect(!f.keyboardLine.isHigh)
        #expect(f.readData() == 0x5A)
        #expect(!f.auxLine.isHigh)
    }

    @Test func bytesForAbsentDevicesTimeOut() throws {
        let f = try I8042Fixture()
        f.data(0xF2)  // keyboard "get ID"
        #expect(f.status & 0x61 == 0x41)  // full, timeout, keyboard side
        #expect(f.keyboardLine.isHigh)
        #expect(f.readData() == 0xFE)
        f.command(0xD4)
        f.data(0xF2)  // mouse "get ID"
        #expect(f.status & 0x61 == 0x61)
        #expect(f.auxLine.isHigh)
    }

    @Test func interruptsFollowTheCommandByteEnables() throws {
        let f = try I8042Fixture()
        f.command(0x60)
        f.data(0x44)  // both interrupts off
        f.command(0xAA)
        #expect(!f.keyboardLine.isHigh)
        f.command(0x60)
        f.data(0x45)
        f.command(0xAA)
        #expect(f.keyboardLine.isHigh)
    }

    @Test func capturedStateRestoresTheSameController() throws {
        let f = try I8042Fixture()
        f.command(0x60)
        f.data(0x61)
        f.command(0xD3)
        let captured = f.controller.state
        #expect(captured.pendingCommand == 0xD3)
        let restored = try I8042(restoring: captured, events: RecordingEventSink())
        #expect(restored.state == captured)
        restored.dataPort.write(offset: 0, size: 1, value: 0x33)
        #expect(restored.commandPort.read(offset: 0, size: 1) & 0x21 == 0x21)
        #expect(restored.dataPort.read(offset: 0, size: 1) == 0x33)
    }

    @Test func restoringRejectsImpossibleStates() {
        var pending = I8042State()
        pending.pendingCommand = 0xAA
        var flags = I8042State()
        flags.outputFromAux = true
        var inReset = I8042State()
        inReset.outputPort = 0x02
        for state in [pending, flags, inReset] {
            #expect(throws: DeviceStateError.self) { try I8042(restoring: state, events: RecordingEventSink()) }
        }
    }
}
