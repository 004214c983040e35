import Foundation
import GuestMemory
import KVM
import Storage
import Testing
import TestSupport
@testable import VMM
@testable import VMMControl

/// A destination (`vireo run --incoming`): building its session blocks until the whole VM has
/// arrived, so it is built on a thread of its own.
final class IncomingGuest: @unchecked Sendable {
    let address: String
    private let result = Guarded<Result<SessionGuest, any Error>?>(nil)

    init(_ spec: LaunchSpec) {
        address = spec.incoming ?? ""
        let result = self.result
        _ = startThread(name: "incoming") {
            let built = Result { try SessionGuest(spec) }
            result.update { $0 = built }
        }
    }

    /// A destination on a fresh Unix socket, with this launch's device overrides.
    convenience init(label: String, devices: DeviceOptions = DeviceOptions(), statusFile: String? = nil) {
        let path = NSTemporaryDirectory() + "vireo-mig-\(label)-\(getpid())-\(UUID().uuidString.prefix(6)).sock"
        self.init(LaunchSpec(devices: devices, statusFile: statusFile, kernelCache: false, incoming: "unix:" + path))
    }

    var socketPath: String { String(address.dropFirst("unix:".count)) }

    /// Waits until the destination listens (its socket exists).
    func waitListening(timeoutSeconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: socketPath) { return true }
            if result.read({ $0 != nil }) { return false }
            usleep(10_000)
        }
        return false
    }

    /// The session once the VM has arrived and runs, or the error that ended the reception.
    func wait(timeoutSeconds: Double = 120) throws -> SessionGuest {
        guard let outcome = result.wait(until: { $0 != nil }, timeoutSeconds: timeoutSeconds, then: { $0 }) ?? nil else {
            throw GuestHarnessError.buildFailed("the destination did not finish receiving within \(timeoutSeconds) s")
        }
        return try outcome.get()
    }
}

/// Waits for a migration to leave its active phases.
func waitForMigration(_ session: VMSession, timeoutSeconds: Double = 120) -> MigrationProgress {
    let deadline = Date().addingTimeInterval(timeoutSeconds)
    var progress = session.migrationProgress
    while progress.isActive && Date() < deadline {
        usleep(20_000)
        progress = session.migrationProgress
    }
    return progress
}

extension KVMGuestSuites {
@Suite struct MigrationTests {
    static let counting = "ticks=1000000 spin=50000000 fill=4 churn=8"

    /// The counting guest, rewriting 8 MiB every tick, migrated back and forth between sessions
    /// (as between two `vireo run` processes, over a Unix socket): the output of all of them end
    /// to end is one unbroken count, the guest's own check of its churned pages never fails, and
    /// each source ends as `migrated`.
    @Test func countingGuestMigratesBackAndForth() throws {
        var guest = try SessionGuest(guest: "mb-user.elf", cmdline: Self.counting, memory: 64 << 20)
        #expect(guest.waitForMoreTicks(3))
        var transcript = ""
        for round in 0..<6 {
            let statusPath = NSTemporaryDirectory() + "vireo-mig-status-\(getpid())-\(round)"
            defer { unlink(statusPath) }
            let destination = IncomingGuest(label: "count\(round)")
            #expect(destination.waitListening())
            // Every other migration also has the destination check each page against the source's.
            let started = try guest.session.migrate(MigrationRequest(destination: destination.address, verify: round % 2 == 1))
            #expect(started.phase == .setup)
            let progress = waitForMigration(guest.session)
            #expect(progress.phase == .completed, "round \(round): \(progress)")
            #expect(progress.downtimeMilliseconds != nil)
            #expect(progress.rounds >= 1)
            #expect(guest.waitForEnd() == 0, "round \(round)")
            transcript += guest.output
            guest = try destination.wait()
            #expect(guest.machine.migratedFrom != nil)
            #expect(guest.machine.bootDescription.hasPrefix("migration from"))
            #expect(guest.waitForMoreTicks(3), "round \(round): \(guest.output.suffix(300))")
        }
        #expect(guest.stop() == 0)
        transcript += guest.output
        let numbers = ticks(in: transcript)
        #expect(numbers.count >= 20)
        #expect(numbers.first == 1)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 },
                "count broke: \(zip(numbers, numbers.dropFirst()).filter { $1 != $0 + 1 }.prefix(5))")
        #expect(!transcript.contains("corrupt"), "\(transcript.suffix(400))")
        #expect(!transcript.contains("useruser") && !transcript.contains("\n\n"))
    }

