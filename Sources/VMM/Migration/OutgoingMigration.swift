import Foundation
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The source's side of a live migration (pre-copy), run on its own thread while the guest runs:
///
/// 1. connect, describe the machine, wait until the destination has allocated its RAM;
/// 2. turn on dirty-page logging (KVM's for the vCPUs, `GuestMemory`'s own for device writes) and
///    send all of RAM (zero pages skipped) while the guest runs;
/// 3. rounds: send what was dirtied meanwhile, until what is left would go across within the
///    downtime target at the bandwidth the last round measured (or the round limit is reached);
///    with auto-converge the vCPUs are throttled when the guest dirties faster than the link;
/// 4. stop-and-copy: park the vCPUs, stop the device threads, send the last dirty pages and the
///    device and vCPU state, tell the destination to run, and wait for it to say it does.
///
/// Before the destination says it runs the guest, any failure (connection lost, destination
/// refused or died, cancel) leaves the guest running here as it was. If the connection is lost
/// after everything was sent but before that answer, nobody here can know whether the destination
/// runs the guest: it stays paused here (QEMU does the same) and the error says so.
final class OutgoingMigration: @unchecked Sendable {
    let request: MigrationRequest
    let address: MigrationAddress
    let progress: Guarded<MigrationProgress>
    private let cancelled = Atomic<Bool>(false)
    /// Switch to post-copy at the next round boundary (`PUT /vm/migrate/postcopy`).
    private let postcopyRequested = Atomic<Bool>(false)
    private let channel = Guarded<MigrationChannel?>(nil)
    private let started = DispatchTime.now().uptimeNanoseconds

    init(request: MigrationRequest, address: MigrationAddress, ramBytes: UInt64) {
        self.request = request
        self.address = address
        progress = Guarded(MigrationProgress(phase: .setup, destination: request.destination, ramBytesTotal: ramBytes))
    }

    /// Asks for the switch to post-copy; false once past the point where it can happen.
    func requestPostcopy() -> Bool {
        guard progress.read({ $0.phase == .setup || $0.phase == .precopy }) else { return false }
        postcopyRequested.store(true, ordering: .releasing)
        return true
    }

    /// Cancels before the switch-over; false in post-copy, where the guest already runs on the
    /// destination and needs the pages still here.
    func cancel() -> Bool {
        guard progress.read({ $0.phase != .postcopy }) else { return false }
        cancelled.store(true, ordering: .releasing)
        channel.read { $0 }?.shutdown()
        return true
    }

    /// Cuts the connection as a network failure would (fault-injection tests).
    func breakConnection() { channel.read { $0 }?.shutdown() }

    private var elapsedMilliseconds: Double { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6 }

    private func checkCancelled() throws {
        if cancelled.load(ordering: .acquiring) { throw MigrationError.cancelled }
    }

    /// What the session must do once the migration is over.
    enum Ending {
        /// The destination runs the guest: this process stops.
        case handedOver
        /// The guest stays here (running or paused as before).
        case keptHere
        /// Unknown whether the destination runs it: the guest stays paused here.
        case heldPaused
    }

