import Foundation
import Testing
@testable import Manager

/// A fake host tree in a temporary directory: /proc/self/mountinfo and cgroup directories holding
/// the files the kernel would show, so VMCgroups runs exactly as on a host.
final class FakeCgroupTree {
    let root = "/tmp/vcg-\(UUID().uuidString.prefix(8))"

    /// The mount points exist, as on a host.
    init(mountinfo: String) throws {
        try write(mountinfo, to: "/proc/self/mountinfo")
        for mount in CgroupLayout.parseMountinfo(mountinfo) {
            try FileManager.default.createDirectory(atPath: root + mount.point, withIntermediateDirectories: true)
        }
    }

    func write(_ text: String, to path: String) throws {
        let url = URL(fileURLWithPath: root + path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: false, encoding: .utf8)
    }

    /// Empty files, as the kernel makes them in a new group.
    func touch(_ directory: String, _ files: [String]) throws {
        for file in files { try write("", to: directory + "/" + file) }
    }

    func read(_ path: String) -> String? { try? String(contentsOfFile: root + path, encoding: .utf8) }
    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: root + path) }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    /// This development host's shape: v1 controllers, cgroup2 at unified without controllers.
    static let hybridMountinfo = """
        22 1 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
        25 22 0:23 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
        26 25 0:24 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
        27 25 0:25 / /sys/fs/cgroup/systemd rw,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
        28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
        29 25 0:27 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
        30 25 0:28 / /sys/fs/cgroup/blkio rw,relatime shared:13 - cgroup cgroup rw,blkio
        31 25 0:29 / /sys/fs/cgroup/pids rw,relatime shared:14 - cgroup cgroup rw,pids
        32 25 0:30 / /sys/fs/cgroup/cpuset rw,relatime shared:15 - cgroup cgroup rw,cpuset
        """

    static let unifiedMountinfo = """
        22 1 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
        25 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate
        """
}

@Suite("VM cgroups")
struct CgroupTests {
    /// Every tunable set: what each version's files must receive.
    static let tuned: VMDefinition = {
        var definition = VMDefinition(name: "vm1", memory: 256 << 20, os: OSBoot(kernel: "/k"))
        definition.cputune = CPUTune(shares: 2048, period: 100_000, quota: 50_000)
        definition.memtune = MemoryTune(hardLimit: 1 << 30, softLimit: 256 << 20, swapHardLimit: 2 << 30)
        definition.blkiotune = BlockIOTune(weight: 800, devices: [
            BlockIODevice(path: "/dev/sda", weight: 1000, writeBytesPerSecond: 10 << 20, readIOPS: 2000),
            BlockIODevice(path: "/dev/vdb", readBytesPerSecond: 1 << 20),
        ])
        return definition
    }()

    static let devices: [String: DeviceNumber] = [
        "/dev/sda": DeviceNumber(major: 8, minor: 0), "/dev/vdb": DeviceNumber(major: 253, minor: 16),
    ]

    static func cgroups(_ tree: FakeCgroupTree) throws -> VMCgroups {
        var cgroups = try VMCgroups.host(root: tree.root)
        cgroups.resolveDevice = { path in
            guard let number = Self.devices[path] else { throw CgroupError.badDevice(path: path, reason: "not a block device") }
            return number
        }
        return cgroups
    }

    @Test(arguments: [(UInt64(1024), UInt64(100)), (2, 1), (10, 1), (512, 50), (5000, 488), (262_144, 10_000)])
    func sharesBecomeWeightAsSystemdConvertsThem(shares: UInt64, weight: UInt64) {
        #expect(CgroupSettings.cpuWeight(shares: shares) == weight)
    }

