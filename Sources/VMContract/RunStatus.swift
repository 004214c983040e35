import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How a `vireo run` process ended, as it writes it with `--status-file` just before exiting.
///
/// The daemon learns its own children's exit status from waitpid, but a daemon restarted after a
/// crash is not the parent of the VMs it re-attached to; this file is how it still learns whether
/// the guest powered off or the VMM failed.
public struct RunStatus: Codable, Equatable, Sendable {
    public enum Outcome: String, Codable, Sendable {
        case poweroff, reset, stopped, failed, signal
        /// Stopped after writing a snapshot (virsh save): the snapshot is now the VM.
        case saved
        /// Stopped after a migration handed the VM to another process (virsh's "shut off (migrated)").
        case migrated
        case debugExit = "debug-exit"
    }

    public var outcome: Outcome
    /// One line for people: the failure report, the signal number, the debug-exit value.
    public var detail: String
    public var exitStatus: Int32
    /// For `migrated`: the migration's last progress (its downtime, rounds, bytes), which the
    /// process can no longer be asked for once it has exited.
    public var migration: MigrationProgress?

    public init(outcome: Outcome, detail: String, exitStatus: Int32, migration: MigrationProgress? = nil) {
        self.outcome = outcome
        self.detail = detail
        self.exitStatus = exitStatus
        self.migration = migration
    }

    enum CodingKeys: String, CodingKey {
        case outcome, detail, migration
        case exitStatus = "exit_status"
    }

    /// Writes the file atomically (temporary file, then rename), so a reader never sees half of it.
    public func write(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// The exit status of a `vireo run` that a seccomp violation stopped (128 + SIGSYS, the
    /// Sandbox module's `violationExitStatus`). It ends from a signal handler and writes no status
    /// file; its one-line report is the last line on its stderr.
    public static let seccompViolationExitStatus: Int32 = 159

    /// Reads a status file; nil when it is missing or not one (then the exit is unexplained).
    public static func read(from path: String) -> RunStatus? {
        guard let text = readSmallFile(path, limit: 16 << 10) else { return nil }
        return try? JSONDecoder().decode(RunStatus.self, from: Data(text.utf8))
    }
}


/// Reads a file of at most `limit` bytes (procfs files report size 0, so read until EOF).
public func readSmallFile(_ path: String, limit: Int = 64 << 10) -> String? {
    readSmallFileBytes(path, limit: limit).map { String(decoding: $0, as: UTF8.self) }
}

/// The bytes of a file of at most `limit` bytes; nil when it cannot be opened.
public func readSmallFileBytes(_ path: String, limit: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 4096)
    while data.count < limit {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        data += buffer[0..<count]
    }
    return Array(data.prefix(limit))
}