    /// Runs the whole migration; returns how it ended (the progress says why).
    func run(machine: Machine, recorded: LaunchSpec, session: VMSession) -> Ending {
        var logging = false
        var throttle: VCPUThrottle?
        let mirroredDisks = request.copyStorage ? machine.resources.disks : []
        do {
            let channel = try MigrationChannel.connect(to: address)
            self.channel.update { $0 = channel }
            defer { channel.close() }
            try checkCancelled()

            // 1. The machine, so the destination can refuse before any RAM moves.
            var hello = MigrationHello(machine: recorded, effectiveCmdline: machine.effectiveCmdline,
                                       regions: machine.memory.regions.map { [$0.start.raw, $0.size] })
            if request.copyStorage {
                let bootID = MirroredDisk.bootID
                hello.mirroredDisks = zip(machine.resources.devices.disks, mirroredDisks).map { options, disk in
                    let identity = MirroredDisk.identity(of: options.path) ?? (0, 0)
                    return MirroredDisk(size: disk.size, device: identity.device, inode: identity.inode, bootID: bootID)
                }
            }
            var helloBytes = MigrationChannel.streamMagic
            withUnsafeBytes(of: MigrationChannel.streamVersion.littleEndian) { helloBytes += $0 }
            helloBytes += try JSONEncoder().encode(hello)
            try channel.send(.hello, bytes: helloBytes)
            let (answer, _) = try channel.receive(during: "for the destination to accept the machine")
            guard answer == .ready else { throw MigrationError.corrupt("expected ready from the destination, got \(answer)") }
            channel.setTimeout(seconds: 120)

            // 2. Everything, while the guest runs: the disks first (with --copy-storage-all), then RAM.
            for disk in mirroredDisks { disk.startTracking() }
            logging = true
            let mirror = mirroredDisks.isEmpty ? nil : DiskMirrorSender(channel: channel, disks: mirroredDisks)
            progress.update { $0.phase = .precopy }
            // Round one is the disks and all of RAM: its bandwidth counts both.
            var roundStarted = DispatchTime.now().uptimeNanoseconds
            if let mirror {
                try mirror.sendAll(cancelled: { [self] in self.cancelled.load(ordering: .acquiring) })
                progress.update { $0.diskBytesTransferred = mirror.bytesSent }
            }
            let memory = machine.memory
            memory.startWriteTracking()
            try machine.startDirtyPageLogging()
            _ = try machine.takeDirtyPages()
            let sender = PageSender(channel: channel, memory: memory, bandwidthLimit: request.bandwidthMiBps * 1_048_576,
                                    cancelled: { [self] in self.cancelled.load(ordering: .acquiring) }) { [progress] bytes in
                progress.update { $0.ramBytesTransferred = bytes }
            }
            let sentSoFar = { sender.bytesSent + (mirror?.bytesSent ?? 0) }
            try sender.sendAll()
            try mirror?.sendDirty()
            try channel.send(.roundEnd, bytes: [1, 0, 0, 0])
            var rounds = 1
            var roundBytes = sentSoFar()
            var roundSeconds = max(1e-6, Double(DispatchTime.now().uptimeNanoseconds - roundStarted) / 1e9)
            var busyRounds = 0

            // 3. Rounds of dirty pages until the rest fits the downtime target.
            while true {
                try checkCancelled()
                let dirtyStarted = DispatchTime.now().uptimeNanoseconds
                let dirty = try Self.merged(machine.takeDirtyPages().bitmaps, memory.takeWrittenPages())
                let dirtyCount = dirty.reduce(0) { $0 + $1.reduce(0) { $0 + $1.nonzeroBitCount } }
                let diskRemaining = mirror?.pendingBytes ?? 0
                let remaining = UInt64(dirtyCount) * 4096 + diskRemaining
                let bandwidth = Double(max(roundBytes, 4096)) / roundSeconds
                // What the switch-over costs besides the last pages (capturing and encoding the
                // state, the destination building the machine): ~10-20 ms measured here.
                let expected = Double(remaining) / bandwidth * 1000 + Self.switchoverAllowanceMilliseconds
                let dirtyRate = Double(dirtyCount) / roundSeconds
                progress.update {
                    $0.rounds = rounds; $0.ramBytesRemaining = remaining - diskRemaining; $0.bandwidthBytesPerSecond = bandwidth
                    $0.diskBytesRemaining = diskRemaining; $0.diskBytesTransferred = mirror?.bytesSent ?? 0
                    $0.expectedDowntimeMilliseconds = expected; $0.dirtyPagesPerSecond = dirtyRate
                    $0.elapsedMilliseconds = elapsedMilliseconds
                }
                if expected > request.maxDowntimeMilliseconds,
                   postcopyRequested.load(ordering: .acquiring) || (request.postcopy && rounds >= 1) {
                    postcopy = true
                    pendingDirty = dirty
                    break
                }
                // Not right after the first round: its bandwidth, measured on hundreds of MiB of cold
                // pages, overstates what the last hot ones get (the benchmark's one-round tcp hops
                // stopped the guest 84-108 ms against 50).
                if (expected <= request.maxDowntimeMilliseconds && rounds >= 2) || rounds >= request.maxRounds {
                    // Put back what was taken: the stop-and-copy round sends it.
                    pendingDirty = dirty
                    break
                }
                // Auto-converge (QEMU's rule): the guest dirtied more than half of what the round
                // carried, twice in a row: hold the vCPUs 20% of the time, 10% more each round after.
                if request.autoConverge, rounds >= 2, Double(remaining) > Double(roundBytes) / 2 {
                    busyRounds += 1
                    if busyRounds >= 2 {
                        if throttle == nil { throttle = VCPUThrottle(machine: machine, session: session) }
                        let percent = throttle!.percent == 0 ? 20 : min(99, throttle!.percent + 10)
                        throttle!.set(percent: percent)
                        progress.update { $0.throttlePercent = percent }
                    }
                } else {
                    busyRounds = 0
                }
                roundStarted = dirtyStarted
                let before = sentSoFar()
                try sender.send(dirty, firstRound: false)
                try mirror?.sendDirty()
                rounds += 1
                try channel.send(.roundEnd, bytes: withUnsafeBytes(of: UInt32(rounds).littleEndian, Array.init))
                roundBytes = sentSoFar() - before
                roundSeconds = max(1e-6, Double(DispatchTime.now().uptimeNanoseconds - roundStarted) / 1e9)
            }
            throttle?.stop()
            throttle = nil

            // 4. Stop-and-copy, with the session's state changes held off.
            return try session.operations.withLock { _ -> Ending in
                try checkCancelled()
                let wasPaused = machine.runState == .paused
                let stopped = DispatchTime.now().uptimeNanoseconds
                progress.update { $0.phase = .stopAndCopy }
                var marks: [(String, UInt64)] = []
                func mark(_ what: String) { marks.append((what, DispatchTime.now().uptimeNanoseconds)) }
                try machine.pause()
                mark("vCPUs parked")
                var resumeHere = true
                var locksReleased = false
                defer {
                    if resumeHere {
                        // The guest stays here: its disks' locks first. Should another process
                        // have taken one meanwhile, two writers would share a disk: it stays paused.
                        var relocked = true
                        if locksReleased {
                            do { try machine.resources.acquireDiskLocks() } catch {
                                relocked = false
                                session.log("the migration failed and the guest stays paused here: its disk locks could not be taken back (\(error))")
                            }
                        }
                        try? machine.resumeDevices()
                        if !wasPaused, relocked { machine.resume() }
                    }
                }
                try machine.quiesceDevices()
                mark("devices stopped, disks flushed")
                let last = try Self.merged(Self.merged(machine.takeDirtyPages().bitmaps, memory.takeWrittenPages()), pendingDirty ?? [])
                if postcopy {
                    // The destination fetches these itself once the guest runs there.
                    try channel.send(.postcopy, bytes: PageBitmap(words: last).encoded)
                } else {
                    try sender.send(last, firstRound: false)
                    if request.verify {
                        try channel.send(.verify, bytes: PageChecksums.compute(memory))
                        mark("page checksums sent")
                    }
                }
                // The device threads are stopped and the disks flushed: the last disk writes.
                try mirror?.sendDirty()
                mark("\(PageBitmap(words: last).count) last pages \(postcopy ? "listed" : "sent")")
                let payload = SnapshotPayload(machine: recorded, effectiveCmdline: machine.effectiveCmdline, paused: wasPaused,
                                              state: try machine.captureState())
                mark("state captured")
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                let stateBytes = Array(try encoder.encode(payload))
                mark("state encoded (\(stateBytes.count >> 10) KiB)")
                try channel.send(.state, bytes: stateBytes)
                // The disks are flushed and no longer written here: their image locks go now, so
                // that a destination on this host (shared storage) can take them as it builds.
                machine.resources.releaseDiskLocks()
                locksReleased = true
                try channel.send(.complete)
                mark("sent")
                channel.setTimeout(seconds: 60)
                let pager = postcopy ? PostcopyServer(channel: channel, memory: memory, pending: PageBitmap(words: last)) : nil
                do {
                    while true {
                        let (answer, payload) = try channel.receive(during: "for the destination to run the guest")
                        // Building the machine there may already touch missing pages.
                        if answer == .pageRequest, let pager { try pager.serve(payload); continue }
                        guard answer == .running else { throw MigrationError.corrupt("expected running from the destination, got \(answer)") }
                        break
                    }
                } catch let MigrationError.refused(why) {
                    // The destination said it will not run it: the guest is still ours.
                    throw MigrationError.refused(why)
                } catch {
                    resumeHere = false
                    let downtime = Double(DispatchTime.now().uptimeNanoseconds - stopped) / 1e6
                    progress.update {
                        $0.phase = .failed; $0.downtimeMilliseconds = downtime; $0.elapsedMilliseconds = elapsedMilliseconds
                        $0.error = "\(error) after the whole VM was sent: it may be running on the destination; it stays paused here (resume it here only if it does not run there)"
                    }
                    return .heldPaused
                }
                resumeHere = false
                mark("the destination runs the guest")
                let downtime = Double(DispatchTime.now().uptimeNanoseconds - stopped) / 1e6
                var previous = stopped
                switchover = marks.map { what, at in
                    defer { previous = at }
                    return String(format: "%@ %.1f", what, Double(at - previous) / 1e6)
                }.joined(separator: ", ") + " (ms)"
                if let pager {
                    // The guest runs there now; what it lacks goes across, asked-for pages first.
                    progress.update { $0.phase = .postcopy; $0.postcopy = true; $0.downtimeMilliseconds = downtime }
                    do {
                        try pager.run { [progress] remaining, requests in
                            progress.update { $0.ramBytesRemaining = remaining; $0.postcopyPageRequests = requests }
                        }
                    } catch {
                        progress.update {
                            $0.phase = .failed; $0.elapsedMilliseconds = elapsedMilliseconds
                            $0.error = "post-copy broke off (\(error)) with \(pager.remainingPages) pages not sent: the guest runs on the destination without them and cannot go on there; its state as of the switch-over stays paused here, but the destination has run since (disk writes included): resume it here only after discarding the destination's disk writes. Vireo has no post-copy recovery (QEMU's postcopy-recover) yet"
                        }
                        return .heldPaused
                    }
                }
                progress.update {
                    $0.phase = .completed; $0.downtimeMilliseconds = downtime; $0.ramBytesRemaining = 0
                    $0.ramBytesTransferred = sender.bytesSent + (pager?.bytesSent ?? 0); $0.elapsedMilliseconds = elapsedMilliseconds
                    $0.diskBytesTransferred = mirror?.bytesSent ?? 0; $0.diskBytesRemaining = 0
                }
                return .handedOver
            }
        } catch {
            throttle?.stop()
            if logging {
                try? machine.stopDirtyPageLogging()
                machine.memory.stopWriteTracking()
                for disk in mirroredDisks { disk.stopTracking() }
            }
            let cancelledNow = cancelled.load(ordering: .acquiring)
            progress.update {
                $0.phase = cancelledNow ? .cancelled : .failed
                $0.error = cancelledNow ? "cancelled" : "\(error)"
                $0.elapsedMilliseconds = elapsedMilliseconds
            }
            return .keptHere
        }
    }

