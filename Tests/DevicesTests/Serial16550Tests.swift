import Foundation
import Testing
@testable import Devices

/// Register offsets from COM1's base.
private enum Reg {
    static let data: UInt64 = 0, ier: UInt64 = 1, iir: UInt64 = 2, fcr: UInt64 = 2
    static let lcr: UInt64 = 3, mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7
}

struct SerialFixture {
    let line = RecordingInterruptLine()
    let output = RecordingSerialOutput()
    let spaceSignals = Counter()
    let uart: Serial16550

    init() {
        let signals = spaceSignals
        uart = Serial16550(interrupt: line, output: output, onInputSpace: { signals.increment() })
    }

    func outb(_ register: UInt64, _ value: UInt8) { uart.write(offset: register, size: 1, value: UInt64(value)) }
    func inb(_ register: UInt64) -> UInt8 { UInt8(uart.read(offset: register, size: 1)) }
}

@Suite struct Serial16550Tests {
    @Test func transmittedBytesReachTheSinkAndTHRStaysEmpty() {
        let f = SerialFixture()
        for byte in Array("ok\n".utf8) { f.outb(Reg.data, byte) }
        #expect(f.output.emitted == Array("ok\n".utf8))
        #expect(f.inb(Reg.lsr) & 0x60 == 0x60)  // THRE and TEMT
    }

    @Test func receivedByteSetsDataReadyAndRaisesTheLineUntilRead() {
        let f = SerialFixture()
        f.outb(Reg.mcr, 0x08)  // OUT2 gates the IRQ on a PC
        f.outb(Reg.ier, 0x01)
        #expect(!f.line.isHigh)
        #expect(f.uart.enqueueInput([0x41]) == 1)
        #expect(f.inb(Reg.lsr) & 0x01 == 0x01)
        #expect(f.line.isHigh)
        #expect(f.inb(Reg.iir) == 0x04)
        #expect(f.inb(Reg.data) == 0x41)
        #expect(f.inb(Reg.lsr) & 0x01 == 0)
        #expect(!f.line.isHigh)
        #expect(f.inb(Reg.iir) == 0x01)
        #expect(f.line.history == [false, true, false])
    }

    @Test func inputIsBoundedByTheReceiveFIFOAndNothingIsDropped() {
        let f = SerialFixture()
        #expect(f.uart.enqueueInput([UInt8](repeating: 1, count: 1000)) == 1)  // FIFOs off: RBR only
        #expect(f.uart.inputSpace == 0)
        #expect(f.inb(Reg.data) == 1)
        f.outb(Reg.fcr, 0x01)
        let flood = (0..<1000).map { UInt8(truncatingIfNeeded: $0) }
        let accepted = f.uart.enqueueInput(flood)
        #expect(accepted == 16)
        #expect(f.uart.enqueueInput(flood) == 0)
        #expect(f.uart.inputSpace == 0)
        let drained = (0..<16).map { _ in f.inb(Reg.data) }
        #expect(drained == Array(flood.prefix(16)))
        #expect(f.inb(Reg.lsr) & 0x02 == 0)  // host input never overruns
        #expect(f.uart.inputSpace == 16)
    }

    @Test func loopbackOverflowLatchesOverrunUntilLSRRead() {
        let f = SerialFixture()
        f.outb(Reg.fcr, 0x01)
        f.outb(Reg.mcr, 0x10)
        for byte in 0..<17 { f.outb(Reg.data, UInt8(byte)) }
        #expect(f.output.emitted.isEmpty)
        #expect(f.uart.inputSpace == 0)  // external input is disconnected in loopback
        #expect(f.inb(Reg.lsr) == 0x63)  // THRE | TEMT | OE | DR
        #expect(f.inb(Reg.lsr) == 0x61)  // OE cleared by the read
        #expect(f.inb(Reg.data) == 0)
        #expect(f.uart.state.receiveFIFO.count == 15)
    }

    @Test func divisorLatchRoundTripsAndHidesRBRAndIER() {
        let f = SerialFixture()
        f.outb(Reg.ier, 0x05)
        f.outb(Reg.lcr, 0x83)
        f.outb(Reg.data, 0x01)
        f.outb(Reg.ier, 0xC2)
        #expect(f.inb(Reg.data) == 0x01)
        #expect(f.inb(Reg.ier) == 0xC2)
        f.outb(Reg.lcr, 0x03)
        #expect(f.inb(Reg.ier) == 0x05)
        #expect(f.uart.state.divisorLatch == 0xC201)
        #expect(f.output.emitted.isEmpty)
    }

