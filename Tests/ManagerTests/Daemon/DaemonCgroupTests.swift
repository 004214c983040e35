import VMContract
import Foundation
import Testing
@testable import Manager

/// The daemon puts each VM's process in a cgroup of its own with its definition's limits.
@Suite(.serialized) struct DaemonCgroupTests {
    /// With swap, a memory limit alone pushes pages out instead of killing: then swap is limited too.
    static var hostHasSwap: Bool { (readSmallFile("/proc/swaps") ?? "").split(separator: "\n").count > 1 }

    /// A host without usable cgroups (the in-process daemon's tree has none): a VM without limits
    /// runs (its launch names no group), one with limits is refused with the reason.
    @Test func withoutCgroupsOnlyVMsThatAskForNoLimitRun() throws {
        let fake = try FakeVMMDaemon()
        try fake.define("plain")
        #expect(try fake.client.request("POST", "/v1/vms/plain/start").status == 200)
        #expect(try fake.launchSpec("plain").cgroupProcs == nil)

        try fake.define("limited", extraYAML: "memtune: {hardLimit: 64MiB}\ncputune: {quota: 50000}\n")
        let response = try fake.client.request("POST", "/v1/vms/limited/start")
        #expect(response.status == 500)
        let mountinfo = fake.server.directory + "/no-cgroups/proc/self/mountinfo"
        #expect(response.errorMessage == "failed to start domain 'limited': its cputune and memtune need the VM's own cgroup, but cgroups unavailable: cannot read \(mountinfo)")
        #expect(try fake.state("limited").state == "shutoff", "nothing started")
        #expect(!FileManager.default.fileExists(atPath: fake.vmDirectory("limited") + "/launch.json"))
    }

    /// A VMM that does not join its group (the fake one ignores cgroupProcs, as an older vireo
    /// would): the daemon's own /proc/PID/cgroup check refuses it when the definition sets limits,
    /// and lets a VM without limits run, saying so.
    @Test func aVMMOutsideItsGroupIsRefusedWhenItHasLimits() throws {
        guard let cgroups = try? VMCgroups.host(), case .v1(let hierarchies) = cgroups.layout,
              let memory = hierarchies["memory"], access(memory.mount, W_OK) == 0 else {
            print("skipped: needs writable cgroup v1 hierarchies (root on a v1 or hybrid host)")
            return
        }
        let partition = "vireo-test-\(UUID().uuidString.prefix(8))"
        defer { DaemonProcess.removeCgroups(partition: partition) }
        let fake = try FakeVMMDaemon(cgroupPartition: partition)
        try fake.define("limited", extraYAML: "cputune: {shares: 512}\n")
        let response = try fake.client.request("POST", "/v1/vms/limited/start")
        #expect(response.status == 500)
        #expect(response.errorMessage == "failed to start domain 'limited': its process is not in its cgroup /\(partition)/limited, so its limits would not apply")
        #expect(try fake.state("limited").state == "shutoff")
        #expect(try fake.launchSpec("limited").cgroupProcs?.contains(memory.mount + "/\(partition)/limited/cgroup.procs") == true)

        try fake.define("plain")
        #expect(try fake.client.request("POST", "/v1/vms/plain/start").status == 200, "no limit to lose: it runs")
        #expect(try fake.client.request("POST", "/v1/vms/plain/destroy").status == 200)
        #expect(!FileManager.default.fileExists(atPath: memory.mount + "/\(partition)/plain"))
        #expect(!FileManager.default.fileExists(atPath: memory.mount + "/\(partition)/limited"))
    }

