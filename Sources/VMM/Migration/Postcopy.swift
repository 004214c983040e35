import Foundation
import GuestMemory
import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Per RAM region, one bit per 4 KiB page: the pages post-copy still has to bring over.
struct PageBitmap: Equatable, Sendable {
    var words: [[UInt64]]

    var count: Int { words.reduce(0) { $0 + $1.reduce(0) { $0 + $1.nonzeroBitCount } } }

    /// The wire form: per region, a word count (8 bytes) and the words, little-endian.
    var encoded: [UInt8] {
        var bytes: [UInt8] = []
        for region in words {
            withUnsafeBytes(of: UInt64(region.count).littleEndian) { bytes += $0 }
            for word in region { withUnsafeBytes(of: word.littleEndian) { bytes += $0 } }
        }
        return bytes
    }

    /// Reads the wire form for `memory`'s layout; anything else is a corrupt stream.
    init(decoding payload: UnsafeRawBufferPointer, for memory: GuestMemory) throws {
        var offset = 0
        var words: [[UInt64]] = []
        for region in memory.regions {
            let expected = Int((region.size / 4096 + 63) / 64)
            guard offset + 8 <= payload.count, MigrationChannel.get(payload, offset) as UInt64 == UInt64(expected),
                  offset + 8 + expected * 8 <= payload.count else {
                throw MigrationError.corrupt("the post-copy page bitmap does not fit the RAM layout")
            }
            offset += 8
            words.append((0..<expected).map { MigrationChannel.get(payload, offset + $0 * 8) as UInt64 })
            offset += expected * 8
        }
        guard offset == payload.count else { throw MigrationError.corrupt("the post-copy page bitmap has trailing bytes") }
        self.words = words
    }

    init(words: [[UInt64]]) { self.words = words }

    func contains(region: Int, page: Int) -> Bool { words[region][page / 64] & (1 << UInt64(page % 64)) != 0 }
    mutating func remove(region: Int, page: Int) { words[region][page / 64] &= ~(1 << UInt64(page % 64)) }
}

/// Statistics of a post-copy migration, as the destination saw it.
public struct PostcopyStatistics: Equatable, Sendable {
    /// Pages that had to come over after the guest started here.
    public var pagesExpected = 0
    public var pagesReceived = 0
    /// Faults that asked the source for a page, and how long the guest waited for them.
    public var demandFaults = 0
    public var faultLatencyTotalMicroseconds: Double = 0
    public var faultLatencyMaxMicroseconds: Double = 0
    /// From the guest starting here to the last page.
    public var milliseconds: Double = 0

    public var averageFaultLatencyMicroseconds: Double { demandFaults == 0 ? 0 : faultLatencyTotalMicroseconds / Double(demandFaults) }
}

/// The destination's side of post-copy: the pages the source has not sent are made missing
/// (userfaultfd), the guest starts, and each page it touches is asked of the source at once while
/// the source pushes the rest in the background. Pages that were zero on the source and never
/// sent are filled with zeros here without asking.
final class PostcopyPager: @unchecked Sendable {
    private let memory: GuestMemory
    private let channel: MigrationChannel
    private let faults: UserFaultDescriptor
    /// Pages still to come. A page is taken out only after it has been placed, so the fault
    /// thread never fills a page with zeros that the source still has to send.
    private let pending: Guarded<PageBitmap>
    private let requested = Guarded<[UInt64: UInt64]>([:])
    private let statistics = Guarded(PostcopyStatistics())
    private let state = Guarded((running: true, failed: false, done: false))
    private let started = DispatchTime.now().uptimeNanoseconds
    private var threads: [pthread_t] = []
    private let log: @Sendable (String) -> Void
    /// Called once when the source goes away before every page arrived: the VM cannot go on.
    var onFailure: (@Sendable (String) -> Void)?