    /// Dirty pages taken in the last pre-copy look, sent in the stop-and-copy round.
    private var pendingDirty: [[UInt64]]?
    /// The migration switches to post-copy instead of a stop-and-copy of the rest.
    private var postcopy = false
    /// Where the downtime went, step by step (once the switch-over is done).
    private(set) var switchover: String?

    /// The fixed part of the downtime, added to the estimate so that the target is not overshot
    /// when no page is left to copy.
    static let switchoverAllowanceMilliseconds: Double = 10

    static func merged(_ a: [[UInt64]], _ b: [[UInt64]]) -> [[UInt64]] {
        if b.isEmpty { return a }
        if a.isEmpty { return b }
        return zip(a, b).map { zip($0, $1).map { $0 | $1 } }
    }
}

/// Sends guest pages as frames: runs of up to 256 non-zero pages, and runs of zero pages as one
/// small frame each (after the first round: the destination may hold older bytes there).
final class PageSender {
    let channel: MigrationChannel
    let memory: GuestMemory
    /// Bytes per second (0: unlimited).
    let bandwidthLimit: Double
    let cancelled: () -> Bool
    let onProgress: (UInt64) -> Void
    private(set) var bytesSent: UInt64 = 0
    private let started = DispatchTime.now().uptimeNanoseconds
    private var frames = 0
    private static let zeroPage = [UInt8](repeating: 0, count: 4096)
    /// One frame's payload: the address, then up to 256 pages.
    private var staging = [UInt8](repeating: 0, count: 8 + MigrationChannel.maximumPagesPerFrame * 4096)

