import Foundation
import Storage
#if canImport(Glibc)
import Glibc
#endif

/// `vireo daemon --confine-storage`: every host file a VM definition names (kernel, initrd,
/// firmware file, UEFI variable store, each disk and the whole backing chain of a qcow2 disk)
/// must lie in a started storage pool, or the definition is refused and the VM does not start,
/// with one line naming the field and the path. What a pool holds is decided on resolved paths
/// (symbolic links followed), so a link in a pool to /etc/shadow is outside it; a logical pool
/// holds exactly its `/dev/VG/NAME` volumes. Debian's own firmware (`bios`, `uefi`) is the
/// system's and always allowed.
enum StorageConfinement {
    /// At define time (`resolve: false`) paths are compared as written: a disk may be defined
    /// before its volume exists. At start (`resolve: true`) each must exist and resolve into a
    /// started pool, backing files included.
    static func check(_ definition: VMDefinition, pools: [StoragePoolDefinition], resolve: Bool) throws(StoragePoolError) {
        var named: [(field: String, path: String)] = []
        if let kernel = definition.os.kernel { named.append(("os.kernel", kernel)) }
        if let initrd = definition.os.initrd { named.append(("os.initrd", initrd)) }
        if case .file(let path) = definition.os.firmware { named.append(("os.firmware", path)) }
        if let nvram = definition.os.nvram { named.append(("os.nvram", nvram)) }
        for (index, disk) in definition.disks.enumerated() { named.append(("disks[\(index)].source", disk.source)) }
        for (field, path) in named {
            try require(path, field: field, in: pools, resolve: resolve)
        }
        guard resolve else { return }
        // Every backing file below a qcow2 disk, as the VMM will open them: each is checked
        // before it is opened (a backing name may point anywhere on the host).
        for (index, disk) in definition.disks.enumerated() where disk.format == .qcow2 {
            let field = "disks[\(index)].source"
            var path = disk.source
            var format: ImageFormat? = .qcow2
            var depth = 0
            while true {
                let image: ImageInfo
                do { image = try ImageInfo.collect(path: path, format: format, sharing: .forceShare) } catch {
                    throw .confined(field: field, "disk \(disk.target): \(error)")
                }
                guard let backing = image.fullBackingFilename else { break }
                depth += 1
                guard depth < DiskImage.maxBackingDepth else {
                    throw .confined(field: field, "disk \(disk.target): backing chain deeper than \(DiskImage.maxBackingDepth)")
                }
                try require(backing, field: field, in: pools, resolve: true, what: "disk \(disk.target)'s backing file")
                path = backing
                format = image.backingFormat.flatMap(ImageFormat.init(rawValue:))
            }
        }
    }

    private static func require(_ path: String, field: String, in pools: [StoragePoolDefinition], resolve: Bool,
                                what: String? = nil) throws(StoragePoolError) {
        let label = what ?? field
        let candidate: String
        if resolve {
            guard let resolved = realpath(path, nil) else {
                throw .confined(field: field, "\(label): \(path): \(String(cString: strerror(errno)))")
            }
            candidate = String(cString: resolved)
            free(resolved)
        } else {
            candidate = path
        }
        for pool in pools where holds(pool, path: path, resolved: candidate, resolve: resolve) { return }
        let started = pools.map { "\($0.name) (\($0.target))" }.joined(separator: ", ")
        throw .confined(field: field, "\(label): \(path) is outside every started storage pool (started: \(started.isEmpty ? "none" : started))")
    }

    private static func holds(_ pool: StoragePoolDefinition, path: String, resolved: String, resolve: Bool) -> Bool {
        switch pool.type {
        case .dir:
            var root = pool.target
            if resolve {
                guard let real = realpath(pool.target, nil) else { return false }
                root = String(cString: real)
                free(real)
            }
            let components = resolved.split(separator: "/")
            guard !components.contains("..") && !components.contains(".") else { return false }
            return resolved.hasPrefix(root.hasSuffix("/") ? root : root + "/") && resolved.count > root.count + 1
        case .logical:
            // /dev/VG/NAME as written: the device-mapper node it links to has another name.
            guard path.hasPrefix(pool.target + "/") else { return false }
            let name = String(path.dropFirst(pool.target.count + 1))
            guard StoragePoolDefinition.isValidName(name) else { return false }
            if !resolve { return true }
            var info = stat()
            return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFBLK
        }
    }
}