    /// This host's cgroups (root, v1 memory and cpu hierarchies), a real daemon and KVM guests:
    /// the VMM is in its group with the limits written, the group goes with the VM, and a guest
    /// that touches more than memtune's hard limit gets its VMM killed, reported as such.
    @Test func realVMIsPlacedLimitedAndOOMKilledOnThisHostsCgroups() throws {
        guard let cgroups = try? VMCgroups.host(), case .v1(let hierarchies) = cgroups.layout,
              let memory = hierarchies["memory"], let cpu = hierarchies["cpu"], access(memory.mount, W_OK) == 0,
              FileManager.default.fileExists(atPath: "/dev/kvm") else {
            print("skipped: needs /dev/kvm and writable cgroup v1 memory and cpu hierarchies (root on a v1 or hybrid host); cgroup v2 is tests/e2e/cgroups-v2.sh")
            return
        }
        let daemon = try DaemonProcess()
        try daemon.start()
        let partition = daemon.cgroupPartition

        // Limits within what the guest needs: it runs, placed and limited.
        let limited = """
            name: limited
            memory: 32M
            os:
              kernel: \(DaemonProcess.echoGuest)
            onReboot: destroy
            cputune: {shares: 512, period: 50000, quota: 25000}
            memtune: {hardLimit: 256MiB, softLimit: 128MiB}
            """
        #expect(try daemon.client.request("POST", "/v1/vms", body: Array(limited.utf8)).status == 201)
        let start = try daemon.client.request("POST", "/v1/vms/limited/start")
        #expect(start.status == 200, "\(start.text)")
        #expect(daemon.waitForConsole("limited", toContain: "echo: ready"))
        let pid = try #require(try daemon.summary("limited").id)
        let procCgroup = try String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8)
        for controller in ["memory", "cpu", "blkio", "pids"] {
            #expect(procCgroup.split(separator: "\n").contains { line in
                let fields = line.split(separator: ":", maxSplits: 2)
                return fields.count == 3 && fields[1].split(separator: ",").contains(Substring(controller))
                    && fields[2] == "/\(partition)/limited"
            }, "\(controller) in \(procCgroup)")
        }
        let memoryGroup = memory.mount + "/\(partition)/limited"
        let cpuGroup = cpu.mount + "/\(partition)/limited"
        func read(_ path: String) -> String? { readSmallFile(path)?.trimmingCharacters(in: .whitespacesAndNewlines) }
        #expect(read(memoryGroup + "/memory.limit_in_bytes") == "\(256 << 20)")
        #expect(read(memoryGroup + "/memory.soft_limit_in_bytes") == "\(128 << 20)")
        #expect(read(cpuGroup + "/cpu.shares") == "512")
        #expect(read(cpuGroup + "/cpu.cfs_period_us") == "50000")
        #expect(read(cpuGroup + "/cpu.cfs_quota_us") == "25000")
        #expect(read(memoryGroup + "/cgroup.procs")?.split(separator: "\n").contains("\(pid)") == true)
        // Guest RAM is charged where the VMM lives: the group holds the echo guest's pages.
        let stats = try JSONDecoder().decode(Manager.VMStats.self, from: Data(try daemon.client.request("GET", "/v1/vms/limited/stats").body))
        #expect(stats.cgroup == "/\(partition)/limited")
        #expect(stats.cgroupMemoryLimitBytes == 256 << 20)
        #expect((stats.cgroupMemoryBytes ?? 0) > 1 << 20, "\(String(describing: stats.cgroupMemoryBytes))")
        let metrics = try daemon.client.request("GET", "/metrics").text
        #expect(metrics.contains("vireo_vm_cgroup_memory_limit_bytes{name=\"limited\",uuid=") && metrics.contains(" \(256 << 20)\n"))
        #expect(metrics.contains("vireo_vm_cgroup_memory_bytes{name=\"limited\",uuid="))

        #expect(try daemon.client.request("POST", "/v1/vms/limited/destroy").status == 200)
        #expect(!FileManager.default.fileExists(atPath: memoryGroup), "the group goes with the process")
        #expect(!FileManager.default.fileExists(atPath: cpuGroup))

        // blkiotune: throttles on a block device node, as the kernel lists them; anything else refused.
        let notBlock = "name: notblock\nmemory: 32M\nos: {kernel: \(DaemonProcess.echoGuest)}\nblkiotune: {devices: [{path: /dev/null, readIopsSec: 10}]}\n"
        #expect(try daemon.client.request("POST", "/v1/vms", body: Array(notBlock.utf8)).status == 201)
        let refused = try daemon.client.request("POST", "/v1/vms/notblock/start")
        #expect(refused.status == 500 && refused.errorMessage == "failed to start domain 'notblock': blkiotune device /dev/null: not a block device")
        var loop = stat()
        if let blkio = hierarchies["blkio"], stat("/dev/loop0", &loop) == 0, loop.st_mode & S_IFMT == S_IFBLK {
            let throttled = """
                name: throttled
                memory: 32M
                os: {kernel: \(DaemonProcess.echoGuest)}
                onReboot: destroy
                blkiotune: {devices: [{path: /dev/loop0, readBytesSec: 1MiB, writeIopsSec: 100}]}
                """
            #expect(try daemon.client.request("POST", "/v1/vms", body: Array(throttled.utf8)).status == 201)
            let started = try daemon.client.request("POST", "/v1/vms/throttled/start")
            #expect(started.status == 200, "\(started.text)")
            let group = blkio.mount + "/\(partition)/throttled"
            #expect(read(group + "/blkio.throttle.read_bps_device") == "7:0 1048576")
            #expect(read(group + "/blkio.throttle.write_iops_device") == "7:0 100")
            #expect(try daemon.client.request("POST", "/v1/vms/throttled/destroy").status == 200)
        }

        // 128 MiB of guest RAM, every page of it touched, against a 64 MiB hard limit.
        let greedy = """
            name: greedy
            memory: 128M
            os:
              kernel: \(DaemonProcess.guestDirectory)/mb-touch.elf
            onReboot: destroy
            memtune: {hardLimit: 64MiB\(Self.hostHasSwap ? ", swapHardLimit: 64MiB" : "")}
            """
        #expect(try daemon.client.request("POST", "/v1/vms", body: Array(greedy.utf8)).status == 201)
        let greedyStart = try daemon.client.request("POST", "/v1/vms/greedy/start")
        #expect(greedyStart.status == 200 || greedyStart.text.contains("OOM"), "\(greedyStart.text)")
        #expect(daemon.waitForState("greedy", "shutoff", seconds: 30), "\(daemon.daemonLog)")
        #expect(try daemon.state("greedy") == VMStateBody(state: "shutoff", reason: "crashed"))
        let after = try JSONDecoder().decode(Manager.VMStats.self, from: Data(try daemon.client.request("GET", "/v1/vms/greedy/stats").body))
        #expect(after.lastExit == "killed by the host's OOM killer: memtune hard_limit 64MiB reached")
        #expect(daemon.daemonLog.contains("VM 'greedy'") && daemon.daemonLog.contains("killed by the host's OOM killer"))
        #expect(!FileManager.default.fileExists(atPath: memory.mount + "/\(partition)/greedy"))
        let console = try daemon.client.request("GET", "/v1/vms/greedy/console").text
        #expect(console.contains("touch: 32 MiB") && !console.contains("touch: done"), "\(console)")
    }
}
