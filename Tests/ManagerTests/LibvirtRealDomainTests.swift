import Foundation
import Testing
import VMContract
@testable import Manager

/// What virt-install, virt-manager and GNOME Boxes leave in real domains, that Vireo used to
/// refuse or mishandle: each is taken (and said), or refused with a message that says what to
/// change.
@Suite struct LibvirtRealDomainTests {
    static func domain(type: String = "kvm", memory: String = "<memory unit='KiB'>1048576</memory>", devices: String = "") -> String {
        """
        <domain type='\(type)'>
          <name>real</name>
          \(memory)
          <vcpu placement='static'>1</vcpu>
          <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/real.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            \(devices)
          </devices>
        </domain>
        """
    }

    /// virt-install gives every modern guest `<rng model='virtio'>` on the host's random source:
    /// that is Vireo's virtio-rng (YAML `rng: true`, started with the device); other backends, a
    /// rate limit and a second device are listed, not taken.
    @Test func aVirtioRNGOnTheHostsRandomSourceIsTaken() throws {
        let base = try ImportResult(libvirtXML: Self.domain()).unsupported
        func said(_ result: ImportResult) -> [String] { result.unsupported.filter { !base.contains($0) } }
        for source in ["/dev/urandom", "/dev/random", ""] {
            let imported = try ImportResult(libvirtXML: Self.domain(devices: "<rng model='virtio'><backend model='random'>\(source)</backend></rng>"))
            #expect(imported.definition.rng && said(imported).isEmpty, "\(source): \(imported.unsupported)")
            let xml = imported.definition.libvirtXML()
            #expect(xml.contains("<rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>"), "\(xml)")
            #expect(try ImportResult(libvirtXML: xml).definition == imported.definition)
            let yaml = try imported.definition.yaml()
            #expect(yaml.contains("\nrng: true\n"))
            let spec = try VMLaunch.spec(for: imported.definition, paths: VMPaths(stateDirectory: "/s", name: "real"))
            #expect(spec.devices.entropy)
        }
        let egd = try ImportResult(libvirtXML: Self.domain(devices: "<rng model='virtio'><backend model='egd' type='tcp'><source mode='connect' host='h' service='1'/></backend></rng>"))
        #expect(!egd.definition.rng && said(egd) == ["devices/rng (model=virtio)"])
        let limited = try ImportResult(libvirtXML: Self.domain(devices: "<rng model='virtio'><rate bytes='1024' period='1000'/><backend model='random'>/dev/urandom</backend></rng>"))
        #expect(limited.definition.rng && said(limited) == ["devices/rng/rate"])
        let two = try ImportResult(libvirtXML: Self.domain(devices: """
            <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
            <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
            """))
        #expect(two.definition.rng && said(two) == ["devices/rng[2] (model=virtio)"])
        let none = try ImportResult(libvirtXML: Self.domain())
        let plain = try none.definition.yaml()
        #expect(!none.definition.rng && !plain.contains("rng"))
        #expect(!(try VMLaunch.spec(for: none.definition, paths: VMPaths(stateDirectory: "/s", name: "real")).devices.entropy))
    }

    /// virt-install leaves the install medium's drive behind, emptied: `<disk device='cdrom'>`
    /// with no <source>. Vireo has no removable media: the drive is left out, and said so.
    @Test func anEmptyCDROMDriveIsLeftOutWithAWarning() throws {
        let imported = try ImportResult(libvirtXML: Self.domain(devices: """
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
              <address type='drive' controller='0' bus='0' target='0' unit='0'/>
            </disk>
            """))
        #expect(imported.definition.disks.map(\.target) == ["vda"])
        #expect(imported.unsupported.filter { $0.hasPrefix("devices") }
                == ["devices/disk[2] (empty cdrom drive: Vireo has no removable media, the guest gets no drive)"])
        // A CD-ROM with a medium is still a read-only disk.
        let full = try ImportResult(libvirtXML: Self.domain(devices: """
            <disk type='file' device='cdrom'><source file='/isos/debian.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
            """))
        #expect(full.definition.disks.map(\.source) == ["/var/lib/libvirt/images/real.qcow2", "/isos/debian.iso"])
        #expect(full.definition.disks.last?.readonly == true)
    }

    /// libvirt takes memory in KiB, any number of them; RAM is whole pages: rounded up, and said.
    @Test func memoryIsRoundedUpToWholePagesAndSaidSo() throws {
        let imported = try ImportResult(libvirtXML: Self.domain(memory: """
            <memory unit='KiB'>1048577</memory><currentMemory unit='KiB'>524289</currentMemory>
            """))
        #expect(imported.definition.memory == 1_048_580 * 1024)
        #expect(imported.definition.currentMemory == 524_292 * 1024)
        #expect(imported.adjusted == ["memory: 1048577 KiB rounded up to 1048580 KiB (a whole number of 4 KiB pages)",
                                      "currentMemory: 524289 KiB rounded up to 524292 KiB (a whole number of 4 KiB pages)"])
        #expect(try ImportResult(libvirtXML: Self.domain()).adjusted.isEmpty)
    }

    @Test func aTCGDomainIsRefusedWithWhatToChange() {
        #expect(throws: DefinitionError.invalidValue(field: "domain", reason: "type 'qemu' (QEMU's software CPU emulation, TCG) is not supported: Vireo runs guests on KVM only; change it to <domain type='kvm'> (the host needs /dev/kvm)")) {
            try ImportResult(libvirtXML: Self.domain(type: "qemu"))
        }
    }

    @Test(arguments: ["e1000", "e1000e", "rtl8139"])
    func emulatedNICModelsAreRefusedNamingVirtio(model: String) {
        let xml = Self.domain(devices: """
            <interface type='network'><source network='default'/><model type='\(model)'/></interface>
            """)
        #expect(throws: DefinitionError.invalidValue(field: "devices/interface/model", reason: "NIC model '\(model)' is not emulated: Vireo's NIC is virtio-net; use <model type='virtio'/> (Linux has the driver built in; Windows needs virtio-win)")) {
            try ImportResult(libvirtXML: xml)
        }
    }
}

