/// Captured state of the CMOS RTC: the 128 CMOS bytes, the index port and the guest clock's
/// offset from the host clock (the guest may set its RTC; the host clock keeps running).
public struct CMOSRTCState: Codable, Sendable, Equatable {
    /// All 128 bytes. Time registers hold meaningful values only while register B's SET bit
    /// freezes the clock; otherwise reads compute them from the host clock.
    public var cmos: [UInt8]
    /// Selected register, 0...127 (bit 7 of the index write is the NMI mask, kept apart).
    public var index: UInt8
    public var nmiDisabled: Bool
    /// Guest RTC time minus host time, in seconds.
    public var clockOffsetSeconds: Int64
    /// RTC second at the last register C read, to report "update ended" (UF) since then.
    public var lastFlagsReadSecond: Int64

    public init(cmos: [UInt8], index: UInt8, nmiDisabled: Bool, clockOffsetSeconds: Int64, lastFlagsReadSecond: Int64) {
        self.cmos = cmos
        self.index = index
        self.nmiDisabled = nmiDisabled
        self.clockOffsetSeconds = clockOffsetSeconds
        self.lastFlagsReadSecond = lastFlagsReadSecond
    }

    /// Ten thousand years either way: anything a guest can set with a century register, and far
    /// from Int64 overflow when added to the host clock.
    static let maxClockOffset: Int64 = 10_000 * 366 * CivilTime.secondsPerDay

    public func validate() throws(DeviceStateError) {
        func bad(_ field: String, _ problem: String) -> DeviceStateError {
            DeviceStateError(device: "CMOS RTC", field: field, problem: problem)
        }
        if cmos.count != CMOSRTC.size { throw bad("cmos", "has \(cmos.count) bytes, expected \(CMOSRTC.size)") }
        if index >= UInt8(CMOSRTC.size) { throw bad("index", "\(index.hex) is beyond register 0x7f") }
        if clockOffsetSeconds.magnitude > Self.maxClockOffset.magnitude {
            throw bad("clockOffsetSeconds", "\(clockOffsetSeconds) is more than 10000 years")
        }
        if lastFlagsReadSecond.magnitude > UInt64(1) << 50 {
            throw bad("lastFlagsReadSecond", "\(lastFlagsReadSecond) is not a plausible time")
        }
    }
}

/// MC146818 register numbers and bits.
enum RTC {
    static let seconds = 0x00
    static let minutes = 0x02
    static let hours = 0x04
    static let dayOfWeek = 0x06
    static let dayOfMonth = 0x07
    static let month = 0x08
    static let year = 0x09
    static let registerA = 0x0A
    static let registerB = 0x0B
    static let registerC = 0x0C
    static let registerD = 0x0D
    static let century = 0x32
    static let timeRegisters: Set<Int> = [seconds, minutes, hours, dayOfWeek, dayOfMonth, month, year, century]

    static let aUpdateInProgress: UInt8 = 0x80
    /// Divider bits 6:4 = 010: 32.768 kHz time base, clock running.
    static let aDividerRunning: UInt8 = 0x20
    static let aDividerMask: UInt8 = 0x70
    static let bSet: UInt8 = 0x80
    static let bInterruptEnables: UInt8 = 0x70  // periodic, alarm, update-ended
    static let bUpdateEndedInterrupt: UInt8 = 0x10
    static let bSquareWave: UInt8 = 0x08
    static let bBinary: UInt8 = 0x04
    static let b24Hour: UInt8 = 0x02
    static let cInterruptRequest: UInt8 = 0x80
    static let cUpdateEnded: UInt8 = 0x10
    static let dValidRAM: UInt8 = 0x80
    static let hourPM: UInt8 = 0x80
}

/// Register encodings per register B: BCD or binary, 12- or 24-hour.
struct RTCFormat {
    let binary: Bool
    let twentyFourHour: Bool

    init(registerB: UInt8) {
        binary = registerB & RTC.bBinary != 0
        twentyFourHour = registerB & RTC.b24Hour != 0
    }

    func encode(_ value: Int64) -> UInt8 {
        let value = UInt8(clamping: value)
        return binary ? value : (value / 10) << 4 | value % 10
    }

    func decode(_ byte: UInt8) -> Int64? {
        if binary { return Int64(byte) }
        guard byte >> 4 <= 9, byte & 0x0F <= 9 else { return nil }
        return Int64(byte >> 4) * 10 + Int64(byte & 0x0F)
    }

    func encodeHour(_ hour: Int64) -> UInt8 {
        if twentyFourHour { return encode(hour) }
        let twelveHour = hour % 12 == 0 ? 12 : hour % 12
        return encode(twelveHour) | (hour >= 12 ? RTC.hourPM : 0)
    }

    func decodeHour(_ byte: UInt8) -> Int64? {
        if twentyFourHour { return decode(byte) }
        guard let twelveHour = decode(byte & ~RTC.hourPM), (1...12).contains(twelveHour) else { return nil }
        return twelveHour % 12 + (byte & RTC.hourPM != 0 ? 12 : 0)
    }

    /// The registers' bytes for a calendar time (years outside 0...9999 are clamped).
    func registers(for time: CivilTime) -> [(Int, UInt8)] {
        let year = min(max(time.year, 0), 9999)
        return [
            (RTC.seconds, encode(time.second)), (RTC.minutes, encode(time.minute)),
            (RTC.hours, encodeHour(time.hour)), (RTC.dayOfWeek, encode(time.dayOfWeek)),
            (RTC.dayOfMonth, encode(time.day)), (RTC.month, encode(time.month)),
            (RTC.year, encode(year % 100)), (RTC.century, encode(year / 100)),
        ]
    }

    /// Seconds since the epoch the registers describe, or nil if any is invalid.
    func secondsSinceEpoch(in cmos: [UInt8]) -> Int64? {
        guard let second = decode(cmos[RTC.seconds]), let minute = decode(cmos[RTC.minutes]),
              let hour = decodeHour(cmos[RTC.hours]), let day = decode(cmos[RTC.dayOfMonth]),
              let month = decode(cmos[RTC.month]), let year = decode(cmos[RTC.year]),
              let century = decode(cmos[RTC.century]), year <= 99, century <= 99
        else { return nil }
        return CivilTime(year: century * 100 + year, month: month, day: day, hour: hour, minute: minute, second: second)
            .secondsSinceEpoch
    }
}
