import Foundation
import KVM
import Testing
@testable import VMM

/// The device I/O thread: runs handlers for readable fds, and drops an fd in error instead of
/// spinning on it.
@Suite struct IOThreadTests {
    @Test func runsTheHandlerOfAReadableSource() throws {
        let thread = try IOThread(name: "test-io")
        let event = try EventFD()
        let calls = Guarded(0)
        thread.add(fd: event.raw) {
            if event.consume() != nil { calls.update { $0 += 1 } }
        }
        #expect(thread.start())
        event.signal()
        #expect(calls.wait(until: { $0 == 1 }, timeoutSeconds: 5, then: { _ in true }) == true)
        event.signal()
        #expect(calls.wait(until: { $0 == 2 }, timeoutSeconds: 5, then: { _ in true }) == true)
        thread.stop()
    }

    @Test func aHungUpSourceIsDroppedNotSpunOn() throws {
        var pair: [Int32] = [0, 0]
        #expect(pipe(&pair) == 0)
        defer { close(pair[0]) }
        let thread = try IOThread(name: "test-io")
        let calls = Guarded(0)
        let failed = Guarded<[Int32]>([])
        thread.onSourceFailed = { fd in failed.update { $0.append(fd) } }
        thread.add(fd: pair[0]) { calls.update { $0 += 1 } }
        #expect(thread.start())
        close(pair[1])  // the read end now reports POLLHUP forever
        #expect(failed.wait(until: { $0 == [pair[0]] }, timeoutSeconds: 5, then: { _ in true }) == true)
        usleep(200_000)
        #expect(calls.read { $0 } == 1)
        thread.stop()
    }
}
