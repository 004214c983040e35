import Foundation

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
final class EventBus: @unchecked Sendable {
    private let lock = NSLock()
    private var subscribers: [Int: @Sendable (LifecycleEvent) -> Void] = [:]
    private var nextID = 0
    private var sequence: UInt64 = 0

    func subscribe(_ handler: @escaping @Sendable (LifecycleEvent) -> Void) -> Int {
        lock.lock(); defer { lock.unlock() }
        nextID += 1
        subscribers[nextID] = handler
        return nextID
    }

    func unsubscribe(_ id: Int) {
        lock.lock(); defer { lock.unlock() }
        subscribers[id] = nil
    }

    func publish(_ kind: LifecycleEvent.Kind, name: String, reason: VMStateReason? = nil) {
        lock.lock()
        sequence += 1
        let event = LifecycleEvent(kind: kind, name: name, reason: reason?.rawValue,
                                   time: ISO8601DateFormatter().string(from: Date()), sequence: sequence)
        let handlers = Array(subscribers.values)
        lock.unlock()
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