    @Test func interruptIdentificationFollowsPriority() {
        let f = SerialFixture()
        f.outb(Reg.fcr, 0x01)
        f.outb(Reg.ier, 0x0F)
        f.outb(Reg.mcr, 0x18)  // loopback: MSR lines change (deltas), bytes come back
        for byte in 0..<17 { f.outb(Reg.data, UInt8(byte)) }
        #expect(f.inb(Reg.iir) == 0xC6)  // line status (overrun)
        _ = f.inb(Reg.lsr)
        #expect(f.inb(Reg.iir) == 0xC4)  // received data
        for _ in 0..<16 { _ = f.inb(Reg.data) }
        #expect(f.inb(Reg.iir) == 0xC2)  // THRE, acknowledged by this read
        #expect(f.inb(Reg.iir) == 0xC0)  // modem status
        #expect(f.inb(Reg.msr) & 0x0F != 0)
        #expect(f.inb(Reg.iir) == 0xC1)
    }

    @Test func dataBelowTheTriggerLevelReportsCharacterTimeout() {
        let f = SerialFixture()
        f.outb(Reg.fcr, 0x81)  // trigger level 8
        f.outb(Reg.ier, 0x01)
        #expect(f.uart.enqueueInput([1, 2, 3]) == 3)
        #expect(f.inb(Reg.iir) == 0xCC)
        #expect(f.uart.enqueueInput([4, 5, 6, 7, 8]) == 5)
        #expect(f.inb(Reg.iir) == 0xC4)
    }

    @Test func transmitterEmptyInterruptIsClearedByIIRReadOrTHRWriteAndRearmedByIER() {
        let f = SerialFixture()
        f.outb(Reg.mcr, 0x08)
        f.outb(Reg.ier, 0x02)
        #expect(f.line.isHigh)
        #expect(f.inb(Reg.iir) == 0x02)
        #expect(!f.line.isHigh)
        #expect(f.inb(Reg.iir) == 0x01)
        f.outb(Reg.data, 0x55)  // THR empties again at once: THRE is pending again
        #expect(f.line.isHigh)
        f.outb(Reg.ier, 0x00)
        #expect(!f.line.isHigh)
        f.outb(Reg.ier, 0x02)
        #expect(f.line.isHigh)
    }

    @Test func interruptLineIsGatedByOUT2AndQuietInLoopback() {
        let f = SerialFixture()
        f.outb(Reg.ier, 0x01)
        _ = f.uart.enqueueInput([7])
        #expect(!f.line.isHigh)
        f.outb(Reg.mcr, 0x08)
        #expect(f.line.isHigh)
        f.outb(Reg.mcr, 0x18)
        #expect(!f.line.isHigh)
    }

    /// The probe sequence of Linux's 8250 autoconfig() and serial8250_do_startup().
    @Test func linuxAutoconfigDetectsA16550AThatWorksByInterrupt() {
        let f = SerialFixture()
        f.outb(Reg.ier, 0x00)
        #expect(f.inb(Reg.ier) & 0x0F == 0)
        f.outb(Reg.ier, 0x0F)
        #expect(f.inb(Reg.ier) & 0x0F == 0x0F)
        f.outb(Reg.ier, 0x00)
        f.outb(Reg.mcr, 0x10 | 0x0A)  // loopback with RTS and OUT2
        #expect(f.inb(Reg.msr) & 0xF0 == 0x90)  // CTS and DCD
        f.outb(Reg.mcr, 0x00)
        f.outb(Reg.lcr, 0xBF)
        f.outb(Reg.fcr, 0x00)  // "EFR" write, really FCR
        f.outb(Reg.lcr, 0x00)
        f.outb(Reg.fcr, 0x01)
        #expect(f.inb(Reg.iir) >> 6 == 3)  // 16550A
        f.outb(Reg.lcr, 0xBF)
        #expect(f.inb(Reg.iir) != 0)  // no EFR: not a 16650
        f.outb(Reg.lcr, 0x00)
        f.outb(Reg.fcr, 0x21)
        #expect(f.inb(Reg.iir) >> 5 == 6)  // 64-byte bit does not stick: not a 16750
        f.outb(Reg.fcr, 0x01)
        f.outb(Reg.ier, 0x40)
        #expect(f.inb(Reg.ier) & 0x40 == 0)  // not an XScale UART
        f.outb(Reg.scr, 0xA5)
        #expect(f.inb(Reg.scr) == 0xA5)
        // Startup: FIFOs cleared, LSR sane, then the THRE interrupt tests.
        f.outb(Reg.fcr, 0x07)
        #expect(f.inb(Reg.lsr) != 0xFF)
        f.outb(Reg.lcr, 0x03)
        f.outb(Reg.mcr, 0x0B)  // DTR, RTS, OUT2
        f.outb(Reg.ier, 0x02)
        #expect(f.inb(Reg.lsr) & 0x40 != 0)
        #expect(f.inb(Reg.iir) & 0x01 == 0)  // no UART_BUG_TXEN
        f.outb(Reg.ier, 0x00)
        f.outb(Reg.ier, 0x02)
        #expect(f.inb(Reg.iir) & 0x01 == 0)  // no UART_BUG_THRE
        f.outb(Reg.ier, 0x00)
        f.outb(Reg.ier, 0x05)
        _ = f.uart.enqueueInput([0x71])
        #expect(f.line.isHigh)
        #expect(f.inb(Reg.data) == 0x71)
        #expect(!f.line.isHigh)
    }

