import Boot
import Foundation
import GuestMemory
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// The destination's side of a migration: a machine received over a `MigrationChannel` (its
/// description, every RAM page, then its device and vCPU state), ready to be built and run. The
/// source stays stopped until `reportRunning()` (or resumes the guest on `reportFailure`).
public final class IncomingMigration: @unchecked Sendable {
    /// The machine, its command line, whether it was paused, and its state: what a snapshot holds.
    public let payload: SnapshotPayload
    /// Guest RAM, filled from the stream.
    public let memory: GuestMemory
    /// Where the VM came from (the source's address as this side sees it).
    public let peer: String
    /// RAM received, pages sent again in later rounds counted again.
    public let bytesReceived: UInt64
    /// Pre-copy rounds the source made.
    public let rounds: Int
    private let channel: MigrationChannel
    private let answered = Guarded(false)
    /// Post-copy: the pages the guest still lacks come over while it runs.
    let pager: PostcopyPager?
    /// The KVM VM, made with the RAM registered while the RAM was still arriving.
    public let preparedVM: VirtualMachine?

    private init(payload: SnapshotPayload, memory: GuestMemory, peer: String, bytesReceived: UInt64, rounds: Int,
                 channel: MigrationChannel, pager: PostcopyPager?, preparedVM: VirtualMachine?) {
        self.payload = payload; self.memory = memory; self.peer = peer; self.preparedVM = preparedVM
        self.bytesReceived = bytesReceived; self.rounds = rounds; self.channel = channel; self.pager = pager
    }

    deinit {
        pager?.stop()
        channel.close()
    }

    /// Whether the guest still lacks pages that come over while it runs (post-copy).
    public var isPostcopy: Bool { pager != nil }

    /// The guest runs here now: the source may exit (after post-copy, if this is one).
    public func reportRunning() {
        answer(close: pager == nil) { try? channel.send(.running) }
    }

    /// The guest cannot run here: the source keeps (resumes) it.
    public func reportFailure(_ why: String) {
        answer(close: true) {
            pager?.stop()
            channel.sendError(why)
        }
    }

    /// Post-copy cannot go on (the source went away): `body` stops the VM.
    public func onPostcopyFailure(_ body: @escaping @Sendable (String) -> Void) { pager?.onFailure = body }

    /// Post-copy: waits until every page is here; nil if it failed (or this is no post-copy).
    public func waitForPostcopy() -> PostcopyStatistics? { pager?.waitUntilDone() }

    /// Lets go of the post-copy threads (the machine has ended).
    public func finish() { pager?.stop() }

    private func answer(close: Bool, _ body: () -> Void) {
        let first = answered.update { done -> Bool in defer { done = true }; return !done }
        guard first else { return }
        body()
        if close { channel.close() }
    }

    /// Listens on `address`, takes one source, and receives the whole machine. Blocks until the
    /// source has sent everything (or fails: then the source has been told, and nothing was built).
    /// `listening` is called once the socket is bound (with the TCP port, which may have been 0).
    /// `diskTargets` gives this side's disks for the machine the source describes (used when the
    /// source mirrors its disks: `--copy-storage-all`).
    /// With `system`, the KVM VM is made while RAM arrives (`preparedVM`).
    public static func receive(on address: MigrationAddress, system: KVMSystem? = nil, listening: (UInt16?) -> Void = { _ in },
                               diskTargets: (LaunchSpec) throws -> [DiskOptions] = { $0.devices.disks },
                               log: @escaping @Sendable (String) -> Void = { _ in }) throws -> IncomingMigration {
        let listener = try MigrationChannel.Listener(address)
        listening(listener.port)
        let channel: MigrationChannel
        do {
            channel = try listener.accept()
        } catch {
            listener.close()
            throw error
        }
        listener.close()
        do {
            return try receive(from: channel, system: system, diskTargets: diskTargets, log: log)
        } catch {
            // The source hears why (unless the stream itself is what broke).
            channel.sendError("\(error)")
            channel.close()
            throw error
        }
    }

