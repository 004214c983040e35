import Testing
@testable import Devices

/// 2024-02-29T13:45:07Z, a Thursday.
private let leapDayAfternoon: Duration = .seconds(1_709_214_307)

struct RTCFixture {
    let clock = FakeClock(leapDayAfternoon + .milliseconds(500))
    let rtc: CMOSRTC

    init(below4G: UInt64 = 512 << 20, above4G: UInt64 = 0) {
        rtc = CMOSRTC(memoryBelow4G: below4G, memoryAbove4G: above4G, cpuCount: 2, now: clock.clock)
    }

    func read(_ register: UInt8) -> UInt8 {
        rtc.write(offset: 0, size: 1, value: UInt64(register))
        return UInt8(rtc.read(offset: 1, size: 1))
    }

    func write(_ register: UInt8, _ value: UInt8) {
        rtc.write(offset: 0, size: 1, value: UInt64(register))
        rtc.write(offset: 1, size: 1, value: UInt64(value))
    }
}

@Suite struct CMOSRTCTests {
    @Test func timeReadsInBCDByDefault() {
        let f = RTCFixture()
        let registers: [UInt8] = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32]
        #expect(registers.map(f.read) == [0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20])
        #expect(f.read(0x0B) == 0x02)
        #expect(f.read(0x0D) == 0x80)  // valid RAM and time
    }

    @Test func binaryAndTwelveHourModesFollowRegisterB() {
        let f = RTCFixture()
        f.write(0x0B, 0x06)  // binary, 24h
        #expect(f.read(0x00) == 7)
        #expect(f.read(0x04) == 13)
        #expect(f.read(0x09) == 24)
        #expect(f.read(0x32) == 20)
        f.write(0x0B, 0x00)  // BCD, 12h
        #expect(f.read(0x04) == 0x81)  // 1 PM
        f.clock.set(.seconds(1_893_456_000))  // 2030-01-01T00:00:00Z: midnight is 12 AM
        #expect(f.read(0x04) == 0x12)
    }

    @Test func clockFollowsTheHost() {
        let f = RTCFixture()
        f.clock.advance(.seconds(3))
        #expect(f.read(0x00) == 0x10)
        f.clock.set(.seconds(4_102_444_799))  // 2099-12-31T23:59:59Z
        #expect([0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(f.read) == [0x59, 0x59, 0x23, 0x31, 0x12, 0x99, 0x20])
    }

    @Test func indexWriteSeparatesTheNMIMask() {
        let f = RTCFixture()
        f.rtc.write(offset: 0, size: 1, value: 0x8B)
        #expect(f.rtc.state.index == 0x0B)
        #expect(f.rtc.state.nmiDisabled)
        #expect(f.rtc.read(offset: 1, size: 1) == 0x02)
        f.rtc.write(offset: 0, size: 1, value: 0x0B)
        #expect(!f.rtc.state.nmiDisabled)
        #expect(f.rtc.read(offset: 0, size: 1) == 0xFF)  // index port is write-only
    }

    @Test func nvramIsGuestWritableAndSurvivesReset() {
        let f = RTCFixture()
        f.write(0x40, 0x5A)
        f.write(0x7F, 0xA5)
        f.write(0x0B, 0x12)  // update interrupt enabled; reset clears it
        f.rtc.reset()
        #expect(f.read(0x40) == 0x5A)
        #expect(f.read(0x7F) == 0xA5)
        #expect(f.read(0x0B) == 0x02)
        #expect(f.read(0x00) == 0x07)
    }

    @Test func registerDAndCAreReadOnly() {
        let f = RTCFixture()
        f.write(0x0D, 0x00)
        #expect(f.read(0x0D) == 0x80)
        f.write(0x0C, 0xFF)
        #expect(f.read(0x0C) == 0x00)
    }

    @Test func registerCReportsUpdateEndedOncePerSecond() {
        let f = RTCFixture()
        #expect(f.read(0x0C) == 0x00)
        f.clock.advance(.seconds(1))
        #expect(f.read(0x0C) == 0x10)
        #expect(f.read(0x0C) == 0x00)
        f.write(0x0B, 0x12)
        f.clock.advance(.seconds(1))
        #expect(f.read(0x0C) == 0x90)  // IRQF as UIE is on
    }

    @Test func updateInProgressOnlyJustBeforeTheSecondTicks() {
        let f = RTCFixture()
        #expect(f.read(0x0A) == 0x26)
        f.clock.set(leapDayAfternoon + .microseconds(999_900))
        #expect(f.read(0x0A) == 0xA6)
        f.write(0x0A, 0xA6)  // UIP is read-only
        #expect(f.rtc.state.cmos[0x0A] == 0x26)
    }

    @Test func guestSetTimeKeepsRunningFromWhereItWasSet() {
        let f = RTCFixture()
        f.write(0x0B, 0x82)  // SET: freeze
        f.write(0x09, 0x28)  // 2028-02-29: still a leap day
        f.clock.advance(.seconds(5))
        #expect(f.read(0x00) == 0x07)  // frozen while SET
        f.write(0x0B, 0x02)
        f.clock.advance(.seconds(2))
        #expect([0x00, 0x07, 0x08, 0x09, 0x32].map(f.read) == [0x09, 0x29, 0x02, 0x28, 0x20])
        #expect(f.rtc.state.clockOffsetSeconds == Int64(4 * 365 * 86_400 + 86_400) - 5)
    }

    @Test func twelveHourWritesAreUnderstood() {
        let f = RTCFixture()
        f.write(0x0B, 0x80)  // SET, BCD, 12-hour: frozen as 0x81 (1 PM)
        #expect(f.read(0x04) == 0x81)
        f.write(0x04, 0x92)  // 12 PM
        f.write(0x0B, 0x00)
        #expect(f.read(0x04) == 0x92)
        f.write(0x0B, 0x02)  // the same time in 24-hour form
        #expect(f.read(0x04) == 0x12)
        f.write(0x0B, 0x80)
        f.write(0x04, 0x12)  // 12 AM is midnight
        f.write(0x0B, 0x00)
        f.write(0x0B, 0x02)
        #expect(f.read(0x04) == 0x00)
        #expect(f.read(0x07) == 0x29)
    }

    @Test func impossibleDateIsNotCommitted() {
        let f = RTCFixture()
        f.write(0x0B, 0x82)
        f.write(0x09, 0x30)  // 2030-02-29 does not exist
        f.write(0x0B, 0x02)
        #expect(f.rtc.state.clockOffsetSeconds == 0)
    }

    @Test func invalidGuestTimeLeavesTheClockAlone() {
        let f = RTCFixture()
        f.write(0x0B, 0x82)
        f.write(0x08, 0x13)  // month 13
        f.write(0x0B, 0x02)
        #expect(f.rtc.state.clockOffsetSeconds == 0)
        f.write(0x00, 0x7A)  // not BCD
        #expect(f.rtc.state.clockOffsetSeconds == 0)
        f.write(0x00, 0x30)  // a valid write while running moves the clock
        #expect(f.rtc.state.clockOffsetSeconds == 23)
    }

    @Test func memorySizesAreWhereSeaBIOSLooks() {
        let f = RTCFixture(below4G: 3 << 30, above4G: 2 << 30)
        #expect(f.read(0x15) == 0x80 && f.read(0x16) == 0x02)  // 640 KiB
        #expect(f.read(0x17) == 0xFF && f.read(0x18) == 0xFF)  // capped at 65535 KiB
        let above16M = UInt16(f.read(0x34)) | UInt16(f.read(0x35)) << 8
        #expect(above16M == UInt16((3 << 30 - 16 << 20) / (64 << 10)))
        #expect([f.read(0x5B), f.read(0x5C), f.read(0x5D)] == [0x00, 0x80, 0x00])  // 2 GiB / 64 KiB
        #expect(f.read(0x5F) == 1)  // CPUs - 1
    }

    @Test func capturedStateRestoresTheSameCMOS() throws {
        let f = RTCFixture()
        f.write(0x50, 0x11)
        f.write(0x00, 0x30)
        f.rtc.write(offset: 0, size: 1, value: 0x8C)
        let captured = f.rtc.state
        let restored = try CMOSRTC(restoring: captured, now: f.clock.clock)
        #expect(restored.state == captured)
        restored.write(offset: 0, size: 1, value: 0x00)
        #expect(restored.read(offset: 1, size: 1) == 0x30)
    }

    @Test func restoringRejectsBadIndexSizeAndOffset() {
        let good = RTCFixture().rtc.state
        var badIndex = good
        badIndex.index = 0x80
        var shortCMOS = good
        shortCMOS.cmos = [UInt8](repeating: 0, count: 100)
        var wildOffset = good
        wildOffset.clockOffsetSeconds = .max
        for state in [badIndex, shortCMOS, wildOffset] {
            #expect(throws: DeviceStateError.self) { try CMOSRTC(restoring: state) }
        }
    }

    @Test func hostClockShowsAPlausibleUTCDate() {
        let rtc = CMOSRTC(memoryBelow4G: 64 << 20, memoryAbove4G: 0)
        rtc.write(offset: 0, size: 1, value: 0x32)
        let century = rtc.read(offset: 1, size: 1)
        rtc.write(offset: 0, size: 1, value: 0x09)
        let year = rtc.read(offset: 1, size: 1)
        #expect(century == 0x20)
        #expect(year >= 0x25 && year <= 0x99)  // written in 2026; BCD
    }

    @Test(arguments: [Int64(0), -1, 951_782_400, 951_868_799, 4_107_542_400, -62_135_596_800, 253_402_300_799])
    func civilTimeRoundTrips(seconds: Int64) {
        #expect(CivilTime(secondsSinceEpoch: seconds).secondsSinceEpoch == seconds)
    }
}
