#if canImport(Glibc)
import Glibc
#endif

/// A block device as cgroup files name it: "MAJ:MIN".
public struct DeviceNumber: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var major: UInt32
    public var minor: UInt32

    public init(major: UInt32, minor: UInt32) {
        self.major = major
        self.minor = minor
    }

    public var description: String { "\(major):\(minor)" }

    /// The block device node at `path` (stat's st_rdev); anything else is refused, since a
    /// throttle on a regular file or a character device would be silently void.
    public static func of(blockDevice path: String) throws(CgroupError) -> DeviceNumber {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw .badDevice(path: path, reason: String(cString: strerror(errno)))
        }
        guard info.st_mode & S_IFMT == S_IFBLK else {
            throw .badDevice(path: path, reason: "not a block device")
        }
        // gnu_dev_major/minor: the kernel's encoding of dev_t.
        let device = UInt64(info.st_rdev)
        let major = UInt32(truncatingIfNeeded: ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff))
        let minor = UInt32(truncatingIfNeeded: (device & 0xff) | ((device >> 12) & ~0xff))
        return DeviceNumber(major: major, minor: minor)
    }
}

/// One value written into a VM's group: `controller` is the hierarchy (v1) or the controller the
/// file belongs to (v2); `field` the definition field it applies, for error messages.
public struct CgroupWrite: Equatable, Sendable {
    public var controller: String
    public var file: String
    public var value: String
    public var field: String

    public init(_ controller: String, _ file: String, _ value: String, field: String) {
        self.controller = controller
        self.file = file
        self.value = value
        self.field = field
    }
}

/// What a definition's tunables become in cgroup files, as libvirt maps them; pure, so the
/// mapping is tested without a cgroup filesystem.
public enum CgroupSettings {
    /// cgroup v2 cpu.weight for v1-style shares, as systemd converts CPUShares= (1024 → 100,
    /// the defaults of both), clamped to cpu.weight's 1...10000.
    public static func cpuWeight(shares: UInt64) -> UInt64 {
        min(10_000, max(1, shares.multipliedReportingOverflow(by: 100).partialValue / 1024))
    }

    /// The writes, in order (a v1 memsw limit after the memory limit it must not be below).
    /// `devices` holds the device number of every `blkiotune.devices` path.
    public static func writes(cputune: CPUTune, memtune: MemoryTune, blkiotune: BlockIOTune,
                              devices: [String: DeviceNumber], version: Int) -> [CgroupWrite] {
        var writes: [CgroupWrite] = []
        let v2 = version == 2
        if let shares = cputune.shares {
            writes.append(v2 ? CgroupWrite("cpu", "cpu.weight", "\(cpuWeight(shares: shares))", field: "cputune.shares")
                             : CgroupWrite("cpu", "cpu.shares", "\(shares)", field: "cputune.shares"))
        }
        if cputune.period != nil || cputune.quota != nil {
            let period = cputune.period ?? CPUTune.defaultPeriod
            if v2 {
                writes.append(CgroupWrite("cpu", "cpu.max", "\(cputune.quota.map(String.init) ?? "max") \(period)",
                                          field: cputune.quota == nil ? "cputune.period" : "cputune.quota"))
            } else {
                writes.append(CgroupWrite("cpu", "cpu.cfs_period_us", "\(period)", field: "cputune.period"))
                writes.append(CgroupWrite("cpu", "cpu.cfs_quota_us", "\(cputune.quota.map(String.init) ?? "-1")",
                                          field: "cputune.quota"))
            }
        }
        if let hard = memtune.hardLimit {
            writes.append(CgroupWrite("memory", v2 ? "memory.max" : "memory.limit_in_bytes", "\(hard)", field: "memtune.hardLimit"))
        }
        if let soft = memtune.softLimit {
            // libvirt's v2 mapping: the soft limit is where reclaim starts (memory.high).
            writes.append(CgroupWrite("memory", v2 ? "memory.high" : "memory.soft_limit_in_bytes", "\(soft)",
                                      field: "memtune.softLimit"))
        }
        if let swap = memtune.swapHardLimit, let hard = memtune.hardLimit {
            // v1 limits memory plus swap; v2 limits swap alone: the difference (validated ≥ 0).
            writes.append(v2 ? CgroupWrite("memory", "memory.swap.max", "\(swap - hard)", field: "memtune.swapHardLimit")
                             : CgroupWrite("memory", "memory.memsw.limit_in_bytes", "\(swap)", field: "memtune.swapHardLimit"))
        }
        let io = v2 ? "io" : "blkio"
        if let weight = blkiotune.weight {
            writes.append(v2 ? CgroupWrite(io, "io.weight", "default \(weight)", field: "blkiotune.weight")
                             : CgroupWrite(io, "blkio.weight", "\(weight)", field: "blkiotune.weight"))
        }
        for (index, device) in blkiotune.devices.enumerated() {
            guard let number = devices[device.path] else { continue }
            let field = "blkiotune.devices[\(index)]"
            if let weight = device.weight {
                writes.append(CgroupWrite(io, v2 ? "io.weight" : "blkio.weight_device", "\(number) \(weight)", field: field + ".weight"))
            }
            if v2 {
                let limits = [("rbps", device.readBytesPerSecond), ("wbps", device.writeBytesPerSecond),
                              ("riops", device.readIOPS), ("wiops", device.writeIOPS)]
                    .compactMap { key, value in value.map { "\(key)=\($0)" } }
                if !limits.isEmpty {
                    writes.append(CgroupWrite(io, "io.max", "\(number) " + limits.joined(separator: " "), field: field))
                }
            } else {
                for (file, value, name) in [("blkio.throttle.read_bps_device", device.readBytesPerSecond, "readBytesSec"),
                                            ("blkio.throttle.write_bps_device", device.writeBytesPerSecond, "writeBytesSec"),
                                            ("blkio.throttle.read_iops_device", device.readIOPS, "readIopsSec"),
                                            ("blkio.throttle.write_iops_device", device.writeIOPS, "writeIopsSec")] {
                    guard let value else { continue }
                    writes.append(CgroupWrite(io, file, "\(number) \(value)", field: field + "." + name))
                }
            }
        }
        return writes
    }
}
