import Boot
import CCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Host-decompressed bzImage payloads kept on disk as `<directory>/<sha256 of the bzImage>.elf`,
/// so a second boot of the same kernel skips decompression (4-5 s for an xz kernel where host
/// user space is emulated). Boot re-checks every entry it gets from here; this type only keeps
/// the files: written atomically (temp file + rename), at most `maximumEntries` of them, the
/// least recently used evicted first. Any failure just means no caching, reported as a note.
public struct KernelPayloadCacheDirectory: BzImagePayloadCache {
    public let directory: String
    public let maximumEntries: Int

    /// A distro kernel's ELF is ~60 MiB: eight of them stay under half a GiB.
    public static let defaultMaximumEntries = 8
    /// Set to `off` (or `0`, `no`, `false`) to decompress at every boot, e.g. to measure that path.
    public static let switchVariable = "VIREO_KERNEL_CACHE"

    public init(directory: String, maximumEntries: Int = defaultMaximumEntries) {
        self.directory = directory
        self.maximumEntries = max(1, maximumEntries)
    }

    /// The cache `vireo run` uses: `${VIREO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vireo}/kernels`,
    /// or nil with the reason there is none.
    public static func configured(environment: [String: String], disabled: Bool = false)
        -> (cache: KernelPayloadCacheDirectory?, note: String) {
        if disabled { return (nil, "kernel payload cache off (--no-kernel-cache)") }
        if let value = environment[switchVariable], ["off", "0", "no", "false"].contains(value.lowercased()) {
            return (nil, "kernel payload cache off (\(switchVariable)=\(value))")
        }
        let base: String
        if let explicit = environment["VIREO_CACHE_DIR"], !explicit.isEmpty {
            base = explicit
        } else if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") {
            base = xdg + "/vireo"
        } else if let home = environment["HOME"], home.hasPrefix("/") {
            base = home + "/.cache/vireo"
        } else {
            return (nil, "kernel payload cache off (no VIREO_CACHE_DIR, XDG_CACHE_HOME or HOME)")
        }
        let cache = KernelPayloadCacheDirectory(directory: base + "/kernels")
        return (cache, "kernel payload cache in \(cache.directory)")
    }

    public func key(for bzImage: [UInt8]) -> PayloadCacheKey? {
        guard let digest = Self.sha256(bzImage) else { return nil }
        let hex = digest.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
        return PayloadCacheKey(digest: hex, label: "sha256 \(hex.prefix(8))…")
    }

    func entryPath(_ key: PayloadCacheKey) -> String { directory + "/" + key.digest + ".elf" }

    public func load(_ key: PayloadCacheKey, maximumSize: Int) -> PayloadCacheLookup {
        let path = entryPath(key)
        let fd = Self.retrying { open(path, O_RDONLY | O_CLOEXEC) }
        // No entry, or no cache directory yet (ENOTDIR: a path component is a file): a plain miss.
        guard fd >= 0 else { return errno == ENOENT || errno == ENOTDIR ? .miss : .unreadable("\(path): \(Self.errorText())") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .unreadable("\(path): \(Self.errorText())") }
        guard info.st_mode & S_IFMT == S_IFREG else { return .unreadable("\(path) is not a regular file") }
        guard info.st_size > 0, info.st_size <= maximumSize else {
            return .unreadable("\(path) has \(info.st_size) bytes, expected 1 to \(maximumSize)")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return .unreadable("\(path): \(count == 0 ? "file shrank while reading" : Self.errorText())") }
            done += count
        }
        // Mark it recently used, so eviction drops the kernels not booted for longest.
        _ = futimens(fd, nil)
        return .hit(bytes)
    }

    public func store(_ elf: [UInt8], for key: PayloadCacheKey) -> String? {
        if let why = Self.makeDirectories(directory) { return why }
        let final = entryPath(key)
        let temporary = directory + "/." + key.digest + ".\(getpid()).tmp"
        let fd = Self.retrying { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { return "cannot create \(temporary): \(Self.errorText())" }
        var done = 0
        while done < elf.count {
            let count = elf.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let why = "cannot write \(temporary): \(Self.errorText())"
                close(fd); unlink(temporary)
                return why
            }
            done += count
        }
        // No fsync: an entry lost or cut short by a crash is caught by Boot's checks and replaced.
        guard close(fd) == 0, rename(temporary, final) == 0 else {
            let why = "cannot store \(final): \(Self.errorText())"
            unlink(temporary)
            return why
        }
        evictBeyondLimit()
        return nil
    }

    /// Keeps the `maximumEntries` most recently used entries; also clears temporary files that a
    /// killed writer left behind (older than an hour, so a concurrent writer's file survives).
    func evictBeyondLimit() {
        var entries: [(name: String, modified: Double)] = []
        let now = Double(time(nil))
        for name in Self.directoryEntries(directory) {
            var info = stat()
            let path = directory + "/" + name
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
            let modified = Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
            if Self.isEntryName(name) {
                entries.append((name, modified))
            } else if name.hasPrefix("."), name.hasSuffix(".tmp"), now - modified > 3600 {
                unlink(path)
            }
        }
        guard entries.count > maximumEntries else { return }
        for stale in entries.sorted(by: { $0.modified > $1.modified }).dropFirst(maximumEntries) {
            unlink(directory + "/" + stale.name)
        }
    }

    /// `<64 hex digits>.elf`: only files this type wrote are ever evicted.
    static func isEntryName(_ name: String) -> Bool {
        guard name.hasSuffix(".elf") else { return false }
        let stem = name.dropLast(4)
        return stem.count == 64 && stem.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    static func sha256(_ bytes: [UInt8]) -> [UInt8]? {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var size: UInt32 = 0
        let ok = bytes.withUnsafeBytes { input in
            digest.withUnsafeMutableBufferPointer { output in
                EVP_Digest(input.baseAddress, input.count, output.baseAddress, &size, EVP_sha256(), nil)
            }
        }
        return ok == 1 && size == 32 ? Array(digest.prefix(32)) : nil
    }

    /// `mkdir -p` with mode 0755; returns why it failed.
    static func makeDirectories(_ path: String) -> String? {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                return "cannot create \(prefix): \(errorText())"
            }
        }
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { return "\(path) is not a directory" }
        return nil
    }

    static func directoryEntries(_ path: String) -> [String] {
        guard let handle = opendir(path) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func retrying(_ call: () -> Int32) -> Int32 {
        var result: Int32
        repeat { result = call() } while result < 0 && errno == EINTR
        return result
    }

    static func errorText() -> String { String(cString: strerror(errno)) }
}