    /// The source records the hand-over as its end, for the daemon: outcome "migrated".
    @Test func theSourceEndsAsMigrated() throws {
        let statusPath = NSTemporaryDirectory() + "vireo-mig-src-status-\(getpid())"
        defer { unlink(statusPath) }
        var spec = LaunchSpec(kernel: try TestGuests.path("mb-user.elf"), cmdline: Self.counting, memoryBytes: 64 << 20, kernelCache: false)
        spec.statusFile = statusPath
        let source = try SessionGuest(spec)
        #expect(source.waitForMoreTicks(1))
        let destination = IncomingGuest(label: "status")
        #expect(destination.waitListening())
        _ = try source.session.migrate(MigrationRequest(destination: destination.address))
        #expect(waitForMigration(source.session).phase == .completed)
        #expect(source.waitForEnd() == 0)
        let status = RunStatus.read(from: statusPath)
        #expect(status?.outcome == .migrated)
        #expect(status?.detail.contains(destination.address) == true)
        #expect(status?.migration?.phase == .completed)
        #expect(status?.migration?.downtimeMilliseconds != nil)
        let arrived = try destination.wait()
        #expect(arrived.waitForMoreTicks(2))
        #expect(arrived.stop() == 0)
    }

    /// A virtio-blk guest in the middle of a stream of writes, migrated several times (the disk is
    /// shared storage: the same image on both sides): every request completes, none fails.
    @Test func busyVirtioBlockSurvivesMigration() throws {
        let disk = try KVMGuestSuites.VirtioMachineTests.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let devices = DeviceOptions(disks: [DiskOptions(path: disk, format: .raw)], entropy: true)
        var guest = try SessionGuest(guest: "mb-virtio.elf", cmdline: "bench=400 write", devices: devices)
        #expect(guest.waitFor("virtio: capacity"))
        var transcript = ""
        var migrations = 0
        while migrations < 3, guest.machine.runState == .running {
            let destination = IncomingGuest(label: "blk\(migrations)")
            #expect(destination.waitListening())
            guard (try? guest.session.migrate(MigrationRequest(destination: destination.address))) != nil else { break }
            let progress = waitForMigration(guest.session)
            guard progress.phase == .completed else {
                // The guest may have finished meanwhile; anything else is a failure.
                #expect(guest.machine.runState == .stopped, "\(progress)")
                break
            }
            #expect(guest.waitForEnd() == 0)
            transcript += guest.output
            guest = try destination.wait()
            migrations += 1
            usleep(100_000)
        }
        let status = guest.waitForEnd(timeoutSeconds: 300)
        transcript += guest.output
        #expect(migrations >= 1, "the guest finished before it could be migrated: \(transcript)")
        #expect(status == 1, "\(transcript)")   // debug exit 0
        #expect(transcript.contains("virtio: bench done n=400 sequential write"), "\(transcript)")
        #expect(!transcript.contains("failed"))
    }

