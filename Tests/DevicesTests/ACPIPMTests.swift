import Foundation
import Testing
@testable import Devices

@Suite struct ACPIPMTests {
    struct Fixture {
        let sci = RecordingInterruptLine()
        let events = RecordingEventSink()
        let clock = FakeClock(.seconds(100))
        let bus = Bus()
        let device: ACPIPM

        init(restoring state: ACPIPMState? = nil) throws {
            if let state {
                device = try ACPIPM(restoring: state, events: events, sci: sci, clock: clock.clock)
            } else {
                device = ACPIPM(events: events, sci: sci, clock: clock.clock)
            }
            try bus.insert(device, base: ACPIPM.basePort, length: ACPIPM.portCount)
        }

        func inw(_ port: UInt64) -> UInt64? { bus.read(address: port, size: 2) }
        func outw(_ port: UInt64, _ value: UInt64) { bus.write(address: port, size: 2, value: value) }
    }

    @Test func powerOnValuesSCIEnabledAndLineLow() throws {
        let fixture = try Fixture()
        #expect(fixture.inw(0x600) == 0 && fixture.inw(0x602) == 0)
        #expect(fixture.inw(0x604) == 1)                  // SCI_EN: always in ACPI mode
        #expect(fixture.sci.history == [false])
        #expect(!fixture.device.powerButtonEnabled && !fixture.device.powerButtonPending)
    }

    @Test func powerButtonRaisesSCIOnlyWhenEnabled() throws {
        let fixture = try Fixture()
        fixture.device.pressPowerButton()
        #expect(fixture.inw(0x600) == 0x100)              // latched even while disabled
        #expect(!fixture.sci.isHigh && fixture.device.powerButtonPending)
        fixture.outw(0x602, 0x100)                        // PWRBTN_EN: the pending press now interrupts
        #expect(fixture.sci.isHigh && fixture.device.powerButtonEnabled)
        fixture.outw(0x602, 0)
        #expect(!fixture.sci.isHigh)
        #expect(fixture.sci.history == [false, true, false])
    }

    @Test func writeOneToClearAcknowledgesAndLowersSCI() throws {
        let fixture = try Fixture()
        fixture.outw(0x602, 0x100)
        fixture.device.pressPowerButton()
        #expect(fixture.sci.isHigh)
        fixture.outw(0x600, 0x0001)                       // writing 0 to bit 8 leaves it set
        #expect(fixture.inw(0x600) == 0x100 && fixture.sci.isHigh)
        fixture.outw(0x600, 0x0100)
        #expect(fixture.inw(0x600) == 0 && !fixture.sci.isHigh && !fixture.device.powerButtonPending)
        #expect(fixture.sci.history == [false, true, false])
        #expect(fixture.events.events.isEmpty)
    }

    @Test func byteAccessesHitTheRightHalf() throws {
        let fixture = try Fixture()
        fixture.bus.write(address: 0x603, size: 1, value: 0x01)   // high byte of PM1_EN: PWRBTN_EN
        #expect(fixture.inw(0x602) == 0x100)
        fixture.device.pressPowerButton()
        #expect(fixture.bus.read(address: 0x601, size: 1) == 0x01)
        fixture.bus.write(address: 0x600, size: 1, value: 0xFF)   // low byte: bit 8 untouched
        #expect(fixture.sci.isHigh)
        fixture.bus.write(address: 0x601, size: 1, value: 0x01)
        #expect(!fixture.sci.isHigh)
        // A 32-bit access across PM1_STS and PM1_EN reads both.
        fixture.device.pressPowerButton()
        #expect(fixture.bus.read(address: 0x600, size: 4) == 0x0100_0100)
    }

    @Test func reservedEnableBitsDoNotStick() throws {
        let fixture = try Fixture()
        fixture.outw(0x602, 0xFFFF)
        #expect(fixture.inw(0x602) == 0x0721)
    }

    @Test func sleepTypeFiveWithSleepEnablePowersOff() throws {
        let fixture = try Fixture()
        fixture.outw(0x604, 5 << 10 | 1)                  // SLP_TYP alone does nothing
        #expect(fixture.events.events.isEmpty)
        #expect(fixture.inw(0x604) == 5 << 10 | 1)
        fixture.outw(0x604, 1 << 13 | 5 << 10 | 1)        // what Linux's acpi_hw_legacy_sleep writes for S5
        #expect(fixture.events.events == [.powerOff])
        #expect(fixture.inw(0x604).map { $0 & (1 << 13) } == 0)   // SLP_EN is write-only
    }

