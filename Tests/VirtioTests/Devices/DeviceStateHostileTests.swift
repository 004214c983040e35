import Foundation
import GuestMemory
import Storage
import Testing
import TestSupport
@testable import Virtio

/// A snapshot file is untrusted: every captured field a device restores is checked, a refused
/// state leaves the device as it was, and no mutation of a real state can crash the VMM.
@Suite struct DeviceStateHostileTests {
    /// A console with both queues live (EVENT_IDX), some traffic in each direction and input waiting.
    func capturedConsole() throws -> (VirtioDeviceState, DeviceHarness) {
        let console = VirtioConsole(output: RecordingOutput())
        let harness = try DeviceHarness(queueCount: 2)
        try harness.activate(console, eventIdx: true)
        _ = console.enqueueInput(Array("input".utf8))
        try harness.submit([.writable(0x40000, 2)], queue: VirtioConsole.receiveQueue, to: console)
        try harness.submit([.readable(0x20000, 4)], queue: VirtioConsole.transmitQueue, to: console)
        try harness.submit([.readable(0x20000, 4)], queue: VirtioConsole.transmitQueue, to: console, notify: false)
        return (try #require(console.captureState()), harness)
    }

    /// Restores a mutated console state into a fresh console; nil when accepted. A refused device
    /// must capture nothing and serve nothing.
    func refusal(_ mutate: (inout VirtioDeviceState) -> Void) throws -> VirtioDeviceError? {
        var (state, harness) = try capturedConsole()
        mutate(&state)
        let console = VirtioConsole(output: RecordingOutput())
        do {
            try harness.restore(console, from: state)
            return nil
        } catch {
            #expect(console.captureState() == nil)
            harness.kickAll(console)
            #expect(try harness.drivers[1].usedIdx() == 1)
            return error
        }
    }

    func field(_ error: VirtioDeviceError?) -> String? {
        guard case let .state(stateError)? = error else { return nil }
        #expect(stateError.device == "virtio-console")
        return stateError.field
    }

    @Test func hostileStatesAreRefusedWithTheFieldThatIsWrong() throws {
        #expect(try refusal { _ in } == nil)
        #expect(try field(refusal { $0.queues.append(nil) }) == "queues")
        #expect(try field(refusal { $0.queues.removeLast() }) == "queues")
        #expect(try field(refusal { $0.negotiatedFeatures |= 1 << 40 }) == "negotiated features")
        #expect(try field(refusal { $0.queues[0]?.config.size = 256 }) == "queue 0 size")          // maximum 128
        #expect(try field(refusal { $0.queues[0]?.config.size = 12 }) == "queue 0")               // not a power of two
        #expect(try field(refusal { $0.queues[1]?.lastAvailIdx &+= 17 }) == "queue 1")            // 17 in flight, size 16
        #expect(try field(refusal { $0.queues[1]?.signalledUsedIdx = 0x8000 }) == "queue 1")
        #expect(try field(refusal { $0.queues[0]?.config.usedRing = GuestAddress(0x1FFFFC) }) == "queue 0")
        #expect(try field(refusal { $0.queues[0]?.config.availRing = GuestAddress(0x1001) }) == "queue 0")
        #expect(try field(refusal { $0.queues[0]?.config.ready = false }) == "queue 0")
        #expect(try field(refusal { $0.queues[1]?.eventIdx = false }) == "queue 1 event index")
        #expect(try field(refusal { $0.pendingInput = [UInt8](repeating: 0x41, count: VirtioConsole.inputCapacity + 1) }) == "pending input")
        #expect(try refusal { $0.pendingInput = [UInt8](repeating: 0x41, count: VirtioConsole.inputCapacity) } == nil)
        for faulted in [[2], [-1], [Int.max], [0, 0]] {
            #expect(try field(refusal { $0.faultedQueues = faulted }) == "faulted queues")
        }
        #expect(try refusal { $0.faultedQueues = [1] } == nil)
        #expect(try refusal { $0.queues[1] = nil } == .missingQueue(1))
        #expect(try field(refusal { $0.queues[1] = nil; $0.faultedQueues = [1] }) == "faulted queues")
    }

    @Test func onlyTheConsoleCarriesPendingInput() throws {
        let harness = try DeviceHarness(queueCount: 1)
        let rng = VirtioEntropyDevice()
        try harness.activate(rng, eventIdx: true)
        var state = try #require(rng.captureState())
        state.pendingInput = [1]
        let fresh = VirtioEntropyDevice()
        #expect(throws: VirtioDeviceError.state(.init(device: "virtio-rng", field: "pending input",
                                                       problem: "has 1 bytes, more than the 0 this device buffers"))) {
            try harness.restore(fresh, from: state)
        }
        #expect(fresh.captureState() == nil)
    }

    /// A refused restore of a running device leaves it running as it was.
    @Test func aRefusedRestoreLeavesTheDeviceAsItWas() throws {
        let (state, harness) = try capturedConsole()
        let console = VirtioConsole(output: RecordingOutput())
        try harness.restore(console, from: state)
        var bad = state
        bad.queues[0]?.config.size = 4096
        #expect(throws: VirtioDeviceError.self) { try harness.restore(console, from: bad) }
        #expect(console.captureState() == state)
    }

    /// Seeded mutations of the numbers in a real captured state's JSON: decoding and restoring
    /// either fail with an error or yield a device that serves its queues and captures exactly
    /// what it was given. Nothing may crash.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func mutatedStatesNeverCrash(seed: UInt64) throws {
        let (state, harness) = try capturedConsole()
        let json = String(decoding: try JSONEncoder().encode(state), as: UTF8.self)
        var rng = SplitMix64(state: seed)
        var restored = 0, refused = 0
        for _ in 0 ..< 150 {
            let mutated = Self.mutateNumbers(json, count: 1 + Int(rng.next() % 3), &rng)
            guard let candidate = try? JSONDecoder().decode(VirtioDeviceState.self, from: Data(mutated.utf8)) else {
                refused += 1
                continue
            }
            let guest = try DeviceHarness(copying: harness)
            let console = VirtioConsole(output: RecordingOutput())
            do {
                try guest.restore(console, from: candidate)
            } catch {
                refused += 1
                continue
            }
            restored += 1
            var expected = candidate
            expected.faultedQueues.sort()
            #expect(console.captureState() == expected)
            guest.kickAll(console)
            _ = console.enqueueInput([0x42])
        }
        // Both outcomes must occur, or the mutations are not reaching the checks.
        #expect(restored > 10)
        #expect(refused > 10)
    }

    /// Replaces `count` randomly chosen numbers in `json` with edge values or near neighbours.
    static func mutateNumbers(_ json: String, count: Int, _ rng: inout SplitMix64) -> String {
        let characters = Array(json)
        var numbers: [Range<Int>] = []
        var index = 0
        while index < characters.count {
            guard characters[index].isASCII, characters[index].isNumber || characters[index] == "-" else { index += 1; continue }
            let start = index
            index += 1
            while index < characters.count, characters[index].isASCII, characters[index].isNumber { index += 1 }
            numbers.append(start ..< index)
        }
        var replacements: [Int: String] = [:]
        for _ in 0 ..< count where !numbers.isEmpty {
            let chosen = Int(rng.next() % UInt64(numbers.count))
            let original = Int64(String(characters[numbers[chosen]])) ?? 0
            let edges = ["0", "-1", "1", "65535", "65536", "32768", "4096", "18446744073709551615", "18446744073709551616",
                         String(rng.next()), String(original &+ 1), String(original &- 1), String(original &+ 16), String(original &* 2)]
            replacements[chosen] = edges[Int(rng.next() % UInt64(edges.count))]
        }
        var result = ""
        var position = 0
        for (number, range) in numbers.enumerated() {
            result += String(characters[position ..< range.lowerBound])
            result += replacements[number] ?? String(characters[range])
            position = range.upperBound
        }
        return result + String(characters[position...])
    }
}