    /// With a link far slower than the guest dirties memory, auto-converge throttles the vCPUs
    /// until the rest fits; the guest's count and pages still come through intact.
    @Test func autoConvergeThrottlesAGuestThatDirtiesFasterThanTheLink() throws {
        // 4 MiB rewritten per tick, many ticks per second; an 8 MiB/s link carries one tick's
        // worth in half a second, so every round finds the whole churn dirty again.
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: "ticks=1000000 spin=20000000 fill=2 churn=4", memory: 64 << 20)
        #expect(guest.waitForMoreTicks(3))
        let destination = IncomingGuest(label: "converge")
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address, bandwidthMiBps: 8, maxRounds: 40))
        let progress = waitForMigration(guest.session, timeoutSeconds: 180)
        #expect(progress.phase == .completed, "\(progress)")
        #expect(progress.throttlePercent > 0, "\(progress)")
        #expect(progress.rounds > 2)
        #expect(guest.waitForEnd() == 0)
        let arrived = try destination.wait()
        #expect(arrived.waitForMoreTicks(3), "\(arrived.output.suffix(300))")
        #expect(arrived.stop() == 0)
        let numbers = ticks(in: guest.output + arrived.output)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 })
        #expect(!(guest.output + arrived.output).contains("corrupt"))
    }
}
}

extension KVMGuestSuites.MigrationTests {
    /// Nothing listening, a destination that refuses the machine, a destination that dies in the
    /// middle, a cancel: each time the guest goes on running on the source as if nothing happened,
    /// and the progress says why.
    @Test func failuresBeforeTheSwitchOverLeaveTheGuestRunning() throws {
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: Self.counting, memory: 64 << 20)
        defer { guest.stop() }
        #expect(guest.waitForMoreTicks(2))

        // Nobody listens.
        _ = try guest.session.migrate(MigrationRequest(destination: "unix:/nonexistent/vireo-nobody.sock"))
        var progress = waitForMigration(guest.session)
        #expect(progress.phase == .failed)
        #expect(progress.error?.contains("cannot connect to unix:/nonexistent/vireo-nobody.sock") == true, "\(progress)")
        #expect(guest.machine.runState == .running)
        #expect(guest.waitForMoreTicks(2))

        // The destination cannot fit the machine (it is given a disk the source's VM does not have).
        let disk = try KVMGuestSuites.VirtioMachineTests.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let refusing = IncomingGuest(label: "refuse", devices: DeviceOptions(disks: [DiskOptions(path: disk, format: .raw)]))
        #expect(refusing.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: refusing.address))
        progress = waitForMigration(guest.session)
        #expect(progress.phase == .failed)
        #expect(progress.error?.contains("refused") == true, "\(progress)")
        #expect(throws: (any Error).self) { try refusing.wait() }
        #expect(guest.machine.runState == .running)
        #expect(guest.waitForMoreTicks(2))

        // The destination goes away in the middle of RAM.
        let dying = try FakeDestination(closeAfterBytes: 4 << 20)
        _ = try guest.session.migrate(MigrationRequest(destination: dying.address))
        progress = waitForMigration(guest.session)
        #expect(progress.phase == .failed, "\(progress)")
        #expect(guest.machine.runState == .running)
        #expect(guest.waitForMoreTicks(2))

        // Cancelled while a slow link carries RAM; the destination hears of it and builds nothing.
        let cancelled = IncomingGuest(label: "cancel")
        #expect(cancelled.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: cancelled.address, bandwidthMiBps: 4))
        usleep(300_000)
        #expect(guest.session.migrationProgress.phase == .precopy)
        // A second migration or a snapshot meanwhile is refused.
        #expect(throws: SessionError.self) { try guest.session.migrate(MigrationRequest(destination: cancelled.address)) }
        #expect(throws: SessionError.self) { try guest.session.snapshot(SnapshotRequest(path: "/tmp/vireo-never.snap")) }
        _ = try guest.session.cancelMigration()
        progress = waitForMigration(guest.session)
        #expect(progress.phase == .cancelled, "\(progress)")
        #expect(throws: (any Error).self) { try cancelled.wait() }
        #expect(guest.machine.runState == .running)
        #expect(guest.waitForMoreTicks(2))
        #expect(!guest.output.contains("corrupt"))

