import VMContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Each VM's process in a cgroup of its own (Cgroups/), with the limits its definition sets.
extension VMController {
    /// Makes the VM's group with the definition's limits; nil when the VM runs without one. A
    /// host without usable cgroups still runs VMs that set no limit (the daemon logged why at its
    /// start, or says so here); one that sets a limit fails to start rather than run unlimited.
    func placeInCgroup(_ definition: VMDefinition, failed: String) throws -> VMCgroup? {
        let cgroups: VMCgroups
        switch environment.cgroups {
        case .success(let host): cgroups = host
        case .failure(let error):
            guard definition.asksForResourceLimits else { return nil }
            throw APIError(500, "\(failed): \(Self.limitsAsked(definition)) the VM's own cgroup, but \(error)")
        }
        do {
            return try cgroups.create(for: definition)
        } catch {
            if definition.asksForResourceLimits {
                throw APIError(500, "\(failed): \(error)")
            }
            environment.log("VM '\(name)' runs without its own cgroup: \(error)")
            return nil
        }
    }

    /// How an exit detail starts when the VM's group saw an OOM kill.
    static let oomKilled = "killed by the host's OOM killer"

    /// "its cputune and memtune need": what the definition sets, for the error that refuses it.
    static func limitsAsked(_ definition: VMDefinition) -> String {
        let asked = [("cputune", definition.cputune.isEmpty), ("memtune", definition.memtune.isEmpty),
                     ("blkiotune", definition.blkiotune.isEmpty)].filter { !$0.1 }.map(\.0)
        let list = asked.count > 1 ? asked.dropLast().joined(separator: ", ") + " and " + (asked.last ?? "") : asked.first ?? ""
        return "its \(list) \(asked.count > 1 ? "need" : "needs")"
    }

    /// Once the VM's process is gone: the status that explains an OOM kill (written to the status
    /// file, since the killed VMM could not), and the group removed. Returns the status to record.
    /// `waitStatus` is nil for a process the daemon is not the parent of.
    func releaseCgroup(statusFile: String, waitStatus: Int32?) -> RunStatus? {
        let status = RunStatus.read(from: statusFile)
        guard case .success(let cgroups) = environment.cgroups else { return status }
        let group = cgroups.group(for: name)
        var result = status
        // A child's wait status says SIGKILL; a re-attached process's end is known only by the counter.
        let killed = waitStatus.map { $0 & 0x7f == SIGKILL } ?? true
        let memory = group.memory()
        if status == nil, killed, let kills = memory.oomKills, kills > 0 {
            let limit = memory.limitBytes.map { "memtune hard_limit \(ByteSize.describe($0)) reached" } ?? "out of memory"
            let oom = RunStatus(outcome: .failed, detail: "\(Self.oomKilled): \(limit)", exitStatus: 128 + SIGKILL)
            try? oom.write(to: statusFile)
            result = oom
        }
        if !cgroups.remove(group) {
            environment.log("VM '\(name)': its cgroup \(group.path) stays: a process is still in it")
        }
        return result
    }
}