    static func receive(from channel: MigrationChannel, system: KVMSystem? = nil, diskTargets: (LaunchSpec) throws -> [DiskOptions] = { $0.devices.disks },
                        log: @escaping @Sendable (String) -> Void) throws -> IncomingMigration {
        channel.setTimeout(seconds: 120)
        let (kind, helloBytes) = try channel.receive(during: "before the machine's description")
        guard kind == .hello else { throw MigrationError.corrupt("expected the machine's description first, got a \(kind) frame") }
        guard helloBytes.count >= 12, Array(helloBytes[0..<8]) == MigrationChannel.streamMagic else {
            throw MigrationError.corrupt("not a Vireo migration stream (no VIREOMIG header)")
        }
        let version: UInt32 = MigrationChannel.get(helloBytes, 8)
        guard version == MigrationChannel.streamVersion else {
            throw MigrationError.unsupportedVersion(found: version, supported: MigrationChannel.streamVersion)
        }
        let hello: MigrationHello
        do {
            hello = try JSONDecoder().decode(MigrationHello.self, from: Data(helloBytes[12...]))
        } catch {
            throw MigrationError.corrupt("cannot decode the machine's description (\(error))")
        }
        let machine = hello.machine
        guard machine.memoryBytes >= VMConfig.minimumMemory, machine.memoryBytes <= VMConfig.maximumMemory,
              machine.memoryBytes % 4096 == 0, (1...VMConfig.maximumCPUs).contains(machine.cpus) else {
            throw MigrationError.corrupt("impossible machine: \(machine.cpus) vCPUs, \(machine.memoryBytes) bytes of RAM")
        }
        let layout = X86Layout.ramRanges(memorySize: machine.memoryBytes)
        guard hello.regions == layout.map({ [$0.start.raw, $0.size] }) else {
            throw MigrationError.corrupt("RAM regions do not match a \(machine.memoryBytes >> 20) MiB machine")
        }
        var disks: DiskMirrorReceiver?
        if let mirrored = hello.mirroredDisks {
            guard mirrored.count == machine.devices.disks.count, mirrored.count <= DeviceOptions.maximumDevices else {
                throw MigrationError.corrupt("\(mirrored.count) mirrored disks for a machine with \(machine.devices.disks.count)")
            }
            disks = try DiskMirrorReceiver(mirrored: mirrored, targets: try diskTargets(machine), log: log)
        }
        let memory = try GuestMemory(ranges: layout.map { ($0.start, $0.size) })
        let preparedVM = try system.map { try Machine.prepareVM(system: $0, memory: memory) }
        log("incoming migration from \(channel.peer): \(machine.cpus) vCPU(s), \(machine.memoryBytes >> 20) MiB\(disks == nil ? "" : ", disks mirrored")")
        try channel.send(.ready)

        var received: UInt64 = 0
        var rounds = 0
        var postcopyPending: PageBitmap?
        while true {
            let (kind, payload) = try channel.receive(during: "while receiving RAM")
            switch kind {
            case .pages:
                guard payload.count > 8, (payload.count - 8) % 4096 == 0 else { throw MigrationError.corrupt("a pages frame of \(payload.count) bytes") }
                let address: UInt64 = MigrationChannel.get(payload, 0)
                let data = UnsafeRawBufferPointer(rebasing: payload[8...])
                guard address % 4096 == 0, memory.isValid(GuestAddress(address), length: UInt64(data.count)) else {
                    throw MigrationError.corrupt("pages at \(hex(address)) (+\(data.count)) lie outside guest RAM")
                }
                try memory.write(data, to: GuestAddress(address))
                received += UInt64(data.count)
            case .zeros:
                guard payload.count == 16 else { throw MigrationError.corrupt("a zeros frame of \(payload.count) bytes") }
                let address: UInt64 = MigrationChannel.get(payload, 0), length: UInt64 = MigrationChannel.get(payload, 8)
                guard address % 4096 == 0, length % 4096 == 0, length > 0, memory.isValid(GuestAddress(address), length: length) else {
                    throw MigrationError.corrupt("zero pages at \(hex(address)) (+\(length)) lie outside guest RAM")
                }
                try memory.zero(at: GuestAddress(address), length: length)
            case .roundEnd:
                rounds += 1
            case .verify:
                let mismatches = try PageChecksums.mismatches(payload, memory: memory)
                guard mismatches.isEmpty else {
                    let first = mismatches.prefix(8).map { "0x" + String($0, radix: 16) }.joined(separator: " ")
                    throw MigrationError.corrupt("verify: \(mismatches.count) pages differ from the source's after the last round (\(first)\(mismatches.count > 8 ? " ..." : "")): writes the source's dirty tracking did not see")
                }
                log("verify: every page of RAM matches the source's")
            case .postcopy:
                guard postcopyPending == nil else { throw MigrationError.corrupt("a second post-copy switch") }
                postcopyPending = try PageBitmap(decoding: payload, for: memory)
            case .diskData, .diskZeros:
                guard let disks else { throw MigrationError.corrupt("disk data in a migration without --copy-storage-all") }
                if kind == .diskData { try disks.receiveData(payload) } else { try disks.receiveZeros(payload) }
            case .state:
                let state: SnapshotPayload
                do {
                    state = try JSONDecoder().decode(SnapshotPayload.self, from: Data(payload))
                } catch {
                    throw MigrationError.corrupt("cannot decode the machine state (\(error))")
                }
                guard state.machine.cpus == machine.cpus, state.machine.memoryBytes == machine.memoryBytes else {
                    throw MigrationError.corrupt("the machine state describes another machine than the stream's start")
                }
                let regions = layout.map { SnapshotFile.Region(start: $0.start.raw, size: $0.size, fileOffset: 0) }
                try SnapshotFile.validate(state, regions: regions, path: "migration stream from \(channel.peer)")
                let (last, _) = try channel.receive(during: "after the machine state")
                guard last == .complete else { throw MigrationError.corrupt("expected the end of the stream, got a \(last) frame") }
                try disks?.finish()
                var pager: PostcopyPager?
                if let pending = postcopyPending {
                    // Post-copy waits on the source for as long as the guest runs without a page.
                    channel.setTimeout(seconds: 0)
                    pager = try PostcopyPager(memory: memory, channel: channel, pending: pending, log: log)
                    pager?.start()
                    log("post-copy: the guest starts here with \(pending.count) pages still on the source")
                } else {
                    channel.setTimeout(seconds: 30)
                }
                return IncomingMigration(payload: state, memory: memory, peer: channel.peer, bytesReceived: received,
                                         rounds: rounds, channel: channel, pager: pager, preparedVM: preparedVM)
            case .hello, .ready, .complete, .running, .error, .pageRequest, .postcopyEnd:
                throw MigrationError.corrupt("unexpected \(kind) frame while receiving RAM")
            }
        }
    }

    private static func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
}
