import Synchronization

/// Captured state of `ACPIPM`: the PM1a registers and the PM timer's value when captured.
public struct ACPIPMState: Codable, Sendable, Equatable {
    /// PM1_STS: only PWRBTN_STS (bit 8) and WAK_STS (bit 15) are ever set by this device.
    public var status: UInt16
    /// PM1_EN: TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN (bits 0, 5, 8, 9, 10).
    public var enable: UInt16
    /// PM1_CNT as stored: SCI_EN (always set), BM_RLD and SLP_TYP; SLP_EN and GBL_RLS are write-only.
    public var control: UInt16
    /// The 32-bit PM timer; it continues counting from here after a restore.
    public var timer: UInt32

    public init(status: UInt16 = 0, enable: UInt16 = 0, control: UInt16 = ACPIPM.sciEnable, timer: UInt32 = 0) {
        self.status = status
        self.enable = enable
        self.control = control
        self.timer = timer
    }

    public func validate() throws(DeviceStateError) {
        func bad(_ field: String, _ value: UInt16, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: "ACPI PM", field: field, problem: "0x\(String(value, radix: 16)) \(problem)")
        }
        if status & ~ACPIPM.statusMask != 0 { throw bad("status", status, "has bits other than PWRBTN_STS and WAK_STS") }
        if enable & ~ACPIPM.enableMask != 0 { throw bad("enable", enable, "has reserved bits set") }
        if control & ~ACPIPM.controlStoredMask != 0 || control & ACPIPM.sciEnable == 0 {
            throw bad("control", control, "is not a PM1_CNT value (SCI_EN must be set, SLP_EN is write-only)")
        }
    }
}

/// ACPI fixed-feature hardware (ACPI 6.5 section 4.8) in I/O space, the registers the FADT points
/// at. Insert at `basePort` with length `portCount`:
/// ```
/// 0x600  PM1a_EVT_BLK  PM1_STS (16-bit, write 1 to clear), PM1_EN (16-bit) at 0x602
/// 0x604  PM1a_CNT_BLK  PM1_CNT (16-bit): SCI_EN bit 0 (always 1), SLP_TYP bits 10-12, SLP_EN bit 13
/// 0x608  PM_TMR_BLK    32-bit PM timer at 3.579545 MHz, read-only
/// 0x606-0x607, 0x60C-0x60F  reserved: read 0, writes ignored
/// ```
/// There is no SMI command port: the machine is always in ACPI mode. Writing SLP_EN with
/// SLP_TYP 5 (the DSDT's \_S5) powers off; other sleep types wake at once (WAK_STS set, nothing
/// else happens), so a guest that tries to sleep cannot hang waiting for a wake. The SCI (ISA
/// IRQ 9, level, active high) is high exactly while PM1_STS & PM1_EN is non-zero.
public final class ACPIPM: BusDevice {
    public static let basePort: UInt64 = 0x600
    public static let portCount: UInt64 = 0x10
    public static let statusOffset: UInt64 = 0, enableOffset: UInt64 = 2, controlOffset: UInt64 = 4
    public static let timerOffset: UInt64 = 8

    public static let timerStatus: UInt16 = 1 << 0
    public static let powerButtonStatus: UInt16 = 1 << 8
    public static let wakeStatus: UInt16 = 1 << 15
    public static let powerButtonEnable: UInt16 = 1 << 8
    public static let sciEnable: UInt16 = 1 << 0
    public static let sleepTypeShift: UInt16 = 10
    public static let sleepTypeMask: UInt16 = 0x7 << 10
    public static let sleepEnable: UInt16 = 1 << 13
    /// SLP_TYP value of \_S5 (soft off) in Vireo's DSDT.
    public static let softOffSleepType: UInt16 = 5
    /// The PM timer's frequency (ACPI 6.5 section 4.8.3.3).
    public static let timerFrequency: UInt64 = 3_579_545

    static let statusMask: UInt16 = powerButtonStatus | wakeStatus
    static let enableMask: UInt16 = 0x0721
    static let busMasterReload: UInt16 = 1 << 1
    static let controlStoredMask: UInt16 = sciEnable | busMasterReload | sleepTypeMask

    /// A monotonic time source; only differences between readings are used.
    public typealias Clock = @Sendable () -> Duration

    /// Time since this clock was made, from the host's monotonic clock.
    public static func monotonicClock() -> Clock {
        let origin = ContinuousClock.now
        return { ContinuousClock.now - origin }
    }

    private struct Locked {
        var registers: ACPIPMState
        /// Clock reading at which the timer showed `registers.timer`.
        var timerOrigin: Duration
        var sciHigh: Bool
    }

    private let locked: Mutex<Locked>
    private let events: any MachineEventSink
    private let sci: any InterruptLine
    private let clock: Clock

    public convenience init(events: any MachineEventSink, sci: any InterruptLine,
                            clock: @escaping Clock = ACPIPM.monotonicClock()) {
        self.init(validated: ACPIPMState(), events: events, sci: sci, clock: clock)
    }

