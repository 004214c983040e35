import Foundation
import Testing
@testable import Manager
import Storage
#if canImport(Glibc)
import Glibc
#endif

/// Storage pools and volumes (virsh's pool-* and vol-* verbs) through the REST API of a daemon in
/// this process: dir pools end to end here; logical (LVM) pools in tests/e2e/lvm-pool.sh, which
/// needs the kernel's device-mapper.
@Suite struct DaemonPoolTests {
    private func json(_ value: some Encodable) throws -> [UInt8] { Array(try JSONEncoder().encode(value)) }

    private func pools(_ server: InProcessDaemon) throws -> [StoragePoolSummary] {
        try decodeJSON([StoragePoolSummary].self, try server.unix.request("GET", "/v1/pools"))
    }

    @Test func dirPoolFromDefinitionToDeletedVolume() throws {
        let server = try InProcessDaemon()
        let target = server.directory + "/images"
        let defined = try server.unix.request("POST", "/v1/pools", body: try json(StoragePoolDefinition(name: "images", type: .dir, target: target)))
        #expect(defined.status == 201)
        #expect(try pools(server).map(\.state) == ["inactive"])
        // Volumes need a started pool; starting needs the directory.
        #expect(try server.unix.request("GET", "/v1/pools/images/volumes").status == 409)
        let early = try server.unix.request("POST", "/v1/pools/images/start")
        #expect(early.status == 500 && early.errorMessage.contains("is not a directory (run pool-build first)"))

        #expect(try server.unix.request("POST", "/v1/pools/images/build").status == 200)
        var info = stat()
        #expect(stat(target, &info) == 0 && info.st_mode & 0o777 == 0o711)
        #expect(try server.unix.request("POST", "/v1/pools/images/start").status == 200)
        #expect(try server.unix.request("POST", "/v1/pools/images/start").status == 409)
        let active = try #require(try pools(server).first)
        #expect(active.state == "active" && active.capacity ?? 0 > 0 && active.target == target)

        let raw = try server.unix.request("POST", "/v1/pools/images/volumes", body: try json(StorageVolumeRequest(name: "root.img", capacity: 1 << 20)))
        #expect(raw.status == 201)
        let rawVolume = try decodeJSON(StorageVolume.self, raw)
        #expect(rawVolume == StorageVolume(name: "root.img", path: target + "/root.img", format: "raw", capacity: 1 << 20, allocation: rawVolume.allocation))
        let qcow2 = try server.unix.request("POST", "/v1/pools/images/volumes",
                                            body: try json(StorageVolumeRequest(name: "data.qcow2", capacity: 3 << 30, format: "qcow2")))
        #expect(qcow2.status == 201)
        #expect(try decodeJSON(StorageVolume.self, qcow2).format == "qcow2")
        // Made by the daemon for VMs alone: mode 0600.
        #expect(stat(target + "/data.qcow2", &info) == 0 && info.st_mode & 0o777 == 0o600)
        let listed = try decodeJSON([StorageVolume].self, try server.unix.request("GET", "/v1/pools/images/volumes"))
        #expect(listed.map(\.name) == ["data.qcow2", "root.img"])
        #expect(listed.first?.capacity == 3 << 30)
        let again = try server.unix.request("POST", "/v1/pools/images/volumes", body: try json(StorageVolumeRequest(name: "root.img", capacity: 4096)))
        #expect(again.status == 409 && again.errorMessage == "pool 'images' already holds a volume (or file) named 'root.img'")

        // A defined VM's disk cannot be deleted from under it, nor its pool stopped while it runs.
        let vm = "name: vm1\nmemory: 32M\nos:\n  kernel: /var/lib/vireo/vmlinux\ndisks:\n  - source: \(target)/root.img\n    format: raw\n    target: vda\n"
        #expect(try server.unix.request("POST", "/v1/vms", body: Array(vm.utf8)).status == 201)
        let refused = try server.unix.request("DELETE", "/v1/pools/images/volumes/root.img")
        #expect(refused.status == 409 && refused.errorMessage.contains("is a disk of domain 'vm1'"))
        #expect(FileManager.default.fileExists(atPath: target + "/root.img"))
        #expect(try server.unix.request("DELETE", "/v1/vms/vm1").status == 200)
        #expect(try server.unix.request("DELETE", "/v1/pools/images/volumes/root.img").status == 200)
        #expect(!FileManager.default.fileExists(atPath: target + "/root.img"))
        #expect(try server.unix.request("DELETE", "/v1/pools/images/volumes/root.img").status == 404)

        // Undefine needs the pool stopped; the directory and its volumes stay.
        #expect(try server.unix.request("DELETE", "/v1/pools/images").status == 409)
        #expect(try server.unix.request("POST", "/v1/pools/images/destroy").status == 200)
        #expect(try server.unix.request("DELETE", "/v1/pools/images").status == 200)
        #expect(try pools(server).isEmpty)
        #expect(FileManager.default.fileExists(atPath: target + "/data.qcow2"))
    }