        // And after all that, a migration still works.
        let destination = IncomingGuest(label: "after")
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address))
        #expect(waitForMigration(guest.session).phase == .completed)
        #expect(guest.waitForEnd() == 0)
        let arrived = try destination.wait()
        #expect(arrived.waitForMoreTicks(2))
        #expect(arrived.stop() == 0)
        let numbers = ticks(in: guest.output + arrived.output)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 })
    }

    /// A paused VM migrates paused: nothing runs on the destination until it is resumed.
    @Test func aPausedVMArrivesPaused() throws {
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: Self.counting, memory: 64 << 20)
        #expect(guest.waitForMoreTicks(2))
        try guest.session.pause()
        let destination = IncomingGuest(label: "paused")
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address))
        #expect(waitForMigration(guest.session).phase == .completed)
        #expect(guest.waitForEnd() == 0)
        let arrived = try destination.wait()
        defer { arrived.stop() }
        usleep(300_000)
        #expect(arrived.machine.runState == .paused)
        #expect(arrived.lastTick == 0)
        try arrived.session.resume()
        #expect(arrived.waitForMoreTicks(2))
        #expect(ticks(in: arrived.output).first == guest.lastTick + 1)
    }

    /// The control API's routes: bad bodies are 400s that change nothing, a second request while
    /// one runs is a 409, progress is always answered.
    @Test func controlAPIRoutes() throws {
        let guest = try ControlledGuest(cmdline: "ticks=1000000 spin=50000000 fill=8")
        defer { guest.stop() }
        #expect(guest.guest.waitForMoreTicks(1))
        let none = guest.api.handle(method: "GET", uri: "/vm/migration")
        #expect(try ContractJSON.decode(MigrationProgress.self, from: none.body).phase == MigrationProgress.Phase.none)
        for body in ["", "{}", "{\"destination\":\"ftp:x\"}", "{\"destination\":\"unix:relative.sock\"}",
                     "{\"destination\":\"tcp:localhost\"}", "{\"destination\":\"unix:/x\",\"max_downtime_ms\":0}",
                     "{\"destination\":\"unix:/x\",\"max_rounds\":0}", "{\"destination\":\"unix:/x\",\"bandwidth_mibps\":-1}"] {
            let response = guest.api.handle(method: "PUT", uri: "/vm/migrate", body: Array(body.utf8))
            #expect(response.status == 400, "\(body): \(String(decoding: response.body, as: UTF8.self))")
        }
        #expect(guest.api.handle(method: "PUT", uri: "/vm/migrate/cancel").status == 409)
        #expect(guest.api.handle(method: "GET", uri: "/vm/migrate").status == 405)
        #expect(guest.machine.runState == .running)
        let slow = IncomingGuest(label: "api")
        #expect(slow.waitListening())
        let started = guest.api.handle(method: "PUT", uri: "/vm/migrate",
                                       body: Array("{\"destination\":\"\(slow.address)\",\"bandwidth_mibps\":2}".utf8))
        #expect(started.status == 202, "\(String(decoding: started.body, as: UTF8.self))")
        usleep(200_000)
        #expect(guest.api.handle(method: "PUT", uri: "/vm/migrate", body: Array("{\"destination\":\"\(slow.address)\"}".utf8)).status == 409)
        let during = try ContractJSON.decode(MigrationProgress.self, from: guest.api.handle(method: "GET", uri: "/vm/migration").body)
        #expect(during.phase == .precopy)
        #expect(during.ramBytesTotal == 32 << 20)
        #expect(guest.api.handle(method: "PUT", uri: "/vm/migrate/cancel").status == 200)
        #expect(waitForMigration(guest.guest.session).phase == .cancelled)
        #expect(throws: (any Error).self) { try slow.wait() }
        #expect(guest.guest.waitForMoreTicks(1))
    }
}

