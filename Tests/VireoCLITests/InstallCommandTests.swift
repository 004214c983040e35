import Foundation
import Testing

/// `vireo install --import` against a real daemon: the overlay and the NoCloud seed it writes (read
/// back with `vireo img info` and genisoimage's isoinfo), the definition it makes, the VM it starts
/// (SeaBIOS, waiting on disks without a boot loader), and bad input refused with one line and
/// nothing left behind. Needs genisoimage and seabios (scripts/setup.sh installs them).
@Suite(.serialized) struct InstallCommandTests {
    static let isoinfo = "/usr/bin/isoinfo"
    static let userData = "#cloud-config\nhostname: vm1\npassword: secret\nchpasswd: {expire: false}\n"

    /// A directory for one test's images, inside the daemon's (removed with it).
    static func images(_ daemon: CLIDaemon) throws -> String {
        let path = daemon.directory + "/images"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func listing(_ directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
    }

    static func makeImage(_ arguments: [String]) throws {
        let result = try VireoBinary.run(["img", "create", "-q"] + arguments)
        #expect(result.status == 0, "vireo img create: \(result.stderr)")
    }

    static func imageInfo(_ path: String) throws -> [String: Any] {
        // -U: the installed VM runs and holds its disks, as QEMU would.
        let result = try VireoBinary.run(["img", "info", "-U", "--output", "json", path])
        #expect(result.status == 0, "\(result.stderr)")
        return (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]) ?? [:]
    }

    /// A file from the seed's Joliet tree, as cloud-init's NoCloud reader finds it.
    static func seedFile(_ iso: String, _ name: String) throws -> String {
        try VireoBinary.runProcess(isoinfo, ["-J", "-x", "/" + name, "-i", iso]).stdout
    }

    static func xmlElement(_ xml: String, containing needle: String) -> String? {
        xml.components(separatedBy: "<disk ").dropFirst().map { $0.components(separatedBy: "</disk>")[0] }
            .first { $0.contains(needle) }
    }

