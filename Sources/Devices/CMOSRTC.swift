#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The PC's MC146818-compatible RTC and CMOS RAM at ports 0x70 (index, bit 7 = NMI mask) and 0x71
/// (data); insert at 0x70 with length 2. Time registers show the host's UTC clock (plus whatever
/// offset the guest sets), in BCD or binary and 12/24-hour form as register B asks. Memory size
/// bytes are filled in the layout QEMU uses and SeaBIOS reads. The RTC interrupt (IRQ 8) is not
/// generated: register C reports "update ended" for guests that poll it.
public final class CMOSRTC: BusDevice {
    public static let defaultPort: UInt64 = 0x70
    public static let portCount: UInt64 = 2
    public static let size = 128

    /// Time since 1970-01-01T00:00:00Z.
    public typealias Clock = @Sendable () -> Duration

    /// The host's real-time clock.
    public static let hostClock: Clock = {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return .seconds(Int64(now.tv_sec)) + .nanoseconds(Int64(now.tv_nsec))
    }

    private let locked: Mutex<CMOSRTCState>
    private let now: Clock

    /// Power-on CMOS. `memoryBelow4G`/`memoryAbove4G` are the guest RAM bytes on either side of
    /// the 4 GiB boundary; `cpuCount` fills byte 0x5f (SeaBIOS's fallback CPU count).
    public init(memoryBelow4G: UInt64, memoryAbove4G: UInt64, cpuCount: Int = 1, now: @escaping Clock = CMOSRTC.hostClock) {
        var cmos = [UInt8](repeating: 0, count: Self.size)
        cmos[RTC.registerA] = RTC.aDividerRunning | 0x06  // 1024 Hz periodic rate, as BIOSes set
        cmos[RTC.registerB] = RTC.b24Hour
        cmos[RTC.registerD] = RTC.dValidRAM
        Self.storeMemorySizes(in: &cmos, below4G: memoryBelow4G, above4G: memoryAbove4G)
        cmos[0x5F] = UInt8(clamping: max(cpuCount, 1) - 1)
        // Boot order as QEMU's PC keeps it for SeaBIOS (0x3D low nibble first, then high, then
        // 0x38's high nibble; 2 = hard disk, 3 = CD-ROM): disks first. 0x38 bit 0: don't insist
        // on a boot signature for floppies (there are none: byte 0x10, the drive types, stays 0).
        cmos[0x3D] = 0x32
        cmos[0x38] = 0x01
        self.now = now
        let second = Self.rtcSecond(hostTime: now(), offset: 0)
        locked = Mutex(CMOSRTCState(cmos: cmos, index: 0, nmiDisabled: false, clockOffsetSeconds: 0, lastFlagsReadSecond: second))
    }

    public init(restoring state: CMOSRTCState, now: @escaping Clock = CMOSRTC.hostClock) throws(DeviceStateError) {
        try state.validate()
        self.now = now
        locked = Mutex(state)
    }

    public var state: CMOSRTCState { locked.withLock { $0 } }