    init(memory: GuestMemory, channel: MigrationChannel, pending: PageBitmap, log: @escaping @Sendable (String) -> Void) throws {
        self.memory = memory
        self.channel = channel
        self.pending = Guarded(pending)
        self.log = log
        statistics.update { $0.pagesExpected = pending.count }
        faults = try UserFaultDescriptor()
        for (index, region) in memory.regions.enumerated() {
            let base = UnsafeMutableRawPointer(bitPattern: region.hostAddress)!
            _ = madvise(base, Int(region.size), 15 /* MADV_NOHUGEPAGE */)
            // What the source sent before the switch but the guest wrote again since is dropped:
            // the page is missing again and comes over anew.
            for run in Self.runs(pending.words[index]) {
                guard madvise(base + run.lowerBound * 4096, run.count * 4096, MADV_DONTNEED) == 0 else {
                    throw MigrationError.io("madvise(DONTNEED) on guest RAM", errno: errno)
                }
            }
            try faults.registerMissing(start: region.hostAddress, length: region.size)
        }
    }

    /// Runs of set bits, as page index ranges.
    static func runs(_ words: [UInt64]) -> [Range<Int>] {
        var result: [Range<Int>] = []
        var start = -1
        for page in 0..<(words.count * 64) {
            let set = words[page / 64] & (1 << UInt64(page % 64)) != 0
            if set && start < 0 { start = page }
            if !set && start >= 0 { result.append(start..<page); start = -1 }
        }
        if start >= 0 { result.append(start..<(words.count * 64)) }
        return result
    }

    func start() {
        if let thread = startThread(name: "vireo-uffd", { [self] in faultLoop() }) { threads.append(thread) }
        if let thread = startThread(name: "vireo-postcopy", { [self] in receiveLoop() }) { threads.append(thread) }
    }

    /// Waits until every page is here (or the pager failed); the statistics then.
    func waitUntilDone(timeoutSeconds: Double? = nil) -> PostcopyStatistics? {
        guard state.wait(until: { $0.done || $0.failed }, timeoutSeconds: timeoutSeconds, then: { $0.done }) == true else { return nil }
        return statistics.read { $0 }
    }

    /// Stops both threads (the machine has ended).
    func stop() {
        state.update { $0.running = false }
        channel.shutdown()
        for thread in threads { pthread_join(thread, nil) }
        threads = []
        channel.close()
    }

    private var isRunning: Bool { state.read { $0.running } }

    private func locate(hostAddress: UInt64) -> (region: Int, page: Int)? {
        for (index, region) in memory.regions.enumerated()
        where hostAddress >= UInt64(region.hostAddress) && hostAddress < UInt64(region.hostAddress) + region.size {
            return (index, Int((hostAddress - UInt64(region.hostAddress)) / 4096))
        }
        return nil
    }

    private func faultLoop() {
        while isRunning {
            guard faults.waitReadable(timeoutMilliseconds: 100) else { continue }
            while let event = try? faults.nextEvent() {
                guard case let .fault(address) = event, let (region, page) = locate(hostAddress: address) else { continue }
                let host = memory.regions[region].hostAddress + UInt(page * 4096)
                let failed = state.read { $0.failed }
                if !failed, pending.read({ $0.contains(region: region, page: page) }) {
                    let guestAddress = memory.regions[region].start.raw + UInt64(page) * 4096
                    requested.update { if $0[guestAddress] == nil { $0[guestAddress] = DispatchTime.now().uptimeNanoseconds } }
                    do {
                        try channel.send(.pageRequest, bytes: withUnsafeBytes(of: guestAddress.littleEndian, Array.init))
                    } catch {
                        fail("cannot ask the source for a page: \(error)")
                    }
                } else {
                    // Zero on the source and never sent, or already placed meanwhile (then this
                    // changes nothing and the waiting thread just retries). After a failure every
                    // fault is answered so the stopping VM's threads can leave.
                    _ = try? faults.zeroPage(at: host, length: 4096)
                    faults.wake(start: host, length: 4096)
                }
            }
        }
    }