    init(channel: MigrationChannel, memory: GuestMemory, bandwidthLimit: Double, cancelled: @escaping () -> Bool,
         onProgress: @escaping (UInt64) -> Void) {
        self.channel = channel; self.memory = memory; self.bandwidthLimit = bandwidthLimit
        self.cancelled = cancelled; self.onProgress = onProgress
    }

    /// Round one: every page (zero pages skipped: the destination's RAM starts zeroed).
    func sendAll() throws {
        let all = memory.regions.map { region -> [UInt64] in
            let pages = Int(region.size / 4096)
            var bitmap = [UInt64](repeating: ~0, count: (pages + 63) / 64)
            if pages % 64 != 0 { bitmap[bitmap.count - 1] = (1 << UInt64(pages % 64)) - 1 }
            return bitmap
        }
        try send(all, firstRound: true)
    }

    /// The pages set in `bitmaps` (per region).
    func send(_ bitmaps: [[UInt64]], firstRound: Bool) throws {
        try Self.zeroPage.withUnsafeBytes { zeros in
            for (regionIndex, region) in memory.regions.enumerated() where regionIndex < bitmaps.count {
                let base = UnsafeRawPointer(bitPattern: region.hostAddress)!
                let bitmap = bitmaps[regionIndex]
                let pageCount = Int(region.size / 4096)
                // The run being collected: first page, page count, all zero or all data.
                var runStart = 0, runLength = 0, runZero = false
                func flush() throws {
                    guard runLength > 0 else { return }
                    defer { runLength = 0 }
                    let address = region.start.raw + UInt64(runStart) * 4096
                    let length = runLength * 4096
                    if runZero {
                        guard !firstRound else { return }
                        var frame = [UInt8](repeating: 0, count: 16)
                        MigrationChannel.put(address, at: 0, in: &frame)
                        MigrationChannel.put(UInt64(length), at: 8, in: &frame)
                        try channel.send(.zeros, bytes: frame)
                        return
                    }
                    // Copied first: the guest may be writing these pages, and the checksum and
                    // the bytes sent must be of the same copy.
                    MigrationChannel.put(address, at: 0, in: &staging)
                    try staging.withUnsafeMutableBytes { raw in
                        (raw.baseAddress! + 8).copyMemory(from: base + runStart * 4096, byteCount: length)
                        try channel.send(.pages, [UnsafeRawBufferPointer(rebasing: raw[0..<(8 + length)])])
                    }
                    bytesSent += UInt64(length)
                    try pace()
                }
                for word in bitmap.indices where bitmap[word] != 0 {
                    let bits = bitmap[word]
                    for bit in 0..<64 where bits & (1 << UInt64(bit)) != 0 {
                        let page = word * 64 + bit
                        guard page < pageCount else { break }
                        let zero = memcmp(base + page * 4096, zeros.baseAddress!, 4096) == 0
                        if runLength > 0, page == runStart + runLength, zero == runZero,
                           runLength < MigrationChannel.maximumPagesPerFrame {
                            runLength += 1
                            continue
                        }
                        try flush()
                        runStart = page; runZero = zero; runLength = 1
                    }
                }
                try flush()
            }
        }
        onProgress(bytesSent)
    }

