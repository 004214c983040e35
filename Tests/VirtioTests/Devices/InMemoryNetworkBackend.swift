import Synchronization
@testable import Virtio

/// A NetworkBackend made of two frame lists: what the guest sent, and what the "wire" will deliver.
final class InMemoryNetworkBackend: NetworkBackend {
    private struct State {
        var sent: [[UInt8]] = []
        var incoming: [[UInt8]] = []
        var accepted: [NetworkOffloads] = []
        var failSends = false
        var receiveCalls = 0
    }

    let offloads: NetworkOffloads
    private let state = Mutex(State())

    init(offloads: NetworkOffloads = []) { self.offloads = offloads }

    func send(_ frame: [UInt8]) throws {
        try state.withLock { state in
            if state.failSends { throw BackendDown() }
            state.sent.append(frame)
        }
    }

    func receive(maxLength: Int) throws -> [UInt8]? {
        state.withLock { state in
            state.receiveCalls += 1
            guard !state.incoming.isEmpty else { return nil }
            return Array(state.incoming.removeFirst().prefix(maxLength))
        }
    }

    func setOffloads(_ accepted: NetworkOffloads) throws { state.withLock { $0.accepted.append(accepted) } }

    func deliver(_ frame: [UInt8]) { state.withLock { $0.incoming.append(frame) } }
    func setFailingSends(_ failing: Bool) { state.withLock { $0.failSends = failing } }
    var sent: [[UInt8]] { state.withLock { $0.sent } }
    var pendingIncoming: Int { state.withLock { $0.incoming.count } }
    var acceptedOffloads: [NetworkOffloads] { state.withLock { $0.accepted } }

    struct BackendDown: Error {}
}

/// A frame as the backend hands it over: a virtio_net_hdr_v1 (flags, gso_type, then zeroes,
/// num_buffers deliberately garbage) followed by `payload`.
func netFrame(_ payload: [UInt8], flags: UInt8 = 0) -> [UInt8] {
    [flags, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xAB, 0xCD] + payload
}