    @Test(arguments: [0, 1, 2, 3, 4, 6, 7] as [UInt64])
    func otherSleepTypesWakeImmediatelyWithoutEvents(sleepType: UInt64) throws {
        let fixture = try Fixture()
        fixture.outw(0x602, 0x100)
        fixture.outw(0x604, 1 << 13 | sleepType << 10 | 1)
        #expect(fixture.events.events.isEmpty)
        #expect(fixture.inw(0x600) == 0x8000)             // WAK_STS: the guest's wait loop ends
        #expect(!fixture.sci.isHigh)                      // WAK_STS has no enable bit: no SCI
        fixture.outw(0x600, 0x8000)
        #expect(fixture.inw(0x600) == 0)
    }

    @Test func sciEnableCannotBeCleared() throws {
        let fixture = try Fixture()
        fixture.outw(0x604, 0)
        #expect(fixture.inw(0x604) == 1)
    }

    @Test func pmTimerCountsAt3579545HzAndWraps() throws {
        let fixture = try Fixture()
        #expect(fixture.bus.read(address: 0x608, size: 4) == 0)
        fixture.clock.advance(.seconds(1))
        #expect(fixture.bus.read(address: 0x608, size: 4) == 3_579_545)
        fixture.clock.advance(.milliseconds(1))
        #expect(fixture.bus.read(address: 0x608, size: 4) == 3_579_545 + 3_579)
        fixture.clock.advance(.seconds(1200))             // 2^32 ticks is about 1199.86 s
        let expected = (1201 * 3_579_545 + 3_579) % (1 << 32) as UInt64
        #expect(fixture.bus.read(address: 0x608, size: 4) == expected)
        fixture.bus.write(address: 0x608, size: 4, value: 0)   // read-only
        #expect(fixture.bus.read(address: 0x608, size: 4) == expected)
        fixture.clock.set(.seconds(50))                   // a clock running backwards holds the timer
        #expect(fixture.bus.read(address: 0x608, size: 4) == 0)
    }

    @Test func reservedBytesReadZero() throws {
        let fixture = try Fixture()
        #expect(fixture.inw(0x606) == 0 && fixture.bus.read(address: 0x60C, size: 4) == 0)
        fixture.outw(0x606, 0xFFFF)
        #expect(fixture.inw(0x606) == 0 && fixture.events.events.isEmpty)
    }

    @Test func resetClearsStatusAndEnables() throws {
        let fixture = try Fixture()
        fixture.outw(0x602, 0x100)
        fixture.device.pressPowerButton()
        fixture.outw(0x604, 3 << 10 | 1)
        fixture.device.reset()
        #expect(fixture.inw(0x600) == 0 && fixture.inw(0x602) == 0 && fixture.inw(0x604) == 1)
        #expect(!fixture.sci.isHigh)
    }

    @Test func stateRoundTripsThroughJSONAndTheTimerContinues() throws {
        let fixture = try Fixture()
        fixture.outw(0x602, 0x100)
        fixture.outw(0x604, 2 << 10 | 1)
        fixture.device.pressPowerButton()
        fixture.clock.advance(.seconds(2))
        let state = fixture.device.state
        #expect(state == ACPIPMState(status: 0x100, enable: 0x100, control: 2 << 10 | 1, timer: 2 * 3_579_545))
        let decoded = try JSONDecoder().decode(ACPIPMState.self, from: try JSONEncoder().encode(state))
        let restored = try Fixture(restoring: decoded)
        #expect(restored.sci.history == [true])           // the pending, enabled press is re-asserted
        #expect(restored.device.state == state)
        restored.clock.advance(.seconds(1))
        #expect(restored.bus.read(address: 0x608, size: 4) == 3 * 3_579_545)
    }

    @Test(arguments: [
        ACPIPMState(status: 0x0001),                      // TMR_STS is never set by this device
        ACPIPMState(enable: 0x8000),
        ACPIPMState(control: 0),                          // SCI_EN clear
        ACPIPMState(control: 1 << 13 | 1),                // SLP_EN is write-only
        ACPIPMState(control: 0x4001),
    ])
    func hostileStatesAreRejected(state: ACPIPMState) {
        #expect(throws: DeviceStateError.self) {
            _ = try ACPIPM(restoring: state, events: RecordingEventSink(), sci: RecordingInterruptLine())
        }
    }

    @Test func hostileStateErrorNamesTheField() {
        do {
            _ = try ACPIPM(restoring: ACPIPMState(enable: 0x8000), events: RecordingEventSink(), sci: RecordingInterruptLine())
            Issue.record("restore accepted a reserved enable bit")
        } catch {
            #expect(error.field == "enable" && error.description.hasPrefix("ACPI PM state: enable 0x8000"))
        }
    }
}