    @Test func wideAccessIsSplitIntoByteCycles() {
        let f = SerialFixture()
        f.uart.write(offset: Reg.lcr, size: 2, value: 0x0803)
        #expect(f.uart.state.lineControl == 0x03)
        #expect(f.uart.state.modemControl == 0x08)
        #expect(f.uart.read(offset: Reg.lcr, size: 2) == 0x0803)
    }

    @Test func hostIsToldWhenAFullReceiverHasRoomAgain() {
        let f = SerialFixture()
        _ = f.uart.enqueueInput([1, 2])
        #expect(f.spaceSignals.value == 0)
        _ = f.inb(Reg.data)
        #expect(f.spaceSignals.value == 1)
        _ = f.inb(Reg.data)  // already had room: no second signal
        #expect(f.spaceSignals.value == 1)
    }

    /// A host thread feeding input while a vCPU thread drains it: every byte arrives, once, in order.
    /// Both sides are real threads bounded by a deadline: busy loops on the cooperative pool (two
    /// threads on a 2-core machine) starved each other when other suites ran in parallel.
    @Test func concurrentInputAndReadsLoseNothing() {
        let f = SerialFixture()
        f.outb(Reg.fcr, 0x01)
        let message = (0..<4_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let uart = f.uart
        let deadline = Date().addingTimeInterval(60)
        let fed = DispatchSemaphore(value: 0)
        let feeder = Thread {
            var sent = 0
            while sent < message.count && Date() < deadline {
                let accepted = uart.enqueueInput(message[sent...].prefix(5))
                sent += accepted
                if accepted == 0 { sched_yield() }
            }
            fed.signal()
        }
        feeder.start()
        var received: [UInt8] = []
        while received.count < message.count && Date() < deadline {
            if uart.read(offset: Reg.lsr, size: 1) & 0x01 != 0 {
                received.append(UInt8(uart.read(offset: Reg.data, size: 1)))
            } else {
                sched_yield()
            }
        }
        fed.wait()
        #expect(received == message)
        #expect(f.inb(Reg.lsr) & 0x02 == 0)
    }

    @Test func resetRestoresPowerOnState() {
        let f = SerialFixture()
        f.outb(Reg.fcr, 0x01)
        f.outb(Reg.scr, 9)
        _ = f.uart.enqueueInput([1, 2, 3])
        f.uart.reset()
        #expect(f.uart.state == Serial16550State())
    }

    @Test func capturedStateRestoresTheSameDevice() throws {
        let f = SerialFixture()
        f.outb(Reg.fcr, 0x81)
        f.outb(Reg.mcr, 0x0B)
        f.outb(Reg.ier, 0x01)
        f.outb(Reg.scr, 0x5A)
        _ = f.uart.enqueueInput([10, 20, 30])
        let captured = f.uart.state
        let line = RecordingInterruptLine()
        let restored = try Serial16550(restoring: captured, interrupt: line, output: RecordingSerialOutput())
        #expect(restored.state == captured)
        #expect(line.isHigh)  // the restored device drives its pending interrupt at once
        #expect(restored.read(offset: Reg.data, size: 1) == 10)
    }

    @Test func restoringRejectsStatesTheChipCannotBeIn() {
        let corruptions: [(String, (inout Serial16550State) -> Void)] = [
            ("FIFO over 16", { $0.fifoControl = 0x01; $0.receiveFIFO = [UInt8](repeating: 0, count: 17) }),
            ("RBR over 1", { $0.receiveFIFO = [1, 2] }),
            ("IER high bits", { $0.interruptEnable = 0x10 }),
            ("FCR without enable", { $0.fifoControl = 0x40 }),
            ("MCR high bits", { $0.modemControl = 0x20 }),
            ("MSR deltas", { $0.modemStatusDeltas = 0x10 }),
        ]
        for (name, corrupt) in corruptions {
            var state = Serial16550State()
            corrupt(&state)
            #expect(throws: DeviceStateError.self, "\(name)") {
                try Serial16550(restoring: state, interrupt: RecordingInterruptLine(), output: RecordingSerialOutput())
            }
        }
    }
}