    @Test func importsABackingImageWithACloudInitSeedAndStartsIt() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.isoinfo), "genisoimage is missing: run scripts/setup.sh")
        let daemon = try CLIDaemon()
        let dir = try Self.images(daemon)
        try Self.makeImage(["-f", "qcow2", dir + "/base.qcow2", "64M"])
        let user = dir + "/user.yaml"
        try Self.userData.write(toFile: user, atomically: true, encoding: .utf8)

        let install = try daemon.vireo(["install", "--name", "vm1", "--memory", "64M", "--cpus", "1", "--import",
                                        "--disk", "size=128M,backing=\(dir)/base.qcow2", "--cloud-init", "user-data=\(user)",
                                        "--noautoconsole"])
        #expect(install.status == 0, "\(install.stderr)")
        #expect(install.stderr == "")
        let overlay = dir + "/vm1.qcow2", seed = dir + "/vm1-cidata.iso"
        #expect(install.stdout == """
            Created \(overlay) (qcow2, 128 MiB, backing file \(dir)/base.qcow2 (qcow2))
            Created \(seed) (cloud-init NoCloud seed, volume cidata: user-data, meta-data)
            Domain 'vm1' defined
            Domain 'vm1' started


            """)

        // The overlay: qcow2 on the backing file, by absolute path and with its format recorded.
        let info = try Self.imageInfo(overlay)
        #expect(info["format"] as? String == "qcow2")
        #expect(info["virtual-size"] as? Int == 128 << 20)
        #expect(info["backing-filename"] as? String == dir + "/base.qcow2")
        #expect(info["backing-filename-format"] as? String == "qcow2")
        #expect(try Self.imageInfo(dir + "/base.qcow2")["virtual-size"] as? Int == 64 << 20, "the backing file is untouched")

        // The definition: firmware bios, the overlay as vda, the seed as a read-only raw cdrom.
        let xml = try daemon.vireo(["dumpxml", "vm1"]).stdout
        #expect(xml.contains("<memory unit='KiB'>65536</memory>"))
        #expect(!xml.contains("<kernel>") && !xml.contains("<loader") && !xml.contains("firmware='efi'"), "bios: no loader\n\(xml)")
        let root = Self.xmlElement(xml, containing: overlay) ?? ""
        #expect(root.contains("device='disk'") && root.contains("type='qcow2'") && root.contains("<target dev='vda'"), "\(xml)")
        #expect(!root.contains("<readonly/>"))
        let cdrom = Self.xmlElement(xml, containing: seed) ?? ""
        #expect(cdrom.contains("device='cdrom'") && cdrom.contains("type='raw'") && cdrom.contains("<readonly/>")
                && cdrom.contains("<target dev='vdb'"), "\(xml)")
        let uuid = xml.components(separatedBy: "<uuid>").dropFirst().first?.components(separatedBy: "</uuid>").first ?? "?"

        // The seed: volume cidata, Joliet and Rock Ridge, user-data as given, meta-data generated.
        let volume = try VireoBinary.runProcess(Self.isoinfo, ["-d", "-i", seed]).stdout
        #expect(volume.contains("Volume id: cidata"), "\(volume)")
        #expect(volume.contains("Joliet with UCS level"), "\(volume)")
        #expect(volume.contains("Rock Ridge signatures version"), "\(volume)")
        #expect(try Self.seedFile(seed, "user-data") == Self.userData)
        #expect(try Self.seedFile(seed, "meta-data") == "instance-id: \(uuid)\nlocal-hostname: vm1\n")
        let names = try VireoBinary.runProcess(Self.isoinfo, ["-R", "-f", "-i", seed]).stdout
        #expect(names.split(separator: "\n").sorted() == ["/meta-data", "/user-data"], "Rock Ridge names: \(names)")

        // Started: SeaBIOS runs, and waits (neither disk has a boot loader).
        #expect(try daemon.vireo(["domstate", "vm1", "--reason"]).stdout == "running (booted)\n\n")
        var console = ""
        for _ in 0..<10 where !console.contains("SeaBIOS") {
            console = try daemon.vireo(["console", "vm1"], input: [("", 0), ("\u{1d}", 1.5)]).stdout
        }
        #expect(console.contains("SeaBIOS"), "\(console)")

        #expect(try daemon.vireo(["destroy", "vm1"]).status == 0)
    }

    /// Without --noautoconsole the console follows the start; an empty new disk and an existing
    /// raw image (format read from it) need no cloud-init.
    @Test func attachesTheConsoleAndTakesNewAndExistingDisks() throws {
        let daemon = try CLIDaemon()
        let dir = try Self.images(daemon)
        try Self.makeImage(["-f", "raw", dir + "/data.img", "4M"])
        let install = try daemon.vireo(["install", "--name", "vm2", "--memory", "64M", "--import",
                                        "--disk", "size=16M,path=\(dir)/root.qcow2", "--disk", "path=data.img",
                                        "--firmware", "bios"], input: [("", 0), ("\u{1d}", 4)], directory: dir)
        #expect(install.status == 0, "\(install.stderr)")
        #expect(install.stdout.hasPrefix("Created \(dir)/root.qcow2 (qcow2, 16 MiB, empty)\nDomain 'vm2' defined\nDomain 'vm2' started\n\n"),
                "\(install.stdout)")
        #expect(install.stdout.contains("SeaBIOS"), "the console was attached: \(install.stdout)")
        #expect(install.stderr.hasPrefix("Connected to domain 'vm2'\n"), "\(install.stderr)")
        let info = try Self.imageInfo(dir + "/root.qcow2")
        #expect(info["format"] as? String == "qcow2" && info["virtual-size"] as? Int == 16 << 20 && info["backing-filename"] == nil)
        let xml = try daemon.vireo(["dumpxml", "vm2"]).stdout
        let data = Self.xmlElement(xml, containing: dir + "/data.img") ?? ""
        #expect(data.contains("device='disk'") && data.contains("type='raw'") && data.contains("<target dev='vdb'"), "\(xml)")
        #expect(!xml.contains("cdrom"))
        #expect(try daemon.vireo(["destroy", "vm2"]).status == 0)
    }

    @Test func dryRunPrintsTheDefinitionAndCreatesNothing() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.isoinfo), "genisoimage is missing: run scripts/setup.sh")
        let daemon = try CLIDaemon()
        let dir = try Self.images(daemon)
        try Self.makeImage(["-f", "raw", dir + "/base.img", "8M"])
        let user = dir + "/user.yaml", network = dir + "/net.yaml"
        try Self.userData.write(toFile: user, atomically: true, encoding: .utf8)
        try "version: 2\nethernets: {eth0: {dhcp4: true}}\n".write(toFile: network, atomically: true, encoding: .utf8)
        let before = Self.listing(dir)
        // No daemon needed: a dry run does not connect.
        let result = try VireoBinary.run(["install", "--name", "dry", "--memory", "512", "--cpus", "2", "--import",
                                          "--disk", "size=1,backing=\(dir)/base.img", "--cloud-init",
                                          "user-data=\(user),network-config=\(network)", "--network", "bridge=br0,mac=52:54:00:12:34:56",
                                          "--network", "user,hostfwd=tcp::2222-:22,mac=52:54:00:12:34:57",
                                          "--firmware", "uefi", "--dry-run", "--socket", dir + "/none.sock"])
        #expect(result.status == 0, "\(result.stderr)")
        let out = result.stdout
        #expect(out.hasPrefix("""
            # vireo install --dry-run: nothing was created, defined or started.
            # would create: \(dir)/dry.qcow2 (qcow2, 1 GiB, backing file \(dir)/base.img (raw))
            # would create: \(dir)/dry-cidata.iso (cloud-init NoCloud seed, volume cidata: user-data, meta-data, network-config)
            name: dry

            """), "\(out)")
        for line in ["memory: 512MiB", "vcpus: 2", "  firmware: uefi", "- source: \(dir)/dry.qcow2", "  format: qcow2",
                     "- source: \(dir)/dry-cidata.iso", "  device: cdrom", "  readonly: true", "  target: vdb",
                     "- type: bridge", "  source: br0", "  mac: '52:54:00:12:34:56'",
                     "- type: user", "  mac: '52:54:00:12:34:57'", "  forwards:", "  - tcp::2222-:22"] {
            #expect(out.contains(line), "\(line)")
        }
        #expect(Self.listing(dir) == before)
        #expect(try daemon.vireo(["list", "--all"]).stdout == " Id   Name   State\n--------------------\n\n")
    }

    /// Each a one-line error, with no file created and no VM defined.
    @Test func badInputIsOneLineAndLeavesNothingBehind() throws {
        let daemon = try CLIDaemon()
        let dir = try Self.images(daemon)
        try Self.makeImage(["-f", "qcow2", dir + "/base.qcow2", "8M"])
        let good = dir + "/user.yaml", bad = dir + "/bad.yaml", existing = dir + "/taken.qcow2"
        try Self.userData.write(toFile: good, atomically: true, encoding: .utf8)
        try "hostname: x\n".write(toFile: bad, atomically: true, encoding: .utf8)
        #expect(FileManager.default.createFile(atPath: existing, contents: Data("mine".utf8)))
        let defined = daemon.directory + "/other.yaml"
        try "name: other\nmemory: 32M\nos: {firmware: bios}\n".write(toFile: defined, atomically: true, encoding: .utf8)
        #expect(try daemon.vireo(["define", defined]).status == 0)

        let base = ["install", "--memory", "64M", "--noautoconsole"]
        let cases: [([String], String)] = [
            (["--name", "a", "--import", "--disk", "backing=\(dir)/missing.qcow2", "--cloud-init", "user-data=\(good)"],
             "error: backing file '\(dir)/missing.qcow2' does not exist\n"),
            (["--name", "a", "--import", "--disk", "backing=\(dir)/base.qcow2", "--cloud-init", "user-data=\(bad)"],
             "error: user-data '\(bad)' must start with '#cloud-config' (cloud-config YAML) or '#!' (a script)\n"),
            (["--name", "a", "--import", "--disk", "backing=\(dir)/base.qcow2,path=\(existing)"],
             "error: the overlay '\(existing)' already exists; remove it or give another path=\n"),
            (["--name", "other", "--import", "--disk", "backing=\(dir)/base.qcow2", "--cloud-init", "user-data=\(good)"],
             "error: domain 'other' already exists (vireo undefine other, or choose another --name)\n"),
            (["--name", "a", "--disk", "backing=\(dir)/base.qcow2"],
             "error: only --import is supported for now: give --import and a --disk with the image to boot\n"),
            (["--name", "a", "--import", "--disk", "backing=\(dir)/base.qcow2", "--cloud-init", "user-data=\(dir)/none.yaml"],
             "error: cannot read user-data '\(dir)/none.yaml': No such file or directory\n"),
            (["--name", "a", "--import", "--disk", "size=2M,backing=\(dir)/base.qcow2"],
             "error: --disk: size=2M is smaller than the backing file (8 MiB)\n"),
            (["--name", "a", "--import", "--disk", "backing=\(dir)/base.qcow2,colour=red"],
             "error: --disk: unknown key 'colour' (expected path, size, backing, backing-format, format, readonly)\n"),
            (["--name", "a b", "--import", "--disk", "backing=\(dir)/base.qcow2"],
             "error: name: 'a b' may contain only letters, digits, '.', '_' and '-'\n"),
            (["--name", "a", "--memory", "lots", "--import", "--disk", "backing=\(dir)/base.qcow2"],
             "error: memory: 'lots' is not a size\n"),
        ]
        let before = Self.listing(dir)
        for (arguments, message) in cases {
            let result = try daemon.vireo(base + arguments)
            #expect(result.status == 1, "\(arguments)")
            if message.hasPrefix("error: name:") {
                #expect(result.stderr.hasPrefix("error: name: 'a b'") && result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            } else {
                #expect(result.stderr == message, "\(arguments)")
            }
            #expect(result.stdout == "")
            #expect(Self.listing(dir) == before, "\(arguments) left files behind")
        }
        #expect(try String(contentsOfFile: existing, encoding: .utf8) == "mine")

        // No ISO tool: said in one line, naming the package, before anything is made.
        let noTool = try daemon.vireo(base + ["--name", "a", "--import", "--disk", "backing=\(dir)/base.qcow2",
                                              "--cloud-init", "user-data=\(good)"], environment: ["PATH": "/nonexistent"])
        #expect(noTool.status == 1)
        #expect(noTool.stderr == "error: cannot make the cloud-init seed: neither genisoimage nor xorriso is installed (Debian: apt-get install genisoimage)\n")
        #expect(Self.listing(dir) == before)
        #expect(try daemon.vireo(["list", "--all"]).stdout.split(separator: "\n").count == 3, "only 'other' is defined")
    }

    /// A failure after the files were made (the VM cannot start): they are removed and the VM undefined.
    @Test func aFailedStartUndoesEverything() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.isoinfo), "genisoimage is missing: run scripts/setup.sh")
        let daemon = try CLIDaemon()
        let dir = try Self.images(daemon)
        try Self.makeImage(["-f", "qcow2", dir + "/base.qcow2", "8M"])
        let user = dir + "/user.yaml"
        try Self.userData.write(toFile: user, atomically: true, encoding: .utf8)
        let before = Self.listing(dir)
        let result = try daemon.vireo(["install", "--name", "doomed", "--memory", "64M", "--import", "--noautoconsole",
                                       "--disk", "backing=\(dir)/base.qcow2", "--cloud-init", "user-data=\(user)",
                                       "--firmware", dir + "/no-such-firmware.bin"])
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("error: Failed to start domain 'doomed'\n"), "\(result.stderr)")
        #expect(result.stdout.contains("Domain 'doomed' defined"))
        #expect(Self.listing(dir) == before)
        #expect(try daemon.vireo(["list", "--all"]).stdout == " Id   Name   State\n--------------------\n\n")
    }

    @Test func helpDescribesTheImportPath() throws {
        let help = try VireoBinary.run(["install", "--help"])
        #expect(help.status == 0)
        for text in ["virt-install", "--name <name>", "--memory <size>", "--cpus, --vcpus <cpus>", "--import",
                     "--disk <spec>", "size=SIZE,backing=FILE", "--cloud-init <spec>", "user-data=FILE",
                     "--network <spec>", "--firmware <bios|uefi|file>", "--noautoconsole", "--dry-run", "--socket",
                     "NAME-cidata.iso", "genisoimage"] {
            #expect(help.stdout.contains(text), "\(text)")
        }
        #expect(try VireoBinary.run(["--help"]).stdout.contains("  install "))
    }
}
