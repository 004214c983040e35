import Foundation
import Synchronization

/// A lifecycle event as the daemon streams it (GET /v1/events, Server-Sent Events).
public struct LifecycleEvent: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case defined, undefined, started, suspended, resumed, stopped, rebooted
    }

    public var kind: Kind
    public var name: String
    /// The state reason: booted, restored (started from a save), user, shutdown, destroyed,
    /// crashed, failed, saved (stopped by a save), unknown.
    public var reason: String?
    /// RFC 3339, UTC.
    public var time: String
    /// Increases by one per event, so a client can see a gap.
    public var sequence: UInt64

    enum CodingKeys: String, CodingKey {
        case kind = "event", name, reason, time, sequence
    }
}

/// Fan-out of lifecycle events to every connected stream. Subscribers' callbacks must not block:
/// they run on the thread that published the event.
final class EventBus: Sendable {
    private struct State {
        var subscribers: [Int: @Sendable (LifecycleEvent) -> Void] = [:]
        var nextID = 0
        var sequence: UInt64 = 0
    }

    private let state = Mutex(State())

    func subscribe(_ handler: @escaping @Sendable (LifecycleEvent) -> Void) -> Int {
        state.withLock { state in
            state.nextID += 1
            state.subscribers[state.nextID] = handler
            return state.nextID
        }
    }

    func unsubscribe(_ id: Int) {
        state.withLock { $0.subscribers[id] = nil }
    }

    func publish(_ kind: LifecycleEvent.Kind, name: String, reason: VMStateReason? = nil) {
        // Numbered and stamped under the lock, so sequence and time agree; handlers run after it.
        let (event, handlers) = state.withLock { state in
            state.sequence += 1
            let event = LifecycleEvent(kind: kind, name: name, reason: reason?.rawValue,
                                       time: ISO8601DateFormatter().string(from: Date()), sequence: state.sequence)
            return (event, Array(state.subscribers.values))
        }
        for handler in handlers { handler(event) }
    }

    /// One event in SSE framing: `event:` line, JSON `data:` line, blank line.
    static func serverSentEvent(_ event: LifecycleEvent) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = (try? encoder.encode(event)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return Array("event: \(event.kind.rawValue)\ndata: \(json)\n\n".utf8)
    }
}
