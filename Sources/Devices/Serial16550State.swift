/// Register-level state of a 16550A UART: everything needed to rebuild the device exactly. The
/// receive FIFO is the chip's own (16 bytes with FIFOs enabled, the 1-byte holding register
/// without), so host input is never buffered beyond what the guest could see.
public struct Serial16550State: Codable, Sendable, Equatable {
    /// Baud-rate divisor, DLM:DLL.
    public var divisorLatch: UInt16
    /// IER, low four bits.
    public var interruptEnable: UInt8
    /// FCR as programmed: 0 with FIFOs off, else enable | DMA mode | receive trigger bits.
    public var fifoControl: UInt8
    public var lineControl: UInt8
    /// MCR, low five bits (DTR, RTS, OUT1, OUT2, LOOP).
    public var modemControl: UInt8
    public var scratch: UInt8
    /// LSR.OE, latched until LSR is read.
    public var overrunError: Bool
    /// MSR delta bits (DCTS, DDSR, TERI, DDCD), cleared when MSR is read.
    public var modemStatusDeltas: UInt8
    /// THRE interrupt armed: set when THR empties, cleared by IIR read reporting it or THR write.
    public var transmitterInterruptPending: Bool
    /// Received bytes not yet read by the guest, oldest first.
    public var receiveFIFO: [UInt8]

    /// Power-on register values (divisor 12 = 9600 baud, as BIOSes leave it).
    public init() {
        divisorLatch = 12
        interruptEnable = 0
        fifoControl = 0
        lineControl = 0
        modemControl = 0
        scratch = 0
        overrunError = false
        modemStatusDeltas = 0
        transmitterInterruptPending = false
        receiveFIFO = []
    }

    /// Checks a state from outside (a snapshot) the way guest input is checked.
    public func validate() throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: "serial 16550A", field: field, problem: problem)
        }
        if interruptEnable & ~UART.ierMask != 0 {
            throw bad("interruptEnable", "\(interruptEnable.hex) has bits beyond 0x0f")
        }
        if fifoControl & ~UART.fcrStoredMask != 0 || (fifoControl != 0 && fifoControl & UART.fcrEnable == 0) {
            throw bad("fifoControl", "\(fifoControl.hex) is not a value FCR can hold")
        }
        if modemControl & ~UART.mcrMask != 0 {
            throw bad("modemControl", "\(modemControl.hex) has bits beyond 0x1f")
        }
        if modemStatusDeltas & ~UART.msrDeltaMask != 0 {
            throw bad("modemStatusDeltas", "\(modemStatusDeltas.hex) has bits beyond 0x0f")
        }
        if receiveFIFO.count > receiveCapacity {
            throw bad("receiveFIFO", "holds \(receiveFIFO.count) bytes, capacity is \(receiveCapacity)")
        }
    }
}

/// 16550A register bits (National Semiconductor PC16550D data sheet).
enum UART {
    static let ierReceivedData: UInt8 = 0x01
    static let ierTransmitterEmpty: UInt8 = 0x02
    static let ierLineStatus: UInt8 = 0x04
    static let ierModemStatus: UInt8 = 0x08
    static let ierMask: UInt8 = 0x0F

    static let iirNoInterrupt: UInt8 = 0x01
    static let iirModemStatus: UInt8 = 0x00
    static let iirTransmitterEmpty: UInt8 = 0x02
    static let iirReceivedData: UInt8 = 0x04
    static let iirLineStatus: UInt8 = 0x06
    static let iirCharacterTimeout: UInt8 = 0x0C
    static let iirFIFOsEnabled: UInt8 = 0xC0

    static let fcrEnable: UInt8 = 0x01
    static let fcrClearReceive: UInt8 = 0x02
    static let fcrClearTransmit: UInt8 = 0x04
    /// Enable, DMA mode select and the two trigger bits; bit 5 (64-byte mode) is a 16750 feature
    /// and Linux tells the chips apart by whether it sticks.
    static let fcrStoredMask: UInt8 = 0xC9

