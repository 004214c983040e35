import Foundation
import Storage
#if canImport(Glibc)
import Glibc
#endif

/// What a pool is on the host: a directory of image files, or an LVM volume group driven through
/// LVM's own tools (`vgcreate`, `vgchange`, `lvcreate`, `lvs`, `lvremove`), as libvirt drives it.
/// Each method is one step of a `virsh pool-*` / `vol-*` verb; each failure is one line.
struct PoolHost {
    let pool: StoragePoolDefinition

    // MARK: pool-build, pool-start, pool-destroy

    /// `pool-build`: makes the directory (mode 0711: VMs' image files stay unlistable to others)
    /// or the volume group from its physical volumes.
    func build() throws(StoragePoolError) {
        switch pool.type {
        case .dir:
            var info = stat()
            if lstat(pool.target, &info) == 0 {
                guard info.st_mode & S_IFMT == S_IFDIR else {
                    throw .host("cannot build pool \(quoted(pool.name)): \(pool.target) exists and is not a directory")
                }
                return
            }
            do {
                try FileManager.default.createDirectory(atPath: pool.target, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o711])
            } catch {
                throw .host("cannot build pool \(quoted(pool.name)): cannot create \(pool.target): \(error.localizedDescription)")
            }
        case .logical:
            guard !pool.sourceDevices.isEmpty else {
                throw .invalid(field: "source_devices", "pool \(quoted(pool.name)): building a logical pool needs its physical volumes (--source-dev)")
            }
            try lvm("vgcreate", ["--", pool.volumeGroup] + pool.sourceDevices, doing: "build pool \(quoted(pool.name))")
        }
    }

    /// `pool-start`: the directory must exist; the volume group is activated.
    func start() throws(StoragePoolError) {
        switch pool.type {
        case .dir:
            var info = stat()
            guard stat(pool.target, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
                throw .host("cannot start pool \(quoted(pool.name)): \(pool.target) is not a directory (run pool-build first)")
            }
        case .logical:
            try lvm("vgchange", ["--activate", "y", "--", pool.volumeGroup], doing: "start pool \(quoted(pool.name))")
        }
    }

    /// `pool-destroy`: nothing is deleted; a volume group is deactivated.
    func stop() throws(StoragePoolError) {
        if pool.type == .logical {
            try lvm("vgchange", ["--activate", "n", "--", pool.volumeGroup], doing: "stop pool \(quoted(pool.name))")
        }
    }

    /// (capacity, allocation, available) in bytes, or nil when they cannot be read.
    func space() -> (UInt64, UInt64, UInt64)? {
        switch pool.type {
        case .dir:
            var fs = statvfs()
            guard statvfs(pool.target, &fs) == 0 else { return nil }
            let capacity = UInt64(fs.f_blocks) * UInt64(fs.f_frsize)
            let available = UInt64(fs.f_bavail) * UInt64(fs.f_frsize)
            let free = UInt64(fs.f_bfree) * UInt64(fs.f_frsize)
            return (capacity, capacity - free, available)
        case .logical:
            guard let output = try? lvm("vgs", ["--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
                                                "-o", "vg_size,vg_free", "--", pool.volumeGroup], doing: "read pool space"),
                  let line = output.split(separator: "\n").first else { return nil }
            let fields = line.split(separator: "|").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
            guard fields.count == 2, fields[1] <= fields[0] else { return nil }
            return (fields[0], fields[0] - fields[1], fields[1])
        }
    }

    // MARK: vol-list, vol-create-as, vol-delete

    func volumePath(_ name: String) -> String { pool.target + "/" + name }

    func volumes() throws(StoragePoolError) -> [StorageVolume] {
        switch pool.type {
        case .dir:
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: pool.target) } catch {
                throw .host("cannot list pool \(quoted(pool.name)): \(error.localizedDescription)")
            }
            return names.sorted().compactMap { name in
                let path = volumePath(name)
                var info = stat()
                // Regular files only: a symbolic link may point anywhere on the host.
                guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
                let allocated = UInt64(info.st_blocks) * 512
                if let image = try? ImageInfo.collect(path: path, sharing: .forceShare) {
                    return StorageVolume(name: name, path: path, format: image.formatName, capacity: image.virtualSize, allocation: allocated)
                }
                return StorageVolume(name: name, path: path, format: "unknown", capacity: UInt64(info.st_size), allocation: allocated)
            }
        case .logical:
            let output = try lvm("lvs", ["--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
                                         "-o", "lv_name,lv_size", "--", pool.volumeGroup], doing: "list pool \(quoted(pool.name))")
            return output.split(separator: "\n").compactMap { line in
                let fields = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
                guard fields.count == 2, let size = UInt64(fields[1]) else { return nil }
                return StorageVolume(name: fields[0], path: volumePath(fields[0]), format: "raw", capacity: size, allocation: size)
            }.sorted { $0.name < $1.name }
        }
    }

    func createVolume(_ request: StorageVolumeRequest) throws(StoragePoolError) -> StorageVolume {
        guard StoragePoolDefinition.isValidName(request.name) else {
            throw .invalid(field: "name", "volume name \(quoted(request.name)) must be 1-64 characters of letters, digits, '.', '_', '-', not starting with '-' or '.'")
        }
        guard request.capacity > 0 else { throw .invalid(field: "capacity", "a volume's capacity must be more than 0 bytes") }
        let format = request.format ?? "raw"
        guard format == "raw" || format == "qcow2" else {
            throw .invalid(field: "format", "volume format must be raw or qcow2 (got \(quoted(format)))")
        }
        let path = volumePath(request.name)
        switch pool.type {
        case .dir:
            // O_EXCL: an existing file (or a link planted in the pool) is never overwritten.
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                // ELOOP: O_NOFOLLOW met a symbolic link of that name.
                if errno == EEXIST || errno == ELOOP { throw .duplicateVolume(pool: pool.name, name: request.name) }
                let reason = String(cString: strerror(errno))
                throw .host("cannot create volume \(quoted(request.name)) in pool \(quoted(pool.name)): \(path): \(reason)")
            }
            var failure: String?
            if format == "raw" {
                if ftruncate(fd, off_t(clamping: request.capacity)) != 0 || fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
                close(fd)
            } else {
                close(fd)
                do { try QCOW2Image.create(path: path, options: QCOW2CreateOptions(size: request.capacity), overwrite: true) } catch {
                    failure = "\(error)"
                }
            }
            if let failure {
                unlink(path)
                throw .host("cannot create volume \(quoted(request.name)) in pool \(quoted(pool.name)): \(failure)")
            }
        case .logical:
            guard format == "raw" else {
                throw .invalid(field: "format", "a logical pool's volumes are raw (LVM logical volumes), not \(format)")
            }
            try lvm("lvcreate", ["--yes", "--name", request.name, "--size", "\(request.capacity)b", "--", pool.volumeGroup],
                    doing: "create volume \(quoted(request.name)) in pool \(quoted(pool.name))")
        }
        guard let created = try volumes().first(where: { $0.name == request.name }) else {
            throw .host("volume \(quoted(request.name)) was created but pool \(quoted(pool.name)) does not list it")
        }
        return created
    }

    func deleteVolume(_ name: String) throws(StoragePoolError) {
        guard StoragePoolDefinition.isValidName(name), try volumes().contains(where: { $0.name == name }) else {
            throw .unknownVolume(pool: pool.name, name: name)
        }
        switch pool.type {
        case .dir:
            guard unlink(volumePath(name)) == 0 else {
                throw .host("cannot delete volume \(quoted(name)): \(String(cString: strerror(errno)))")
            }
        case .logical:
            try lvm("lvremove", ["--yes", "--", pool.volumeGroup + "/" + name], doing: "delete volume \(quoted(name))")
        }
    }

    // MARK: LVM's tools

    /// Runs one LVM command (found in /usr/sbin or /sbin) and returns its output; a failure is
    /// one line with the tool's own last line of complaint.
    @discardableResult
    private func lvm(_ tool: String, _ arguments: [String], doing what: String) throws(StoragePoolError) -> String {
        guard let executable = ["/usr/sbin/", "/sbin/", "/usr/bin/"].map({ $0 + tool }).first(where: { access($0, X_OK) == 0 }) else {
            throw .host("cannot \(what): \(tool) is missing (Debian: apt install lvm2)")
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-lvm-\(getpid())-\(UUID().uuidString.prefix(8))").path
        defer { unlink(output) }
        let status: Int32
        do { status = try runToCompletion(executable: executable, arguments: arguments, outputPath: output) } catch {
            throw .host("cannot \(what): \(error)")
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        guard status == 0 else {
            // LVM warns about inherited descriptors and udev first; its error is the last line.
            let complaint = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                .last { !$0.isEmpty && !$0.hasPrefix("File descriptor") } ?? "exit status \(status)"
            throw .host("cannot \(what): \(tool): \(sanitized(String(complaint.prefix(300))))")
        }
        return text.split(separator: "\n").filter { !$0.hasPrefix("File descriptor") }.joined(separator: "\n")
    }
}