    /// Machine reset: the RTC's RESET pin clears its interrupt enables and flags; CMOS RAM and
    /// the clock are battery-backed and survive.
    public func reset() {
        let hostTime = now()
        locked.withLock { state in
            state.cmos[RTC.registerB] &= ~(RTC.bInterruptEnables | RTC.bSquareWave)
            state.lastFlagsReadSecond = Self.rtcSecond(hostTime: hostTime, offset: state.clockOffsetSeconds)
            state.index = 0
        }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        readBytewise(offset: offset, size: size) { port in
            // The index port is write-only; reads float high.
            port == 1 ? readData() : 0xFF
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        writeBytewise(offset: offset, size: size, value: value) { port, byte in
            switch port {
            case 0:
                locked.withLock { state in
                    state.nmiDisabled = byte & 0x80 != 0
                    state.index = byte & 0x7F
                }
            case 1:
                writeData(byte)
            default:
                break
            }
        }
    }

    private func readData() -> UInt8 {
        let hostTime = now()
        return locked.withLock { state in
            let register = Int(state.index)
            let running = state.cmos[RTC.registerB] & RTC.bSet == 0
            switch register {
            case _ where RTC.timeRegisters.contains(register) && running:
                let format = RTCFormat(registerB: state.cmos[RTC.registerB])
                let time = CivilTime(secondsSinceEpoch: Self.rtcSecond(hostTime: hostTime, offset: state.clockOffsetSeconds))
                return format.registers(for: time).first { $0.0 == register }?.1 ?? 0
            case RTC.registerA:
                let a = state.cmos[RTC.registerA] & ~RTC.aUpdateInProgress
                let dividerRunning = a & RTC.aDividerMask == RTC.aDividerRunning
                return running && dividerRunning && Self.updateInProgress(hostTime) ? a | RTC.aUpdateInProgress : a
            case RTC.registerC:
                return Self.readFlags(&state, rtcSecond: Self.rtcSecond(hostTime: hostTime, offset: state.clockOffsetSeconds))
            case RTC.registerD:
                return RTC.dValidRAM
            default:
                return state.cmos[register]
            }
        }
    }

    private func writeData(_ value: UInt8) {
        let hostSecond = Self.rtcSecond(hostTime: now(), offset: 0)
        locked.withLock { state in
            let register = Int(state.index)
            let wasRunning = state.cmos[RTC.registerB] & RTC.bSet == 0
            switch register {
            case RTC.registerA:
                state.cmos[register] = value & ~RTC.aUpdateInProgress
            case RTC.registerB:
                // Setting SET stops updates and clears UIE (data sheet, register B bit 7).
                let setting = value & RTC.bSet != 0
                state.cmos[register] = setting ? value & ~RTC.bUpdateEndedInterrupt : value
                // Frozen in the format being set, which the guest then writes the time in.
                if wasRunning && setting { Self.freeze(&state, hostSecond: hostSecond) }
                if !wasRunning && !setting { Self.commit(&state, hostSecond: hostSecond) }
            case RTC.registerC, RTC.registerD:
                break  // read-only
            case _ where RTC.timeRegisters.contains(register):
                // A write while the clock runs sets that one field of the current time.
                if wasRunning { Self.freeze(&state, hostSecond: hostSecond) }
                state.cmos[register] = value
                if wasRunning { Self.commit(&state, hostSecond: hostSecond) }
            default:
                state.cmos[register] = value
            }
        }
    }

    /// Copies the running clock into the time registers, in the current format.
    private static func freeze(_ state: inout CMOSRTCState, hostSecond: Int64) {
        let format = RTCFormat(registerB: state.cmos[RTC.registerB])
        let time = CivilTime(secondsSinceEpoch: offsetTime(hostSecond, state.clockOffsetSeconds))
        for (register, byte) in format.registers(for: time) { state.cmos[register] = byte }
    }

    /// Restarts the clock from the time registers; invalid contents leave the clock as it was,
    /// as a real RTC would keep counting from garbage but guests never rely on that.
    private static func commit(_ state: inout CMOSRTCState, hostSecond: Int64) {
        let format = RTCFormat(registerB: state.cmos[RTC.registerB])
        guard let guestSecond = format.secondsSinceEpoch(in: state.cmos) else { return }
        let (offset, overflow) = guestSecond.subtractingReportingOverflow(hostSecond)
        if !overflow && offset.magnitude <= CMOSRTCState.maxClockOffset.magnitude {
            state.clockOffsetSeconds = offset
        }
    }

    /// Register C: UF if a second boundary passed since the last read; IRQF if an enabled flag is
    /// set. Reading clears the flags.
    private static func readFlags(_ state: inout CMOSRTCState, rtcSecond: Int64) -> UInt8 {
        var flags: UInt8 = 0
        let running = state.cmos[RTC.registerB] & RTC.bSet == 0
        if running && rtcSecond != state.lastFlagsReadSecond { flags |= RTC.cUpdateEnded }
        if flags & state.cmos[RTC.registerB] & RTC.bInterruptEnables != 0 { flags |= RTC.cInterruptRequest }
        state.lastFlagsReadSecond = rtcSecond
        return flags
    }

    private static func offsetTime(_ hostSecond: Int64, _ offset: Int64) -> Int64 {
        let (sum, overflow) = hostSecond.addingReportingOverflow(offset)
        return overflow ? hostSecond : sum
    }

    static func rtcSecond(hostTime: Duration, offset: Int64) -> Int64 {
        offsetTime(hostTime.components.seconds, offset)
    }

    /// UIP is high for the 244 µs before each update (MC146818 data sheet), so a guest that waits
    /// for it to drop reads a consistent set of registers.
    static func updateInProgress(_ hostTime: Duration) -> Bool {
        let attoseconds = hostTime.components.attoseconds
        return attoseconds >= 1_000_000_000_000_000_000 - 244_000_000_000_000
    }

    /// The memory size bytes of QEMU's pc_cmos_init, which SeaBIOS reads back.
    private static func storeMemorySizes(in cmos: inout [UInt8], below4G: UInt64, above4G: UInt64) {
        func store16(_ value: UInt64, low: Int, high: Int) {
            let clamped = min(value, 0xFFFF)
            cmos[low] = UInt8(truncatingIfNeeded: clamped)
            cmos[high] = UInt8(truncatingIfNeeded: clamped >> 8)
        }
        let kib: UInt64 = 1024, mib = kib * kib
        store16(640, low: 0x15, high: 0x16)  // base memory, KiB
        let extendedKiB = below4G / kib > 1024 ? below4G / kib - 1024 : 0  // above 1 MiB, KiB
        store16(extendedKiB, low: 0x17, high: 0x18)
        store16(extendedKiB, low: 0x30, high: 0x31)
        let above16M = below4G > 16 * mib ? (below4G - 16 * mib) / (64 * kib) : 0  // 64 KiB units
        store16(above16M, low: 0x34, high: 0x35)
        let high = min(above4G / (64 * kib), 0xFF_FFFF)  // 64 KiB units, 24 bits
        cmos[0x5B] = UInt8(truncatingIfNeeded: high)
        cmos[0x5C] = UInt8(truncatingIfNeeded: high >> 8)
        cmos[0x5D] = UInt8(truncatingIfNeeded: high >> 16)
    }
}