    static let lcrDivisorLatchAccess: UInt8 = 0x80

    static let mcrDTR: UInt8 = 0x01
    static let mcrRTS: UInt8 = 0x02
    static let mcrOUT1: UInt8 = 0x04
    static let mcrOUT2: UInt8 = 0x08
    static let mcrLoop: UInt8 = 0x10
    static let mcrMask: UInt8 = 0x1F

    static let lsrDataReady: UInt8 = 0x01
    static let lsrOverrun: UInt8 = 0x02
    static let lsrTHREmpty: UInt8 = 0x20
    static let lsrTransmitterEmpty: UInt8 = 0x40

    static let msrCTS: UInt8 = 0x10
    static let msrDSR: UInt8 = 0x20
    static let msrRI: UInt8 = 0x40
    static let msrDCD: UInt8 = 0x80
    static let msrDeltaMask: UInt8 = 0x0F
    /// What a terminal on the far end presents: carrier, data set ready, clear to send.
    static let externalModemLines: UInt8 = msrDCD | msrDSR | msrCTS

    static let fifoSize = 16
}

/// The register model. Transmission is instantaneous, so THR and the shift register are always
/// empty by the time the guest looks again (LSR.THRE and TEMT stay set).
extension Serial16550State {
    var fifoEnabled: Bool { fifoControl & UART.fcrEnable != 0 }
    var loopback: Bool { modemControl & UART.mcrLoop != 0 }
    var divisorLatchAccess: Bool { lineControl & UART.lcrDivisorLatchAccess != 0 }
    var receiveCapacity: Int { fifoEnabled ? UART.fifoSize : 1 }

    /// Receive trigger level from FCR bits 7:6.
    var receiveTrigger: Int { [1, 4, 8, 14][Int(fifoControl >> 6)] }

    /// MSR bits 7:4. In loopback the outputs feed the inputs: RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
    var modemLines: UInt8 {
        guard loopback else { return UART.externalModemLines }
        var lines: UInt8 = 0
        if modemControl & UART.mcrRTS != 0 { lines |= UART.msrCTS }
        if modemControl & UART.mcrDTR != 0 { lines |= UART.msrDSR }
        if modemControl & UART.mcrOUT1 != 0 { lines |= UART.msrRI }
        if modemControl & UART.mcrOUT2 != 0 { lines |= UART.msrDCD }
        return lines
    }

    var lineStatus: UInt8 {
        var status = UART.lsrTHREmpty | UART.lsrTransmitterEmpty
        if !receiveFIFO.isEmpty { status |= UART.lsrDataReady }
        if overrunError { status |= UART.lsrOverrun }
        return status
    }

    /// IIR bits 3:0, highest-priority enabled source first (data sheet table 4). Below the
    /// trigger level, data is reported as a character timeout at once: there is no line timing
    /// to wait out, and drivers treat both the same way.
    var pendingInterrupt: UInt8 {
        if interruptEnable & UART.ierLineStatus != 0 && overrunError { return UART.iirLineStatus }
        if interruptEnable & UART.ierReceivedData != 0 && !receiveFIFO.isEmpty {
            if !fifoEnabled || receiveFIFO.count >= receiveTrigger { return UART.iirReceivedData }
            return UART.iirCharacterTimeout
        }
        if interruptEnable & UART.ierTransmitterEmpty != 0 && transmitterInterruptPending {
            return UART.iirTransmitterEmpty
        }
        if interruptEnable & UART.ierModemStatus != 0 && modemStatusDeltas != 0 { return UART.iirModemStatus }
        return UART.iirNoInterrupt
    }

    /// On a PC the UART's interrupt output reaches the PIC only through the OUT2 gate, and the
    /// chip holds its outputs inactive in loopback.
    var interruptLineHigh: Bool {
        pendingInterrupt != UART.iirNoInterrupt && modemControl & UART.mcrOUT2 != 0 && !loopback
    }

    var inputSpace: Int { loopback ? 0 : max(receiveCapacity - receiveFIFO.count, 0) }