    @Test func badPoolDefinitionsAreOneLineErrorsAndStoreNothing() throws {
        let server = try InProcessDaemon()
        let cases: [(StoragePoolDefinition, String, String)] = [
            (StoragePoolDefinition(name: "p", type: .dir, target: "relative/dir"), "target", "must be an absolute path"),
            (StoragePoolDefinition(name: "p", type: .dir, target: "/srv/../etc"), "target", "without '.' or '..'"),
            (StoragePoolDefinition(name: "p", type: .dir, target: "/"), "target", "cannot be /"),
            (StoragePoolDefinition(name: "-p", type: .dir, target: "/srv/p"), "name", "pool name '-p' must be"),
            (StoragePoolDefinition(name: "a/b", type: .dir, target: "/srv/p"), "name", "pool name 'a/b' must be"),
            (StoragePoolDefinition(name: "p", type: .logical, sourceName: "--force"), "source_name", "volume group name '--force'"),
            (StoragePoolDefinition(name: "p", type: .logical, sourceName: "vg", sourceDevices: ["/etc/shadow"]), "source_devices", "must be a device under /dev"),
            (StoragePoolDefinition(name: "p", type: .dir, target: "/srv/p", sourceName: "vg"), "source_name", "has no source"),
        ]
        for (definition, field, text) in cases {
            let response = try server.unix.request("POST", "/v1/pools", body: try json(definition))
            let body = try decodeJSON(APIErrorBody.self, response)
            #expect(response.status == 400 && body.field == field && body.error.contains(text), "\(definition): \(body)")
            #expect(!body.error.contains("\n"))
        }
        let junk = try server.unix.request("POST", "/v1/pools", body: Array("{\"name\": \"p\", \"type\": \"nfs\"}".utf8))
        #expect(junk.status == 400 && junk.errorMessage.hasPrefix("body must be a storage pool"))
        #expect(try pools(server).isEmpty)

        let good = try json(StoragePoolDefinition(name: "p", type: .dir, target: server.directory + "/p"))
        #expect(try server.unix.request("POST", "/v1/pools", body: good).status == 201)
        let duplicate = try server.unix.request("POST", "/v1/pools", body: good)
        #expect(duplicate.status == 409 && duplicate.errorMessage == "a storage pool named 'p' already exists")
        let missing = try server.unix.request("POST", "/v1/pools/nosuch/start")
        #expect(missing.status == 404 && missing.errorMessage == "no storage pool named 'nosuch'")
    }