    /// Rebuilds the device from a snapshot, re-validated like any untrusted input; the SCI is driven
    /// to the restored level.
    public convenience init(restoring state: ACPIPMState, events: any MachineEventSink, sci: any InterruptLine,
                            clock: @escaping Clock = ACPIPM.monotonicClock()) throws(DeviceStateError) {
        try state.validate()
        self.init(validated: state, events: events, sci: sci, clock: clock)
    }

    private init(validated state: ACPIPMState, events: any MachineEventSink, sci: any InterruptLine, clock: @escaping Clock) {
        self.events = events
        self.sci = sci
        self.clock = clock
        let high = state.status & state.enable != 0
        locked = Mutex(Locked(registers: state, timerOrigin: clock(), sciHigh: high))
        sci.setLevel(high)
    }

    public var state: ACPIPMState {
        let now = clock()
        return locked.withLock { locked in
            var registers = locked.registers
            registers.timer = Self.timerValue(locked, now: now)
            return registers
        }
    }

    /// A press of the fixed-feature power button: latches PWRBTN_STS; the SCI rises if the guest
    /// enabled PWRBTN_EN (Linux's ACPI button driver does, and starts an orderly shutdown).
    public func pressPowerButton() {
        withRegisters { $0.status |= Self.powerButtonStatus }
    }

    /// Whether the guest's ACPI driver has enabled power-button events.
    public var powerButtonEnabled: Bool { locked.withLock { $0.registers.enable & Self.powerButtonEnable != 0 } }

    /// Whether a press is latched and not yet acknowledged by the guest.
    public var powerButtonPending: Bool { locked.withLock { $0.registers.status & Self.powerButtonStatus != 0 } }

    /// Machine reset: status and enables clear, SCI_EN stays set, the SCI drops.
    public func reset() {
        withRegisters { registers in
            registers.status = 0
            registers.enable = 0
            registers.control = Self.sciEnable
        }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        let now = clock()
        let image: [UInt8] = locked.withLock { locked in
            var image = [UInt8](repeating: 0, count: Int(Self.portCount))
            let registers = locked.registers
            let timer = Self.timerValue(locked, now: now)
            for (value, at, width) in [(UInt64(registers.status), Self.statusOffset, 2), (UInt64(registers.enable), Self.enableOffset, 2),
                                       (UInt64(registers.control), Self.controlOffset, 2), (UInt64(timer), Self.timerOffset, 4)] {
                for index in 0..<width { image[Int(at) + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(index))) }
            }
            return image
        }
        return readBytewise(offset: offset, size: size) { byteOffset in
            byteOffset < Self.portCount ? image[Int(byteOffset)] : 0
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        writeBytewise(offset: offset, size: size, value: value) { byteOffset, byte in
            let powerOff = withRegisters { registers in Self.writeByte(byte, at: byteOffset, to: &registers) }
            if powerOff { events.machineEvent(.powerOff) }
        }
    }

    /// Applies one byte write; returns true when it asks for S5. 16-bit registers are split into
    /// bytes, as ISA does for a byte-wide access, so `outb` to either half behaves like hardware.
    private static func writeByte(_ byte: UInt8, at offset: UInt64, to registers: inout ACPIPMState) -> Bool {
        let shift = UInt16(8 * (offset & 1))
        let bits = UInt16(byte) << shift
        switch offset {
        case statusOffset, statusOffset + 1:
            registers.status &= ~bits                                       // write 1 to clear
        case enableOffset, enableOffset + 1:
            registers.enable = (registers.enable & ~(0xFF << shift)) | (bits & enableMask)
        case controlOffset, controlOffset + 1:
            let stored = (registers.control & ~(0xFF << shift)) | (bits & controlStoredMask & (0xFF << shift))
            registers.control = stored | sciEnable
            guard bits & sleepEnable != 0 else { return false }
            if (registers.control & sleepTypeMask) >> sleepTypeShift == softOffSleepType { return true }
            registers.status |= wakeStatus                                  // any other sleep: wake at once
        default:
            break                                                           // timer and reserved bytes: read-only
        }
        return false
    }

    /// Every register change goes through here so the SCI follows it (driven inside the lock, so
    /// racing vCPUs cannot leave the line at a stale level).
    private func withRegisters<Result>(_ body: (inout ACPIPMState) -> Result) -> Result {
        locked.withLock { locked in
            let result = body(&locked.registers)
            let high = locked.registers.status & locked.registers.enable != 0
            if high != locked.sciHigh {
                locked.sciHigh = high
                sci.setLevel(high)
            }
            return result
        }
    }

    /// The timer value at `now`: the captured value plus ticks since, modulo 2^32. A clock that
    /// runs backwards holds the timer still rather than making it jump.
    private static func timerValue(_ locked: Locked, now: Duration) -> UInt32 {
        let elapsed = now - locked.timerOrigin
        guard elapsed > .zero else { return locked.registers.timer }
        let (seconds, attoseconds) = elapsed.components
        // Wrapping arithmetic keeps the value exact modulo 2^32, which is all the register shows.
        let whole = UInt64(seconds) &* timerFrequency
        let fraction = UInt64(attoseconds / 1_000_000_000) * timerFrequency / 1_000_000_000
        return locked.registers.timer &+ UInt32(truncatingIfNeeded: whole &+ fraction)
    }
}