/// A destination that takes the machine, then reads `closeAfterBytes` of RAM and hangs up (a
/// destination that dies mid-migration).
final class FakeDestination: @unchecked Sendable {
    let address: String
    init(closeAfterBytes: Int) throws {
        let path = NSTemporaryDirectory() + "vireo-mig-fake-\(getpid())-\(UUID().uuidString.prefix(6)).sock"
        address = "unix:" + path
        let listener = try MigrationChannel.Listener(try MigrationAddress(parsing: address))
        _ = startThread(name: "fake-destination") {
            defer { listener.close() }
            guard let channel = try? listener.accept() else { return }
            guard (try? channel.receive(during: "hello")) != nil, (try? channel.send(.ready)) != nil else { return }
            var received = 0
            while received < closeAfterBytes, let (_, payload) = try? channel.receive(during: "RAM") { received += payload.count }
            channel.close()
        }
    }
}

extension KVMGuestSuites.MigrationTests {
    /// A disk of random bytes, written by the guest while `--copy-storage-all` mirrors it to a
    /// new image on the destination (created there, raw or qcow2): once the guest has finished on
    /// the destination, its disk holds exactly what the same guest leaves on a copy of the disk
    /// when it runs without migrating (the untouched part mirrored in round one, the written part
    /// in later rounds and in the stop-and-copy round).
    @Test(arguments: [ImageFormat.raw, .qcow2])
    func copyStorageAllMirrorsABusyDisk(format: ImageFormat) throws {
        let directory = NSTemporaryDirectory() + "vireo-mirror-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var random = SplitMix64(state: 0xD15C_0012)
        var content = [UInt8](repeating: 0, count: 8 << 20)
        for index in stride(from: 0, to: content.count, by: 8) {
            withUnsafeBytes(of: random.next()) { content.replaceSubrange(index..<index + 8, with: $0) }
        }
        // Leave a hole of zeros in the middle, as real images have.
        content.replaceSubrange((3 << 20)..<(4 << 20), with: [UInt8](repeating: 0, count: 1 << 20))
        func image(_ name: String) throws -> String {
            let path = directory + "/" + name
            switch format {
            case .raw: try RawImage.create(path: path, size: UInt64(content.count))
            case .qcow2: try QCOW2Image.create(path: path, options: QCOW2CreateOptions(size: UInt64(content.count)))
            }
            let disk = try DiskImage.open(path: path, format: format, readOnly: false)
            try content.withUnsafeBytes { try disk.write($0, at: 0) }
            try disk.flush()
            return path
        }
        func contents(_ path: String) throws -> [UInt8] {
            let disk = try DiskImage.open(path: path, format: format, readOnly: true)
            var bytes = [UInt8](repeating: 0, count: Int(disk.size))
            try bytes.withUnsafeMutableBytes { try disk.read(into: $0, at: 0) }
            return bytes
        }
        let diskFormat = DiskOptions.Format(rawValue: format.rawValue)
        let cmdline = "bench=1500 write"

        // The reference: the same guest, no migration.
        let reference = try image("reference.img")
        let alone = try SessionGuest(guest: "mb-virtio.elf", cmdline: cmdline,
                                     devices: DeviceOptions(disks: [DiskOptions(path: reference, format: diskFormat)]))
        #expect(alone.waitForEnd(timeoutSeconds: 300) == 1)
        let expected = try contents(reference)
        #expect(expected != content)

        let source = try image("source.img")
        let target = directory + "/target.img"
        var guest = try SessionGuest(guest: "mb-virtio.elf", cmdline: cmdline,
                                     devices: DeviceOptions(disks: [DiskOptions(path: source, format: diskFormat)]))
        #expect(guest.waitFor("virtio: capacity"))
        let destination = IncomingGuest(label: "mirror", devices: DeviceOptions(disks: [DiskOptions(path: target, format: diskFormat)]))
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address, copyStorage: true))
        let progress = waitForMigration(guest.session)
        #expect(progress.phase == .completed, "\(progress)")
        #expect(progress.diskBytesTransferred >= 6 << 20, "\(progress)")
        #expect(guest.waitForEnd() == 0)
        let transcript = guest.output
        guest = try destination.wait()
        #expect(guest.waitForEnd(timeoutSeconds: 300) == 1, "\(transcript + guest.output)")
        #expect((transcript + guest.output).contains("virtio: bench done n=1500 sequential write"))
        #expect(FileManager.default.fileExists(atPath: target))
        #expect(try DiskImage.probeFormat(path: target) == format)
        let mirrored = try contents(target)
        #expect(mirrored.count == expected.count)
        if mirrored != expected {
            let first = zip(mirrored, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
            Issue.record("the mirrored disk differs from the reference, first at byte \(first)")
        }
    }

    /// On one host, a destination that would mirror the disk onto the very same file is refused
    /// before anything is written; the guest runs on.
    @Test func copyStorageOntoTheSameFileIsRefused() throws {
        let disk = try KVMGuestSuites.VirtioMachineTests.makeDisk()
        defer { try? FileManager.default.removeItem(atPath: disk) }
        let before = try Data(contentsOf: URL(fileURLWithPath: disk))
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: Self.counting, memory: 64 << 20,
                                     devices: DeviceOptions(disks: [DiskOptions(path: disk, format: .raw)]))
        defer { guest.stop() }
        #expect(guest.waitForMoreTicks(2))
        // A destination that names no disk of its own is refused (it never writes where the source
        // says); one that names the very same file is refused too.
        let nameless = IncomingGuest(label: "nameless")
        #expect(nameless.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: nameless.address, copyStorage: true))
        let refused = waitForMigration(guest.session)
        #expect(refused.phase == .failed)
        #expect(refused.error?.contains("give the destination its own --disk") == true, "\(refused)")
        #expect(throws: (any Error).self) { try nameless.wait() }
        let destination = IncomingGuest(label: "same", devices: DeviceOptions(disks: [DiskOptions(path: disk, format: .raw)]))
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address, copyStorage: true))
        let progress = waitForMigration(guest.session)
        #expect(progress.phase == .failed)
        #expect(progress.error?.contains("onto itself") == true, "\(progress)")
        #expect(throws: (any Error).self) { try destination.wait() }
        #expect(guest.waitForMoreTicks(2))
        #expect(try Data(contentsOf: URL(fileURLWithPath: disk)) == before)
    }
}

