import Devices
import Synchronization

/// Records every level the device drives, so tests can see edges as well as the final level.
final class RecordingInterruptLine: InterruptLine {
    private let levels = Mutex<[Bool]>([])

    func setLevel(_ high: Bool) { levels.withLock { $0.append(high) } }

    var history: [Bool] { levels.withLock { $0 } }
    var isHigh: Bool { history.last ?? false }
}

final class RecordingSerialOutput: SerialOutput {
    private let bytes = Mutex<[UInt8]>([])

    func emit(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }

    var emitted: [UInt8] { bytes.withLock { $0 } }
}

final class RecordingEventSink: MachineEventSink {
    private let recorded = Mutex<[MachineEvent]>([])

    func machineEvent(_ event: MachineEvent) { recorded.withLock { $0.append(event) } }

    var events: [MachineEvent] { recorded.withLock { $0 } }
}

/// A settable clock for the RTC.
final class FakeClock: Sendable {
    private let current: Mutex<Duration>

    init(_ start: Duration) { current = Mutex(start) }

    func set(_ time: Duration) { current.withLock { $0 = time } }
    func advance(_ by: Duration) { current.withLock { $0 += by } }

    var clock: CMOSRTC.Clock { { self.current.withLock { $0 } } }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
