import Foundation
import Testing
@testable import Manager

/// Domain XML as the real tools write it, kept in Corpus/libvirt and made there by make.sh on
/// Debian 12: virt-install 4.1's `--print-xml` (`NAME.print.xml`) and what libvirt 9.0 keeps after
/// `virsh define` of it (`NAME.xml`): `--import` of a qcow2 with user networking, the same with
/// UEFI, a bridge with the empty CD-ROM drive installs leave behind, a direct kernel boot, and
/// virt-manager's new-VM defaults (its wizard builds domains with the same library). GNOME Boxes is
/// not packaged for a machine without a desktop: `boxes-debian11.hand.xml` is written by hand after
/// what its VMConfigurator builds for an installed Debian (user networking, SPICE with agent and
/// webdav channels, a smartcard, USB redirection, the install medium's drive emptied to
/// `<source file=''/>`, its metadata). Each must import with what Vireo takes mapped and the rest
/// listed, and round-trip through dumpxml.
@Suite struct LibvirtCorpusTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus/libvirt")

    struct Expected: Sendable, CustomStringConvertible {
        var name: String
        var memory: UInt64
        var vcpus: Int
        var os: OSBoot
        var interfaces: [NetworkInterface.Kind]
        /// Warnings that must be among the unsupported ones (the rest vary with libvirt's additions).
        var said: [String]
        /// The files made for it: virt-install's output and libvirt's, unless given.
        var files: [String]? = nil
        /// The domain's name when it is not the case's.
        var domain: String? = nil
        var rng = true
        var disk = Disk(source: "/var/tmp/vi.qcow2", format: .qcow2, target: "vda")
        var description: String { name }
    }

    static let cases: [Expected] = [
        Expected(name: "vi-debian11-import", memory: 2 << 30, vcpus: 2, os: OSBoot(firmware: .bios), interfaces: [.user],
                 said: ["devices/memballoon (model=virtio)", "devices/channel (type=unix)", "cpu (mode=host-passthrough)"]),
        Expected(name: "vi-debian11-uefi", memory: 2 << 30, vcpus: 2, os: OSBoot(firmware: .uefi), interfaces: [],
                 said: ["devices/memballoon (model=virtio)"]),
        Expected(name: "vi-debian11-bridge-cdrom", memory: 1536 << 20, vcpus: 2, os: OSBoot(firmware: .bios), interfaces: [.bridge],
                 said: ["devices/disk[2] (empty cdrom drive: Vireo has no removable media, the guest gets no drive)"]),
        Expected(name: "vi-kernel-boot", memory: 512 << 20, vcpus: 1,
                 os: OSBoot(kernel: "/var/tmp/vmlinuz", initrd: "/var/tmp/initrd.img", cmdline: "console=ttyS0 root=/dev/vda"),
                 interfaces: [], said: []),
        Expected(name: "boxes-debian11", memory: 2 << 30, vcpus: 4, os: OSBoot(firmware: .bios), interfaces: [.user],
                 said: ["devices/disk[2] (empty cdrom drive", "devices/graphics (type=spice)", "devices/smartcard",
                        "devices/redirdev[1] (type=spicevmc)", "metadata/boxes:gnome-boxes"],
                 files: ["boxes-debian11.hand.xml"], domain: "debian11", rng: false,
                 disk: Disk(source: "/home/user/.local/share/gnome-boxes/images/debian11", format: .qcow2, target: "vda")),
        Expected(name: "vm-wizard-default", memory: 4 << 30, vcpus: 2, os: OSBoot(firmware: .bios), interfaces: [.network],
                 said: ["devices/graphics (type=spice)", "devices/sound (model=ich9)", "devices/video", "devices/channel (type=spicevmc)"]),
    ]

    @Test(arguments: cases)
    func realDomainsImportAndRoundTrip(expected: Expected) throws {
        for file in expected.files ?? ["\(expected.name).print.xml", "\(expected.name).xml"] {
            let xml = try String(contentsOf: Self.directory.appendingPathComponent(file), encoding: .utf8)
            let result = try ImportResult(libvirtXML: xml)
            let d = result.definition
            #expect(d.name == expected.domain ?? expected.name, "\(file)")
            #expect(d.memory == expected.memory && d.currentMemory == expected.memory && d.vcpus == expected.vcpus, "\(file)")
            #expect(d.os == expected.os, "\(file): \(d.os)")
            #expect(d.disks == [expected.disk], "\(file): \(d.disks)")
            #expect(d.interfaces.map(\.type) == expected.interfaces, "\(file): \(d.interfaces)")
            #expect(d.rng == expected.rng, "\(file): virt-install's <rng model='virtio'> is Vireo's virtio-rng")
            #expect(!result.unsupported.contains { $0.hasPrefix("devices/rng (") }, "\(file)")
            if let bridge = d.interfaces.first(where: { $0.type == .bridge }) { #expect(bridge.source == "br0") }
            if let network = d.interfaces.first(where: { $0.type == .network }) { #expect(network.source == "default") }
            // What Vireo does not take is listed, never dropped silently; nothing is refused.
            for warning in expected.said {
                #expect(result.unsupported.contains { $0.hasPrefix(warning) }, "\(file) lacks warning \(warning): \(result.unsupported)")
            }
            try d.validate()
            // dumpxml writes what was taken; importing that gives the same VM with nothing to say,
            // and writing it again gives the same bytes.
            let exported = d.libvirtXML()
            let again = try ImportResult(libvirtXML: exported)
            #expect(again.definition == d, "\(file)")
            #expect(again.unsupported.isEmpty && again.adjusted.isEmpty, "\(file): \(again.unsupported) \(again.adjusted)")
            #expect(again.definition.libvirtXML() == exported, "\(file): dumpxml is not byte-stable")
        }
    }

    @Test func theCorpusIsComplete() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.directory.path).filter { $0.hasSuffix(".xml") }
        #expect(Set(files) == Set(Self.cases.flatMap { $0.files ?? ["\($0.name).print.xml", "\($0.name).xml"] }), "every file has its case")
    }
}