    /// Volume names are file names in the pool's directory and nothing else: no path escapes,
    /// no option-like names for LVM's tools, no following a link planted in the pool.
    @Test func hostileVolumeNamesNeverLeaveThePool() throws {
        let server = try InProcessDaemon()
        let target = server.directory + "/pool"
        #expect(try server.unix.request("POST", "/v1/pools", body: try json(StoragePoolDefinition(name: "p", type: .dir, target: target))).status == 201)
        #expect(try server.unix.request("POST", "/v1/pools/p/build").status == 200)
        #expect(try server.unix.request("POST", "/v1/pools/p/start").status == 200)
        for name in ["../escape", "a/b", ".hidden", "-rf", "", String(repeating: "x", count: 65)] {
            let response = try server.unix.request("POST", "/v1/pools/p/volumes", body: try json(StorageVolumeRequest(name: name, capacity: 4096)))
            #expect(response.status == 400, "\(name)")
        }
        #expect(!FileManager.default.fileExists(atPath: server.directory + "/escape"))
        let wrongFormat = try server.unix.request("POST", "/v1/pools/p/volumes", body: try json(StorageVolumeRequest(name: "v", capacity: 4096, format: "vmdk")))
        #expect(wrongFormat.status == 400 && wrongFormat.errorMessage == "volume format must be raw or qcow2 (got 'vmdk')")
        let empty = try server.unix.request("POST", "/v1/pools/p/volumes", body: try json(StorageVolumeRequest(name: "v", capacity: 0)))
        #expect(empty.status == 400)

        // A symbolic link in the pool (to a host file) is not a volume: not listed, not deleted,
        // never written through.
        let outside = server.directory + "/precious"
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: outside))
        #expect(symlink(outside, target + "/link.img") == 0)
        #expect(try decodeJSON([StorageVolume].self, try server.unix.request("GET", "/v1/pools/p/volumes")).isEmpty)
        #expect(try server.unix.request("DELETE", "/v1/pools/p/volumes/link.img").status == 404)
        let through = try server.unix.request("POST", "/v1/pools/p/volumes", body: try json(StorageVolumeRequest(name: "link.img", capacity: 1 << 20)))
        #expect(through.status == 409)
        #expect(try String(contentsOfFile: outside, encoding: .utf8) == "keep me")
        #expect(try server.unix.request("DELETE", "/v1/pools/p/volumes/..%2Fprecious").status == 404)
        #expect(FileManager.default.fileExists(atPath: outside))
    }

    @Test func autostartPoolsStartWithTheDaemon() throws {
        let directory = "/tmp/vd-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func daemon() throws -> Daemon {
            let daemon = try Daemon(configuration: DaemonConfiguration(stateDirectory: directory + "/state", socketPath: directory + "/api.sock",
                                                                       executable: "/nonexistent/vireo"), log: { _ in })
            try daemon.start()
            return daemon
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let first = try daemon()
        let client = HTTPClient(endpoint: .unix(path: directory + "/api.sock"), timeoutSeconds: 10)
        for name in ["kept", "manual"] {
            #expect(try client.request("POST", "/v1/pools", body: try json(StoragePoolDefinition(name: name, type: .dir, target: directory + "/" + name))).status == 201)
            #expect(try client.request("POST", "/v1/pools/\(name)/build").status == 200)
        }
        #expect(try client.request("PUT", "/v1/pools/kept/autostart", body: Array("{\"enabled\":true}".utf8)).status == 200)
        first.stop()
        // The store keeps started pools started across a daemon restart; this one never was.
        let second = try daemon()
        defer { second.stop() }
        let listed = try decodeJSON([StoragePoolSummary].self, try client.request("GET", "/v1/pools"))
        #expect(listed.map { "\($0.name) \($0.state) \($0.autostart)" } == ["kept active true", "manual inactive false"])
    }
}

/// `vireo daemon --confine-storage`: a VM may use only files in started pools, backing files
/// included, decided on resolved paths.
@Suite struct DaemonStorageConfinementTests {
    private func json(_ value: some Encodable) throws -> [UInt8] { Array(try JSONEncoder().encode(value)) }

    private func vm(_ name: String, kernel: String, disk: String, format: String = "qcow2") -> [UInt8] {
        Array("name: \(name)\nmemory: 32M\nos:\n  kernel: \(kernel)\ndisks:\n  - source: \(disk)\n    format: \(format)\n    target: vda\n".utf8)
    }