/// `<interface type='user'>`: GNOME Boxes' and virt-install's unprivileged default, which Vireo
/// runs on passt, with libvirt's passt port forwards.
@Suite struct UserInterfaceDefinitionTests {
    @Test func boxesUserNetworkingImportsAndLaunchesOnPasst() throws {
        let imported = try ImportResult(libvirtXML: LibvirtRealDomainTests.domain(devices: """
            <interface type='user'>
              <mac address='52:54:00:e1:3c:7f'/>
              <model type='virtio'/>
              <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
            </interface>
            """))
        let interface = try #require(imported.definition.interfaces.first)
        #expect(interface.type == .user && interface.source.isEmpty && interface.forwards.isEmpty)
        #expect(imported.unsupported.filter { $0.hasPrefix("devices/interface") } == ["devices/interface/address (type=pci)"])
        let spec = try VMLaunch.spec(for: imported.definition, paths: VMPaths(stateDirectory: "/s", name: "real"))
        #expect(spec.devices.networks.first?.attachment == .user(forwards: []))
    }

    @Test func passtPortForwardsRoundTripThroughDumpxml() throws {
        let imported = try ImportResult(libvirtXML: LibvirtRealDomainTests.domain(devices: """
            <interface type='user'>
              <backend type='passt'/>
              <mac address='52:54:00:e1:3c:7f'/>
              <model type='virtio'/>
              <portForward proto='tcp'><range start='2222' to='22'/></portForward>
              <portForward proto='udp' address='127.0.0.1'><range start='5353' to='53'/><range start='6000'/></portForward>
              <portForward proto='tcp'><range start='8000' end='8010'/></portForward>
            </interface>
            """))
        let interface = try #require(imported.definition.interfaces.first)
        #expect(interface.forwards == ["tcp::2222-:22", "udp:127.0.0.1:5353-:53", "udp:127.0.0.1:6000-:6000"])
        // A port range is not a single forward: reported, not guessed.
        #expect(imported.unsupported.contains("devices/interface/portForward[3]/range"), "\(imported.unsupported)")
        let spec = try VMLaunch.spec(for: imported.definition, paths: VMPaths(stateDirectory: "/s", name: "real"))
        #expect(spec.devices.networks.first?.attachment == .user(forwards: [
            PortForward(proto: .tcp, hostPort: 2222, guestPort: 22),
            PortForward(proto: .udp, hostAddress: "127.0.0.1", hostPort: 5353, guestPort: 53),
            PortForward(proto: .udp, hostAddress: "127.0.0.1", hostPort: 6000, guestPort: 6000)]))
        // dumpxml writes libvirt's passt form, which imports to the same definition.
        let xml = imported.definition.libvirtXML()
        #expect(xml.contains("<backend type='passt'/>"), "\(xml)")
        #expect(try ImportResult(libvirtXML: xml).definition == imported.definition)
        // And the native form.
        #expect(try VMDefinition(yaml: Data(try imported.definition.yaml().utf8)) == imported.definition)
    }

    @Test func forwardsBelongToUserInterfacesAndMustParse() {
        for (yaml, message) in [
            ("interfaces: [{type: bridge, source: br0, forwards: ['tcp::2222-:22']}]", "port forwards are for user interfaces"),
            ("interfaces: [{type: user, forwards: ['ssh']}]", "port forward 'ssh': expected"),
            ("interfaces: [{type: user, source: br0}]", "a user interface has no source"),
        ] {
            let document = "name: u\nmemory: 64M\nos: {kernel: /k}\n" + yaml + "\n"
            #expect(throws: DefinitionError.self) { try VMDefinition(yaml: Data(document.utf8)) }
            do { _ = try VMDefinition(yaml: Data(document.utf8)) } catch {
                #expect("\(error)".contains(message), "\(error)")
            }
        }
    }
}