    /// Keeps the average rate under the bandwidth limit; checks for a cancel now and then.
    private func pace() throws {
        frames += 1
        if frames % 16 == 0 {
            if cancelled() { throw MigrationError.cancelled }
            onProgress(bytesSent)
        }
        guard bandwidthLimit > 0 else { return }
        let due = Double(bytesSent) / bandwidthLimit
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        if due > elapsed { usleep(UInt32(min(1.0, due - elapsed) * 1e6)) }
    }
}

/// Auto-converge: holds the vCPUs parked `percent` of every 100 ms while a migration cannot keep
/// up with the guest. Skips a period when the session is busy (a pause or snapshot in progress)
/// or the VM is paused anyway.
final class VCPUThrottle: @unchecked Sendable {
    private let state = Guarded((percent: 0, running: true))
    private var thread: pthread_t?

    var percent: Int { state.read { $0.percent } }

    init(machine: Machine, session: VMSession) {
        let state = self.state
        thread = startThread(name: "vireo-throttle") {
            while true {
                let (percent, running) = state.read { ($0.percent, $0.running) }
                guard running else { return }
                usleep(UInt32(max(1, 100 - percent)) * 1000)
                guard percent > 0 else { continue }
                _ = session.operations.withLockIfAvailable { _ in
                    guard machine.runState == .running, (try? machine.pause(timeoutSeconds: 2)) != nil else { return }
                    usleep(UInt32(percent) * 1000)
                    machine.resume()
                }
            }
        }
    }

    func set(percent: Int) { state.update { $0.percent = percent } }

    func stop() {
        state.update { $0.running = false }
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }
}
