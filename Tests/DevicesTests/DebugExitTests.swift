import Testing
@testable import Devices

@Suite struct DebugExitTests {
    @Test func writesBecomeDebugExitEventsOfTheAccessWidth() throws {
        let events = RecordingEventSink()
        let bus = Bus()
        try bus.insert(DebugExit(events: events), base: DebugExit.defaultPort, length: DebugExit.portCount)
        bus.write(address: 0xF4, size: 1, value: 0x1_31)  // outb: only the low byte is written
        bus.write(address: 0xF4, size: 2, value: 0xBEEF)
        bus.write(address: 0xF4, size: 4, value: 0x1234_5678)
        bus.write(address: 0xF7, size: 1, value: 0)
        #expect(events.events == [
            .debugExit(value: 0x31), .debugExit(value: 0xBEEF), .debugExit(value: 0x1234_5678), .debugExit(value: 0),
        ])
        #expect(bus.read(address: 0xF4, size: 4) == 0)
        #expect(events.events.count == 4)  // reads raise nothing
    }

    @Test func stateRoundTrips() {
        let device = DebugExit(restoring: DebugExitState(), events: RecordingEventSink())
        #expect(device.state == DebugExitState())
    }
}