    @Test func v2WritesAreLibvirtsMapping() {
        let writes = CgroupSettings.writes(cputune: Self.tuned.cputune, memtune: Self.tuned.memtune,
                                           blkiotune: Self.tuned.blkiotune, devices: Self.devices, version: 2)
        #expect(writes.map { "\($0.file)=\($0.value)" } == [
            "cpu.weight=200", "cpu.max=50000 100000",
            "memory.max=1073741824", "memory.high=268435456",
            "memory.swap.max=1073741824",  // swap_hard_limit minus hard_limit: swap alone
            "io.weight=default 800", "io.weight=8:0 1000",
            "io.max=8:0 wbps=10485760 riops=2000", "io.max=253:16 rbps=1048576",
        ])
    }

    @Test func v1WritesAreLibvirtsMapping() {
        let writes = CgroupSettings.writes(cputune: Self.tuned.cputune, memtune: Self.tuned.memtune,
                                           blkiotune: Self.tuned.blkiotune, devices: Self.devices, version: 1)
        #expect(writes.map { "\($0.controller):\($0.file)=\($0.value)" } == [
            "cpu:cpu.shares=2048", "cpu:cpu.cfs_period_us=100000", "cpu:cpu.cfs_quota_us=50000",
            "memory:memory.limit_in_bytes=1073741824", "memory:memory.soft_limit_in_bytes=268435456",
            "memory:memory.memsw.limit_in_bytes=2147483648",
            "blkio:blkio.weight=800", "blkio:blkio.weight_device=8:0 1000",
            "blkio:blkio.throttle.write_bps_device=8:0 10485760", "blkio:blkio.throttle.read_iops_device=8:0 2000",
            "blkio:blkio.throttle.read_bps_device=253:16 1048576",
        ])
    }

    @Test func periodAloneIsAnUnlimitedQuotaOverThatPeriod() {
        let v2 = CgroupSettings.writes(cputune: CPUTune(period: 20_000), memtune: MemoryTune(), blkiotune: BlockIOTune(),
                                       devices: [:], version: 2)
        #expect(v2.map(\.value) == ["max 20000"])
        let v1 = CgroupSettings.writes(cputune: CPUTune(quota: 30_000), memtune: MemoryTune(), blkiotune: BlockIOTune(),
                                       devices: [:], version: 1)
        #expect(v1.map(\.value) == ["100000", "30000"], "the kernel's default period, written")
    }

    @Test func layoutsAreDetectedFromMountinfo() throws {
        let hybrid = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let cpu = CgroupLayout.Hierarchy(mount: hybrid.root + "/sys/fs/cgroup/cpu,cpuacct", root: "/")
        #expect(try CgroupLayout.detect(root: hybrid.root) == .v1([
            "cpu": cpu, "cpuacct": cpu,
            "memory": CgroupLayout.Hierarchy(mount: hybrid.root + "/sys/fs/cgroup/memory", root: "/"),
            "blkio": CgroupLayout.Hierarchy(mount: hybrid.root + "/sys/fs/cgroup/blkio", root: "/"),
            "pids": CgroupLayout.Hierarchy(mount: hybrid.root + "/sys/fs/cgroup/pids", root: "/"),
        ]), "the hybrid host's v1 hierarchies, not its empty cgroup2")

        let unified = try FakeCgroupTree(mountinfo: FakeCgroupTree.unifiedMountinfo)
        try unified.write("cpuset cpu io memory hugetlb pids rdma\n", to: "/sys/fs/cgroup/cgroup.controllers")
        #expect(try CgroupLayout.detect(root: unified.root)
                == .v2(mount: unified.root + "/sys/fs/cgroup", controllers: ["cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma"]))

        let none = try FakeCgroupTree(mountinfo: "22 1 0:20 / /sys rw shared:7 - sysfs sysfs rw\n")
        #expect(throws: CgroupError.unavailable(reason: "no cgroup filesystem is mounted")) { try CgroupLayout.detect(root: none.root) }
        #expect(throws: CgroupError.unavailable(reason: "cannot read /nonexistent/proc/self/mountinfo")) {
            try CgroupLayout.detect(root: "/nonexistent")
        }
    }

    @Test func mountPointsWithEscapedSpacesAreRead() {
        let mounts = CgroupLayout.parseMountinfo("40 25 0:40 /sub /mnt/my\\040cg rw shared:1 opt:2 - cgroup2 none rw\n")
        #expect(mounts == [CgroupLayout.Mount(root: "/sub", point: "/mnt/my cg", type: "cgroup2", superOptions: ["rw"])])
        #expect(CgroupLayout.parseMountinfo("garbage\n1 2 3 - x\n").isEmpty)
    }

    @Test func v2GroupGetsControllersEnabledAndEveryLimit() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.unifiedMountinfo)
        try tree.write("cpuset cpu io memory pids\n", to: "/sys/fs/cgroup/cgroup.controllers")
        try tree.touch("/sys/fs/cgroup", ["cgroup.subtree_control"])
        try tree.touch("/sys/fs/cgroup/vireo", ["cgroup.subtree_control"])
        let files = ["cgroup.procs", "cpu.weight", "cpu.max", "memory.max", "memory.high", "memory.swap.max", "io.weight", "io.max"]
        try tree.touch("/sys/fs/cgroup/vireo/vm1", files)
        let group = try Self.cgroups(tree).create(for: Self.tuned)

        #expect(tree.read("/sys/fs/cgroup/cgroup.subtree_control") == "+cpu +memory +io +pids")
        #expect(tree.read("/sys/fs/cgroup/vireo/cgroup.subtree_control") == "+cpu +memory +io +pids")
        let vm = "/sys/fs/cgroup/vireo/vm1/"
        #expect(tree.read(vm + "cpu.weight") == "200")
        #expect(tree.read(vm + "cpu.max") == "50000 100000")
        #expect(tree.read(vm + "memory.max") == "1073741824")
        #expect(tree.read(vm + "memory.high") == "268435456")
        #expect(tree.read(vm + "memory.swap.max") == "1073741824")
        // One value per write(): the file shows the last, as the kernel's does for io.max's lines.
        #expect(tree.read(vm + "io.weight") == "8:0 1000")
        #expect(tree.read(vm + "io.max") == "253:16 rbps=1048576")
        #expect(group.procsFiles == [tree.root + vm + "cgroup.procs"])
        #expect(group.path == "/vireo/vm1")
    }

    @Test func v1GroupIsOneDirectoryPerHierarchy() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let cpu = "/sys/fs/cgroup/cpu,cpuacct/vireo/vm1", memory = "/sys/fs/cgroup/memory/vireo/vm1"
        let blkio = "/sys/fs/cgroup/blkio/vireo/vm1", pids = "/sys/fs/cgroup/pids/vireo/vm1"
        try tree.touch(cpu, ["cgroup.procs", "cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"])
        try tree.touch(memory, ["cgroup.procs", "memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes"])
        try tree.touch(blkio, ["cgroup.procs", "blkio.weight", "blkio.weight_device", "blkio.throttle.read_bps_device",
                               "blkio.throttle.write_bps_device", "blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device"])
        let group = try Self.cgroups(tree).create(for: Self.tuned)

        #expect(tree.read(cpu + "/cpu.shares") == "2048")
        #expect(tree.read(cpu + "/cpu.cfs_period_us") == "100000")
        #expect(tree.read(cpu + "/cpu.cfs_quota_us") == "50000")
        #expect(tree.read(memory + "/memory.limit_in_bytes") == "1073741824")
        #expect(tree.read(memory + "/memory.soft_limit_in_bytes") == "268435456")
        #expect(tree.read(memory + "/memory.memsw.limit_in_bytes") == "2147483648")
        #expect(tree.read(blkio + "/blkio.weight") == "800")
        #expect(tree.read(blkio + "/blkio.throttle.write_bps_device") == "8:0 10485760")
        #expect(tree.read(blkio + "/blkio.throttle.read_bps_device") == "253:16 1048576")
        #expect(tree.exists(pids), "pids: no limit, but the group is made so usage is visible")
        #expect(!tree.exists("/sys/fs/cgroup/cpuset/vireo"), "cpuset is not used (it needs cpus and mems set first)")
        #expect(group.procsFiles == [blkio, cpu, memory, pids].map { tree.root + $0 + "/cgroup.procs" })
    }

    @Test func weightsGoToBFQsFilesWhereThePlainOnesAreAbsent() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let blkio = "/sys/fs/cgroup/blkio/vireo/vm1"
        try tree.touch(blkio, ["blkio.bfq.weight", "blkio.bfq.weight_device"])
        var definition = VMDefinition(name: "vm1", memory: 64 << 20, os: OSBoot(kernel: "/k"))
        definition.blkiotune = BlockIOTune(weight: 300, devices: [BlockIODevice(path: "/dev/sda", weight: 700)])
        _ = try Self.cgroups(tree).create(for: definition)
        #expect(tree.read(blkio + "/blkio.bfq.weight") == "300")
        #expect(tree.read(blkio + "/blkio.bfq.weight_device") == "8:0 700")
        #expect(!tree.exists(blkio + "/blkio.weight"))

        // Neither: the weight cannot apply, and the start says which file is missing.
        let bare = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let path = bare.root + blkio + "/blkio.weight"
        #expect(throws: CgroupError.cannotWrite(path: path, value: "300", field: "blkiotune.weight", reason: "No such file or directory")) {
            try Self.cgroups(bare).create(for: definition)
        }
    }

    @Test func aVMWithoutLimitsStillGetsItsGroupAndRemovalTakesItAway() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let cgroups = try Self.cgroups(tree)
        let plain = VMDefinition(name: "plain", memory: 64 << 20, os: OSBoot(kernel: "/k"))
        let group = try cgroups.create(for: plain)
        let hierarchies = ["cpu,cpuacct", "memory", "blkio", "pids"]
        for hierarchy in hierarchies { #expect(tree.exists("/sys/fs/cgroup/\(hierarchy)/vireo/plain")) }
        #expect(cgroups.remove(group))
        for hierarchy in hierarchies {
            #expect(!tree.exists("/sys/fs/cgroup/\(hierarchy)/vireo/plain"))
            #expect(tree.exists("/sys/fs/cgroup/\(hierarchy)/vireo"), "the partition is shared and stays")
        }
        #expect(cgroups.remove(group), "removing a group that is gone is done, not an error")
    }

    @Test func aVMNamedLikeAKernelFileIsRefusedNotJoinedToAFile() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.unifiedMountinfo)
        try tree.touch("/sys/fs/cgroup/vireo", ["cgroup.procs", "memory.max"])
        let definition = VMDefinition(name: "memory.max", memory: 64 << 20, os: OSBoot(kernel: "/k"))
        #expect(throws: CgroupError.cannotCreate(path: tree.root + "/sys/fs/cgroup/vireo/memory.max",
                                                 reason: "a file of that name exists (rename the VM)")) {
            try Self.cgroups(tree).create(for: definition)
        }
    }

    @Test func aLimitTheHostCannotApplyFailsBeforeAnythingIsMade() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.unifiedMountinfo)
        try tree.write("cpu pids\n", to: "/sys/fs/cgroup/cgroup.controllers")
        var definition = VMDefinition(name: "vm1", memory: 64 << 20, os: OSBoot(kernel: "/k"))
        definition.memtune.hardLimit = 32 << 20
        #expect(throws: CgroupError.missingController("memory", field: "memtune.hardLimit")) {
            try Self.cgroups(tree).create(for: definition)
        }
        #expect(!tree.exists("/sys/fs/cgroup/vireo"))
        #expect(CgroupError.missingController("memory", field: "memtune.hardLimit").description
                == "memtune.hardLimit needs the cgroup 'memory' controller, which this host does not offer")
    }

    @Test func aFailedWriteNamesTheFieldAndRemovesTheNewGroup() throws {
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        var definition = VMDefinition(name: "vm1", memory: 64 << 20, os: OSBoot(kernel: "/k"))
        definition.memtune = MemoryTune(hardLimit: 32 << 20, swapHardLimit: 64 << 20)
        // A kernel without swap accounting has no memsw file.
        try tree.touch("/sys/fs/cgroup/memory/vireo/vm1", ["memory.limit_in_bytes"])
        let memsw = tree.root + "/sys/fs/cgroup/memory/vireo/vm1/memory.memsw.limit_in_bytes"
        #expect(throws: CgroupError.cannotWrite(path: memsw, value: "67108864", field: "memtune.swapHardLimit",
                                                reason: "No such file or directory")) {
            try Self.cgroups(tree).create(for: definition)
        }
        #expect(!tree.exists("/sys/fs/cgroup/pids/vireo/vm1"), "the directories it made are gone")
    }

    @Test func blkiotuneRefusesWhatIsNotABlockDevice() throws {
        #expect(throws: CgroupError.badDevice(path: "/dev/null", reason: "not a block device")) {
            try DeviceNumber.of(blockDevice: "/dev/null")
        }
        #expect(throws: CgroupError.badDevice(path: "/nonexistent", reason: "No such file or directory")) {
            try DeviceNumber.of(blockDevice: "/nonexistent")
        }
        // A block device node, where the host has one: its numbers as ls -l shows them.
        let loop = "/dev/loop0"
        var info = stat()
        if stat(loop, &info) == 0, info.st_mode & S_IFMT == S_IFBLK {
            #expect(try DeviceNumber.of(blockDevice: loop) == DeviceNumber(major: 7, minor: 0))
        }
        let tree = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        var definition = VMDefinition(name: "vm1", memory: 64 << 20, os: OSBoot(kernel: "/k"))
        definition.blkiotune.devices = [BlockIODevice(path: "/dev/null", readIOPS: 10)]
        #expect(throws: CgroupError.badDevice(path: "/dev/null", reason: "not a block device")) {
            try VMCgroups.host(root: tree.root).create(for: definition)
        }
        #expect(!tree.exists("/sys/fs/cgroup/memory/vireo"))
    }

    @Test func membershipIsReadFromProcPidCgroup() throws {
        let hybrid = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let v1 = try VMCgroups.host(root: hybrid.root).group(for: "vm1")
        try hybrid.write("9:pids:/vireo/vm1\n8:blkio:/vireo/vm1\n4:memory:/vireo/vm1\n2:cpu,cpuacct:/vireo/vm1\n1:name=systemd:/\n0::/\n",
                         to: "/proc/42/cgroup")
        #expect(v1.holds(pid: 42))
        try hybrid.write("9:pids:/vireo/vm1\n8:blkio:/vireo/vm1\n4:memory:/\n2:cpu,cpuacct:/vireo/vm1\n", to: "/proc/43/cgroup")
        #expect(!v1.holds(pid: 43), "out of the memory group: its limit would not apply")
        #expect(!v1.holds(pid: 44), "no such process")

        let unified = try FakeCgroupTree(mountinfo: FakeCgroupTree.unifiedMountinfo)
        let v2 = try VMCgroups.host(root: unified.root).group(for: "vm1")
        try unified.write("0::/vireo/vm1\n", to: "/proc/42/cgroup")
        try unified.write("0::/vireo/vm10\n", to: "/proc/43/cgroup")
        #expect(v2.holds(pid: 42) && !v2.holds(pid: 43))
    }

    @Test func memoryUseLimitAndOOMKillsAreReadForBothVersions() throws {
        let unified = try FakeCgroupTree(mountinfo: FakeCgroupTree.unifiedMountinfo)
        let vm2 = "/sys/fs/cgroup/vireo/vm1/"
        try unified.write("73400320\n", to: vm2 + "memory.current")
        try unified.write("67108864\n", to: vm2 + "memory.max")
        try unified.write("low 0\nhigh 0\nmax 31\noom 1\noom_kill 1\noom_group_kill 0\n", to: vm2 + "memory.events")
        #expect(try VMCgroups.host(root: unified.root).group(for: "vm1").memory()
                == CgroupMemory(usageBytes: 73_400_320, limitBytes: 64 << 20, oomKills: 1))
        try unified.write("max\n", to: vm2 + "memory.max")
        #expect(try VMCgroups.host(root: unified.root).group(for: "vm1").memory().limitBytes == nil)

        let hybrid = try FakeCgroupTree(mountinfo: FakeCgroupTree.hybridMountinfo)
        let vm1 = "/sys/fs/cgroup/memory/vireo/vm1/"
        try hybrid.write("1048576\n", to: vm1 + "memory.usage_in_bytes")
        try hybrid.write("9223372036854771712\n", to: vm1 + "memory.limit_in_bytes")
        try hybrid.write("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", to: vm1 + "memory.oom_control")
        #expect(try VMCgroups.host(root: hybrid.root).group(for: "vm1").memory()
                == CgroupMemory(usageBytes: 1 << 20, limitBytes: nil, oomKills: 2), "v1's 'no limit' number is no limit")
    }
}
