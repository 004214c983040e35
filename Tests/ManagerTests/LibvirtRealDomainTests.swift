import Foundation
import Testing
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