    private func receiveLoop() {
        while isRunning {
            do {
                let (kind, payload) = try channel.receive(during: "during post-copy")
                switch kind {
                case .pages:
                    try place(payload)
                case .postcopyEnd:
                    let missing = pending.read { $0.count }
                    guard missing == 0 else { throw MigrationError.corrupt("the source ended post-copy with \(missing) pages not sent") }
                    // Every page the source had is here; the pages still missing were zero there and
                    // never sent: from now on they fault in as ordinary zero pages (the fault thread
                    // stops, and nothing may wait on this descriptor any more).
                    for region in memory.regions {
                        try faults.unregister(start: region.hostAddress, length: region.size)
                        faults.wake(start: region.hostAddress, length: region.size)
                    }
                    try? channel.send(.postcopyEnd)
                    let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
                    let stats = statistics.update { $0.milliseconds = elapsed; return $0 }
                    log(String(format: "post-copy complete: %d pages in %.0f ms after the switch-over; %d faults fetched on demand (latency avg %.0f µs, max %.0f µs)",
                               stats.pagesReceived, elapsed, stats.demandFaults, stats.averageFaultLatencyMicroseconds,
                               stats.faultLatencyMaxMicroseconds))
                    state.update { $0.done = true; $0.running = false }
                    return
                default:
                    throw MigrationError.corrupt("unexpected \(kind) frame during post-copy")
                }
            } catch {
                if isRunning { fail("\(error)") }
                return
            }
        }
    }

    private func place(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.count > 8, (payload.count - 8) % 4096 == 0 else { throw MigrationError.corrupt("a pages frame of \(payload.count) bytes") }
        let address: UInt64 = MigrationChannel.get(payload, 0)
        let count = (payload.count - 8) / 4096
        guard address % 4096 == 0, memory.isValid(GuestAddress(address), length: UInt64(count) * 4096) else {
            throw MigrationError.corrupt("pages at \(address) lie outside guest RAM")
        }
        for index in 0..<count {
            let page = address + UInt64(index) * 4096
            guard let regionIndex = memory.regions.firstIndex(where: { page >= $0.start.raw && page < $0.end }) else { continue }
            let region = memory.regions[regionIndex]
            let pageIndex = Int((page - region.start.raw) / 4096)
            guard pending.read({ $0.contains(region: regionIndex, page: pageIndex) }) else { continue }
            let host = region.hostAddress + UInt(pageIndex * 4096)
            try faults.copy(to: host, from: payload.baseAddress! + 8 + index * 4096, length: 4096)
            pending.update { $0.remove(region: regionIndex, page: pageIndex) }
            let asked = requested.update { $0.removeValue(forKey: page) }
            statistics.update { stats in
                stats.pagesReceived += 1
                if let asked {
                    let latency = Double(DispatchTime.now().uptimeNanoseconds - asked) / 1000
                    stats.demandFaults += 1
                    stats.faultLatencyTotalMicroseconds += latency
                    stats.faultLatencyMaxMicroseconds = max(stats.faultLatencyMaxMicroseconds, latency)
                }
            }
        }
    }

    private func fail(_ why: String) {
        let first = state.update { state -> Bool in
            defer { state.failed = true }
            return !state.failed
        }
        guard first else { return }
        let missing = pending.read { $0.count }
        let message = "post-copy failed with \(missing) pages still on the source: \(why). The guest cannot go on here (its memory is split between the two hosts; Vireo has no post-copy recovery yet): the VM stops."
        log(message)
        onFailure?(message)
    }
}

/// The source's side of post-copy, once the guest runs on the destination: pushes every page the
/// destination still lacks in address order, and answers its requests (the pages the guest is
/// waiting for) ahead of that. The guest here is stopped, so its RAM no longer changes.
final class PostcopyServer: @unchecked Sendable {
    private let channel: MigrationChannel
    private let memory: GuestMemory
    private var unsent: PageBitmap
    private let requests = Guarded((queue: [UInt64](), acknowledged: false, failure: String?.none, served: 0))
    private var buffer = [UInt8](repeating: 0, count: 8 + 16 * 4096)

    init(channel: MigrationChannel, memory: GuestMemory, pending: PageBitmap) {
        self.channel = channel
        self.memory = memory
        unsent = pending
    }

    var remainingPages: Int { unsent.count }
    /// Page bytes sent since the switch (asked-for pages sent twice count twice).
    private(set) var bytesSent: UInt64 = 0

    /// Answers one request at once (before the destination has said it runs).
    func serve(_ payload: UnsafeRawBufferPointer) throws {
        guard payload.count == 8 else { throw MigrationError.corrupt("a page request of \(payload.count) bytes") }
        try send(page: MigrationChannel.get(payload, 0) as UInt64, count: 1)
        requests.update { $0.served += 1 }
    }

