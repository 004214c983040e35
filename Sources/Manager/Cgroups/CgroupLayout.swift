import VMContract
/// Where a host's cgroup controllers are: one cgroup2 hierarchy (v2), or one v1 hierarchy per
/// controller (legacy and hybrid hosts, where cgroup2 may be mounted too but holds none of them).
/// libvirt supports both; so does Vireo, behind `VMCgroups`.
public enum CgroupLayout: Equatable, Sendable {
    /// cgroup2 at `mount`; `controllers` are what its root's cgroup.controllers offers.
    case v2(mount: String, controllers: Set<String>)
    /// v1: each controller Vireo uses (cpu, cpuacct, memory, blkio, pids) and its hierarchy.
    case v1([String: Hierarchy])

    /// A mounted v1 hierarchy: where it is mounted, and which cgroup path the mount shows (its
    /// root, "/" on a host; /proc/PID/cgroup names groups from the hierarchy's real root).
    public struct Hierarchy: Equatable, Sendable {
        public var mount: String
        public var root: String
    }

    /// The v1 controllers Vireo places VMs in.
    public static let v1Controllers = ["cpu", "cpuacct", "memory", "blkio", "pids"]
    /// The v2 controllers Vireo enables for its groups.
    public static let v2Controllers = ["cpu", "memory", "io", "pids"]

    public var version: Int {
        switch self {
        case .v2: 2
        case .v1: 1
        }
    }

    /// The layout /proc/self/mountinfo describes (`root` is a prefix for every path, "" on a real
    /// host; tests point it at a fake tree). A v1 memory or cpu hierarchy wins over cgroup2, as on
    /// hybrid hosts whose cgroup2 (/sys/fs/cgroup/unified) has no controllers of its own.
    public static func detect(root: String = "") throws(CgroupError) -> CgroupLayout {
        guard let text = readSmallFile(root + "/proc/self/mountinfo", limit: 1 << 20) else {
            throw .unavailable(reason: "cannot read \(root)/proc/self/mountinfo")
        }
        let mounts = parseMountinfo(text)
        var v1: [String: Hierarchy] = [:]
        var v2: String?
        for mount in mounts {
            switch mount.type {
            case "cgroup":
                for option in mount.superOptions where v1Controllers.contains(option) && v1[option] == nil {
                    v1[option] = Hierarchy(mount: root + mount.point, root: mount.root)
                }
            case "cgroup2":
                // /sys/fs/cgroup is the usual place; keep the first other one only as a fallback.
                if v2 == nil || mount.point == "/sys/fs/cgroup" { v2 = root + mount.point }
            default: break
            }
        }
        if v1["memory"] != nil || v1["cpu"] != nil { return .v1(v1) }
        if let v2 {
            let listed = readSmallFile(v2 + "/cgroup.controllers") ?? ""
            return .v2(mount: v2, controllers: Set(listed.split(whereSeparator: \.isWhitespace).map(String.init)))
        }
        throw .unavailable(reason: "no cgroup filesystem is mounted")
    }

    struct Mount: Equatable {
        var root: String
        var point: String
        var type: String
        var superOptions: [String]
    }

    /// proc(5): "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS".
    static func parseMountinfo(_ text: String) -> [Mount] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            // Six fixed fields before the optional ones; TYPE, SOURCE and SUPEROPTIONS after "-".
            guard let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 3 < fields.count else { return nil }
            let superOptions = fields[dash + 3].split(separator: ",").map(String.init)
            return Mount(root: unescape(fields[3]), point: unescape(fields[4]), type: fields[dash + 1], superOptions: superOptions)
        }
    }

    /// Mount paths escape space, tab, newline and backslash as \ooo.
    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
               let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