extension KVMGuestSuites.MigrationTests {
    /// Post-copy: after one full round the guest (128 MiB, rewriting 32 MiB per tick) starts on
    /// the destination at once; the pages it lacks come over on demand (userfaultfd) or in the
    /// background. The count goes on without a gap and every churned page checks out.
    @Test func postcopyRunsTheGuestBeforeItsRAMIsThere() throws {
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: "ticks=1000000 spin=50000000 fill=16 churn=32", memory: 128 << 20)
        #expect(guest.waitForMoreTicks(3))
        let destination = IncomingGuest(label: "postcopy")
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address, maxDowntimeMilliseconds: 0.01, postcopy: true))
        let progress = waitForMigration(guest.session)
        #expect(progress.phase == .completed, "\(progress)")
        #expect(progress.postcopy, "\(progress)")
        #expect(progress.rounds == 1)
        #expect(guest.waitForEnd() == 0)
        let arrived = try destination.wait()
        #expect(arrived.waitForMoreTicks(5), "\(arrived.output.suffix(300))\nsession log:\n\(arrived.log)")
        // Once every page is there, the pages that were never sent (zero on the source) are
        // ordinary memory again: migrating on reads all of RAM and must not wait on them.
        let onward = IncomingGuest(label: "postcopy-on")
        #expect(onward.waitListening())
        _ = try arrived.session.migrate(MigrationRequest(destination: onward.address))
        #expect(waitForMigration(arrived.session).phase == .completed)
        #expect(arrived.waitForEnd() == 0)
        let last = try onward.wait()
        #expect(last.waitForMoreTicks(3))
        #expect(last.stop() == 0)
        let transcript = guest.output + arrived.output + last.output
        let numbers = ticks(in: transcript)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 }, "\(numbers.suffix(20))")
        #expect(!transcript.contains("corrupt"), "\(transcript.suffix(300))")
    }

    /// `PUT /vm/migrate/postcopy` switches a migration that would not converge on its own (a
    /// slow link, no auto-converge); it cannot be cancelled once in post-copy.
    @Test func switchingToPostcopyThroughTheAPI() throws {
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: "ticks=1000000 spin=50000000 fill=4 churn=16", memory: 64 << 20)
        let api = ControlAPI(session: guest.session)
        #expect(guest.waitForMoreTicks(2))
        let destination = IncomingGuest(label: "switch")
        #expect(destination.waitListening())
        let body = "{\"destination\":\"\(destination.address)\",\"bandwidth_mibps\":40,\"auto_converge\":false,\"max_rounds\":1000}"
        #expect(api.handle(method: "PUT", uri: "/vm/migrate", body: Array(body.utf8)).status == 202)
        usleep(1_500_000)
        #expect(guest.session.migrationProgress.phase == .precopy)
        let switched = api.handle(method: "PUT", uri: "/vm/migrate/postcopy")
        #expect(switched.status == 200, "\(String(decoding: switched.body, as: UTF8.self))")
        let progress = waitForMigration(guest.session)
        #expect(progress.phase == .completed, "\(progress)")
        #expect(progress.postcopy)
        #expect(api.handle(method: "PUT", uri: "/vm/migrate/postcopy").status == 409)
        #expect(guest.waitForEnd() == 0)
        let arrived = try destination.wait()
        #expect(arrived.waitForMoreTicks(3))
        #expect(arrived.stop() == 0)
        let transcript = guest.output + arrived.output
        #expect(!transcript.contains("corrupt"))
        let numbers = ticks(in: transcript)
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $1 == $0 + 1 })
    }

    /// The connection breaks in the middle of post-copy: the destination cannot go on (its guest
    /// lacks pages) and stops with a failure that says so; the source keeps its paused copy and
    /// says what the recovery would take. Nothing hangs.
    @Test func aBrokenPostcopyStopsTheDestinationAndSaysWhy() throws {
        let guest = try SessionGuest(guest: "mb-user.elf", cmdline: "ticks=1000000 spin=50000000 fill=16 churn=200", memory: 256 << 20)
        defer { guest.stop() }
        #expect(guest.waitForMoreTicks(2))
        let destination = IncomingGuest(label: "broken")
        #expect(destination.waitListening())
        _ = try guest.session.migrate(MigrationRequest(destination: destination.address, maxDowntimeMilliseconds: 0.01, postcopy: true))
        let deadline = Date().addingTimeInterval(60)
        while guest.session.migrationProgress.phase != .postcopy, guest.session.migrationProgress.isActive, Date() < deadline {
            usleep(1000)
        }
        guard guest.session.migrationProgress.phase == .postcopy else {
            Issue.record("post-copy ended before the connection could be cut: \(guest.session.migrationProgress)")
            return
        }
        #expect(throws: SessionError.self) { try guest.session.cancelMigration() }
        guest.session.breakMigrationConnection()
        let progress = waitForMigration(guest.session)
        #expect(progress.phase == .failed)
        #expect(progress.error?.contains("post-copy broke off") == true, "\(progress)")
        #expect(guest.machine.runState == .paused)
        let arrived = try destination.wait()
        let status = arrived.waitForEnd(timeoutSeconds: 60)
        #expect(status != nil && status != 0, "the destination should stop with a failure")
        if case let .failed(why)? = arrived.session.lastOutcome {
            #expect(why.contains("post-copy failed"), "\(why)")
        } else {
            Issue.record("destination outcome: \(String(describing: arrived.session.lastOutcome))")
        }
    }
}