    /// Sends everything, then waits for the destination to confirm it has it all.
    func run(progress: @escaping (UInt64, Int) -> Void) throws {
        let reader = startThread(name: "vireo-postcopy-requests") { [self] in
            while true {
                do {
                    let (kind, payload) = try channel.receive(during: "during post-copy")
                    if kind == .pageRequest, payload.count == 8 {
                        let address: UInt64 = MigrationChannel.get(payload, 0)
                        requests.update { $0.queue.append(address) }
                    } else if kind == .postcopyEnd {
                        requests.update { $0.acknowledged = true }
                        return
                    } else {
                        throw MigrationError.corrupt("unexpected \(kind) frame from the destination during post-copy")
                    }
                } catch {
                    requests.update { if $0.failure == nil { $0.failure = "\(error)" } }
                    return
                }
            }
        }
        defer { if let reader { pthread_join(reader, nil) } }
        var cursor = (region: 0, page: 0)
        var sentSinceProgress = 0
        while true {
            let (queue, failure, served) = requests.update { state -> ([UInt64], String?, Int) in
                defer { state.queue = [] }
                return (state.queue, state.failure, state.served)
            }
            if let failure { channel.shutdown(); throw MigrationError.busy(failure) }
            for address in queue {
                try send(page: address, count: 1)
                requests.update { $0.served += 1 }
            }
            guard let run = nextRun(from: &cursor) else { break }
            try send(page: run.address, count: run.count)
            sentSinceProgress += run.count
            if sentSinceProgress >= 256 {
                sentSinceProgress = 0
                progress(UInt64(unsent.count) * 4096, served + queue.count)
            }
        }
        try channel.send(.postcopyEnd)
        // The destination confirms once every page is in place.
        let acknowledged = requests.wait(until: { $0.acknowledged || $0.failure != nil }, timeoutSeconds: 120) { state -> Bool in
            // Pages asked for while the last ones were on their way: send them again, cheaply.
            state.acknowledged
        }
        progress(0, requests.read { $0.served })
        guard acknowledged == true else {
            channel.shutdown()
            throw MigrationError.busy(requests.read { $0.failure } ?? "the destination did not confirm the end of post-copy")
        }
    }

    /// The next run of up to 16 unsent pages from `cursor`, taken out of `unsent`.
    private func nextRun(from cursor: inout (region: Int, page: Int)) -> (address: UInt64, count: Int)? {
        while cursor.region < memory.regions.count {
            let region = memory.regions[cursor.region]
            let pages = Int(region.size / 4096)
            while cursor.page < pages {
                let word = unsent.words[cursor.region][cursor.page / 64]
                if word == 0 { cursor.page = (cursor.page / 64 + 1) * 64; continue }
                guard unsent.contains(region: cursor.region, page: cursor.page) else { cursor.page += 1; continue }
                let start = cursor.page
                var count = 0
                while cursor.page < pages, count < 16, unsent.contains(region: cursor.region, page: cursor.page) {
                    unsent.remove(region: cursor.region, page: cursor.page)
                    cursor.page += 1
                    count += 1
                }
                return (region.start.raw + UInt64(start) * 4096, count)
            }
            cursor = (cursor.region + 1, 0)
        }
        return nil
    }

    private func send(page address: UInt64, count: Int) throws {
        let length = count * 4096
        guard address % 4096 == 0, memory.isValid(GuestAddress(address), length: UInt64(length)) else {
            throw MigrationError.corrupt("the destination asked for a page outside guest RAM (\(address))")
        }
        MigrationChannel.put(address, at: 0, in: &buffer)
        try buffer.withUnsafeMutableBytes { raw in
            try memory.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[8..<(8 + length)]), from: GuestAddress(address))
            try channel.send(.pages, [UnsafeRawBufferPointer(rebasing: raw[0..<(8 + length)])])
        }
        bytesSent += UInt64(length)
        if count == 1, let region = memory.regions.firstIndex(where: { address >= $0.start.raw && address < $0.end }) {
            unsent.remove(region: region, page: Int((address - memory.regions[region].start.raw) / 4096))
        }
    }
}
