import Devices
import Foundation
import GuestMemory
import Synchronization
@testable import Virtio

/// Records what a device asks of its transport.
final class RecordingInterrupt: VirtioInterrupt {
    private struct Calls {
        var queues: [Int] = []
        var configChanges = 0
        var needsReset = 0
    }

    private let calls = Mutex(Calls())

    func signalQueue(_ index: Int) { calls.withLock { $0.queues.append(index) } }
    func signalConfigChange() { calls.withLock { $0.configChanges += 1 } }
    func signalNeedsReset() { calls.withLock { $0.needsReset += 1 } }

    var signalledQueues: [Int] { calls.withLock { $0.queues } }
    var needsResetCount: Int { calls.withLock { $0.needsReset } }
}

final class RecordingOutput: SerialOutput {
    private let bytes = Mutex<[UInt8]>([])

    func emit(_ byte: UInt8) { bytes.withLock { $0.append(byte) } }

    var emitted: [UInt8] { bytes.withLock { $0 } }
}

/// A guest with `queueCount` driver queues laid out as a Linux driver would, plus the activation
/// that hands them to a device. 2 MiB of RAM in two regions, so buffers may cross a region edge.
/// Queue i's rings live at 0x1000 * (i + 1); data buffers belong above 0x10000.
final class DeviceHarness {
    let memory: GuestMemory
    let drivers: [MockDriverQueue]
    let interrupt = RecordingInterrupt()

    init(queueCount: Int, queueSize: UInt16 = 16) throws {
        let memory = try GuestMemory(ranges: [(GuestAddress(0), 0x100000), (GuestAddress(0x100000), 0x100000)])
        self.memory = memory
        drivers = try (0 ..< queueCount).map { try MockDriverQueue(memory: memory, size: queueSize, base: 0x1000 * UInt64($0 + 1)) }
    }

    /// The same guest after a snapshot restore: a copy of its memory, its drivers carrying on in
    /// the copy, and a fresh interrupt recorder.
    init(copying other: DeviceHarness) throws {
        memory = try copyOf(other.memory)
        drivers = other.drivers.map { [memory] in MockDriverQueue(continuing: $0, in: memory) }
    }

    /// Restores `state` into `device` with this guest's memory and interrupt recorder.
    func restore(_ device: some VirtioDevice, from state: VirtioDeviceState) throws(VirtioDeviceError) {
        try device.restoreState(state, memory: memory, interrupt: interrupt)
    }

    /// Kicks every queue once, as the VMM does after a restore.
    func kickAll(_ device: some VirtioDevice) {
        for index in device.queueMaxSizes.indices { device.queueNotified(index) }
    }

    /// Activates `device` with every queue enabled except those in `missing`.
    func activate(_ device: some VirtioDevice, features: UInt64? = nil, eventIdx: Bool = false, missing: Set<Int> = []) throws {
        let queues = try drivers.enumerated().map { index, driver in
            missing.contains(index) ? nil : try driver.makeDeviceQueue(eventIdx: eventIdx)
        }
        try device.activate(VirtioActivation(memory: memory, queues: queues,
                                             negotiatedFeatures: features ?? device.deviceFeatures, interrupt: interrupt))
    }

    /// Publishes a chain on queue `queue` and tells the device, as the driver's notify write does.
    @discardableResult
    func submit(_ buffers: [MockDriverQueue.Buffer], queue: Int, to device: some VirtioDevice, notify: Bool = true) throws -> UInt16 {
        let head = try drivers[queue].addChain(buffers)
        try drivers[queue].publish(head)
        if notify { device.queueNotified(queue) }
        return head
    }
}

/// A unique path under the temporary directory, removed by the caller.
func temporaryPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("vireo-\(name)-\(UUID().uuidString)").path
}

/// A repeating, position-dependent pattern, so a misplaced sector shows up as a mismatch.
func pattern(count: Int, seed: UInt8) -> [UInt8] {
    (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed) &+ $0 >> 9) }
}