    @Test func filesOutsideStartedPoolsAreRefusedAtDefineAndStart() throws {
        let server = try InProcessDaemon(confineStorage: true)
        // No pool started: nothing may be named.
        let none = try server.unix.request("POST", "/v1/vms", body: minimalYAML("vm0"))
        let noneBody = try decodeJSON(APIErrorBody.self, none)
        #expect(none.status == 403 && noneBody.field == "os.kernel")
        #expect(noneBody.error == "os.kernel: /var/lib/vireo/vmlinux is outside every started storage pool (started: none)")

        let target = server.directory + "/pool"
        #expect(try server.unix.request("POST", "/v1/pools", body: try json(StoragePoolDefinition(name: "p", type: .dir, target: target))).status == 201)
        #expect(try server.unix.request("POST", "/v1/pools/p/build").status == 200)
        #expect(try server.unix.request("POST", "/v1/pools/p/start").status == 200)
        try Data("not really a kernel".utf8).write(to: URL(fileURLWithPath: target + "/vmlinuz"))
        #expect(try server.unix.request("POST", "/v1/pools/p/volumes",
                                        body: try json(StorageVolumeRequest(name: "good.qcow2", capacity: 1 << 20, format: "qcow2"))).status == 201)
        // An overlay in the pool whose backing file is a host file outside it.
        var options = QCOW2CreateOptions(size: 1 << 20)
        options.backingFile = "/etc/hostname"
        options.backingFormat = "raw"
        try QCOW2Image.create(path: target + "/evil.qcow2", options: options)
        #expect(symlink("/etc/hostname", target + "/link.img") == 0)

        // Lexically outside: refused at define, naming the field.
        let outside = try server.unix.request("POST", "/v1/vms", body: vm("out", kernel: target + "/vmlinuz", disk: "/etc/shadow", format: "raw"))
        let outsideBody = try decodeJSON(APIErrorBody.self, outside)
        #expect(outside.status == 403 && outsideBody.field == "disks[0].source")
        #expect(outside.errorMessage.hasPrefix("disks[0].source: /etc/shadow is outside every started storage pool (started: p ("))
        let dotted = try server.unix.request("POST", "/v1/vms", body: vm("dots", kernel: target + "/../../etc/passwd", disk: target + "/good.qcow2"))
        #expect(dotted.status == 403 && dotted.errorMessage.hasPrefix("os.kernel:"))

        // Inside as written, outside once resolved or through the backing chain: refused at start.
        for (name, disk, format, expected) in [
            ("evil", target + "/evil.qcow2", "qcow2", "disk vda's backing file: /etc/hostname is outside every started storage pool"),
            ("link", target + "/link.img", "raw", "disks[0].source: \(target)/link.img is outside every started storage pool"),
        ] {
            #expect(try server.unix.request("POST", "/v1/vms", body: vm(name, kernel: target + "/vmlinuz", disk: disk, format: format)).status == 201)
            let start = try server.unix.request("POST", "/v1/vms/\(name)/start")
            #expect(start.status == 403 && start.errorMessage.hasPrefix(expected), "\(name): \(start.errorMessage)")
        }
        // Everything in the pool: past the check (this daemon's VMM does not exist, so the start
        // fails at the spawn, not at the pool).
        #expect(try server.unix.request("POST", "/v1/vms", body: vm("good", kernel: target + "/vmlinuz", disk: target + "/good.qcow2")).status == 201)
        let good = try server.unix.request("POST", "/v1/vms/good/start")
        #expect(good.status != 403 && !good.errorMessage.contains("storage pool"), "\(good.errorMessage)")
        // A stopped pool holds nothing.
        #expect(try server.unix.request("POST", "/v1/pools/p/destroy").status == 200)
        let stopped = try server.unix.request("POST", "/v1/vms/good/start")
        #expect(stopped.status == 403 && stopped.errorMessage == "os.kernel: \(target)/vmlinuz is outside every started storage pool (started: none)")
    }
}