    /// A byte arriving at the receiver; a full receiver drops it and latches OE.
    mutating func receive(_ byte: UInt8) {
        if receiveFIFO.count < receiveCapacity {
            receiveFIFO.append(byte)
        } else {
            overrunError = true
        }
    }

    mutating func readRegister(_ register: UInt64) -> UInt8 {
        switch register {
        case 0:
            if divisorLatchAccess { return UInt8(truncatingIfNeeded: divisorLatch) }
            return receiveFIFO.isEmpty ? 0 : receiveFIFO.removeFirst()
        case 1:
            if divisorLatchAccess { return UInt8(truncatingIfNeeded: divisorLatch >> 8) }
            return interruptEnable
        case 2:
            let source = pendingInterrupt
            // Reading IIR while it reports THRE is what acknowledges that interrupt.
            if source == UART.iirTransmitterEmpty { transmitterInterruptPending = false }
            return source | (fifoEnabled ? UART.iirFIFOsEnabled : 0)
        case 3:
            return lineControl
        case 4:
            return modemControl
        case 5:
            let status = lineStatus
            overrunError = false
            return status
        case 6:
            let status = modemLines | modemStatusDeltas
            modemStatusDeltas = 0
            return status
        case 7:
            return scratch
        default:
            return 0
        }
    }

    /// Returns the byte to send out of the port, if the write transmitted one.
    mutating func writeRegister(_ register: UInt64, _ value: UInt8) -> UInt8? {
        switch register {
        case 0:
            if divisorLatchAccess {
                divisorLatch = (divisorLatch & 0xFF00) | UInt16(value)
                return nil
            }
            // THR write acknowledges THRE; the byte leaves at once and THR is empty again.
            transmitterInterruptPending = true
            if loopback {
                receive(value)
                return nil
            }
            return value
        case 1:
            if divisorLatchAccess {
                divisorLatch = (divisorLatch & 0x00FF) | (UInt16(value) << 8)
                return nil
            }
            let newValue = value & UART.ierMask
            // Enabling THRE with THR empty raises it again even if an IIR read had cleared it;
            // Linux's startup THRE test and Windows rely on this (as QEMU and Bochs model it).
            if (interruptEnable ^ newValue) & UART.ierTransmitterEmpty != 0 {
                transmitterInterruptPending = newValue & UART.ierTransmitterEmpty != 0
            }
            interruptEnable = newValue
        case 2:
            writeFIFOControl(value)
        case 3:
            lineControl = value
        case 4:
            let linesBefore = modemLines
            modemControl = value & UART.mcrMask
            noteModemLineChange(from: linesBefore, to: modemLines)
        case 7:
            scratch = value
        default:
            break  // LSR and MSR are read-only here (their writes are factory test features).
        }
        return nil
    }

    private mutating func writeFIFOControl(_ value: UInt8) {
        var value = value
        // Toggling the enable bit clears both FIFOs (data sheet, FCR bit 0).
        if (value ^ fifoControl) & UART.fcrEnable != 0 {
            value |= UART.fcrClearReceive | UART.fcrClearTransmit
        }
        if value & UART.fcrClearReceive != 0 {
            receiveFIFO.removeAll()
        }
        if value & UART.fcrClearTransmit != 0 {
            transmitterInterruptPending = true
        }
        // Other FCR bits are only programmed while the enable bit is written as 1.
        fifoControl = value & UART.fcrEnable != 0 ? value & UART.fcrStoredMask : 0
    }

    private mutating func noteModemLineChange(from before: UInt8, to after: UInt8) {
        let changed = before ^ after
        if changed & UART.msrCTS != 0 { modemStatusDeltas |= 0x01 }
        if changed & UART.msrDSR != 0 { modemStatusDeltas |= 0x02 }
        // TERI: ring indicator's trailing edge only.
        if before & UART.msrRI != 0 && after & UART.msrRI == 0 { modemStatusDeltas |= 0x04 }
        if changed & UART.msrDCD != 0 { modemStatusDeltas |= 0x08 }
    }
}
