import VMContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What /proc says about one process. Its files are parsed defensively: a process can exit (and
/// its pid be reused) between any two reads, so every lookup may come back empty.
public struct ProcessSnapshot: Equatable, Sendable {
    public var pid: Int32
    /// Field 3 of /proc/<pid>/stat: R, S, D, Z (zombie), X (dead), ...
    public var state: Character
    /// Field 22: start time in clock ticks since boot. With the pid it names one process for good,
    /// so a recycled pid is never mistaken for a VM.
    public var startTicks: UInt64
    /// Fields 14 and 15, in clock ticks.
    public var userTicks: UInt64
    public var systemTicks: UInt64

    /// Alive and not a zombie waiting for a parent that may never reap it.
    public var isRunning: Bool { state != "Z" && state != "X" && state != "x" }

    public static let ticksPerSecond: Double = {
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return ticks > 0 ? Double(ticks) : 100
    }()

    public var userSeconds: Double { Double(userTicks) / Self.ticksPerSecond }
    public var systemSeconds: Double { Double(systemTicks) / Self.ticksPerSecond }

    /// Reads /proc/<pid>/stat, or nil when there is no such process (or the file is not as expected).
    public static func read(pid: Int32) -> ProcessSnapshot? {
        guard pid > 0, let text = readSmallFile("/proc/\(pid)/stat") else { return nil }
        return parse(stat: text, pid: pid)
    }

    /// Parses a stat line. The command name (field 2) may hold spaces and parentheses, so fields
    /// are counted from the last ')'.
    static func parse(stat text: String, pid: Int32) -> ProcessSnapshot? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let rest = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // rest[0] is field 3 (state); field n is rest[n - 3].
        guard rest.count >= 20, let state = rest[0].first,
              let user = UInt64(rest[14 - 3]), let system = UInt64(rest[15 - 3]),
              let start = UInt64(rest[22 - 3]) else { return nil }
        return ProcessSnapshot(pid: pid, state: state, startTicks: start, userTicks: user, systemTicks: system)
    }

    /// Resident set size from /proc/<pid>/status (VmRSS, in KiB there), in bytes.
    public static func residentBytes(pid: Int32) -> UInt64? {
        guard pid > 0, let text = readSmallFile("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kib = UInt64(fields[1]) else { return nil }
            return kib.multipliedReportingOverflow(by: 1024).overflow ? nil : kib * 1024
        }
        return nil
    }

    /// True when `pid` is the very process that was recorded (same start time) and still runs.
    public static func isSameProcessRunning(pid: Int32, startTicks: UInt64) -> Bool {
        guard let snapshot = read(pid: pid) else { return false }
        return snapshot.startTicks == startTicks && snapshot.isRunning
    }
}
