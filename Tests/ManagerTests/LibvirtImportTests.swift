import Foundation
import Testing
@testable import Manager

@Suite("libvirt domain XML import")
struct LibvirtImportTests {
    /// import → dumpxml → import gives the same definition, and our own XML has nothing unsupported.
    func expectStableRoundTrip(_ result: ImportResult) throws {
        let again = try ImportResult(libvirtXML: result.definition.libvirtXML())
        #expect(again.definition == result.definition)
        #expect(again.unsupported == [])
    }

    @Test func virtInstallKernelBoot() throws {
        let result = try ImportResult(libvirtXML: LibvirtFixtures.virtInstallKernelBoot)
        let d = result.definition
        #expect(d.name == "fedora-kernel")
        #expect(d.uuid == UUID(uuidString: "7d3f8e9a-5b2c-4e1f-9a8d-3c6b2e1f0a4d"))
        #expect(d.memory == 2 << 30 && d.currentMemory == 2 << 30 && d.vcpus == 2)
        #expect(d.os == OSBoot(kernel: "/var/lib/libvirt/boot/vmlinuz", initrd: "/var/lib/libvirt/boot/initrd.img",
                               cmdline: "console=ttyS0 root=/dev/vda1 rw"))
        #expect(d.disks == [Disk(source: "/var/lib/libvirt/images/fedora-kernel.qcow2", format: .qcow2, target: "vda")])
        #expect(d.interfaces == [NetworkInterface(type: .network, source: "default", mac: try #require(MACAddress("52:54:00:6b:3c:58")))])
        #expect(d.console.type == .pty)
        #expect(d.rng, "<rng model='virtio'> with /dev/urandom is Vireo's virtio-rng")
        #expect(d.onPoweroff == .destroy && d.onReboot == .restart && d.onCrash == .destroy)
        #expect(d.autostart == false)
        #expect(result.unsupported.sorted() == [
            "clock",
            "cpu (mode=host-passthrough)",
            "devices/channel (type=unix)",
            "devices/controller[1] (type=usb)",
            "devices/controller[2] (type=pci)",
            "devices/disk/address (type=pci)",
            "devices/disk/driver (discard=unmap)",
            "devices/emulator",
            "devices/graphics (type=vnc)",
            "devices/input[1] (type=tablet)",
            "devices/input[2] (type=mouse)",
            "devices/input[3] (type=keyboard)",
            "devices/interface/address (type=pci)",
            "devices/memballoon (model=virtio)",
            "devices/rng/address (type=pci)",
            "devices/video",
            "features",
            "metadata/libosinfo:libosinfo",
            "os/boot",
            "os/type (machine=pc-q35-8.2)",
            "pm",
        ])
        try expectStableRoundTrip(result)
    }

    @Test func handWrittenRouter() throws {
        let result = try ImportResult(libvirtXML: LibvirtFixtures.handWrittenRouter)
        let d = result.definition
        #expect(d.name == "router")
        #expect(d.memory == 512 << 20 && d.currentMemory == 512 << 20 && d.vcpus == 1)
        #expect(d.os == OSBoot(kernel: "/srv/vm/router/bzImage", cmdline: "console=ttyS0 panic=-1"))
        #expect(d.disks == [Disk(source: "/dev/vg0/router", type: .block, format: .raw, target: "vda", serial: "ROUTER-ROOT")])
        #expect(d.interfaces == [
            NetworkInterface(type: .bridge, source: "br-lan", mac: try #require(MACAddress("52:54:00:12:34:56"))),
            NetworkInterface(type: .tap, source: "tap-wan", mac: try #require(MACAddress("52:54:00:12:34:57"))),
        ])
        #expect(d.console.type == .none)
        #expect(d.onReboot == .destroy && d.onPoweroff == .destroy)
        #expect(result.unsupported == ["devices/disk/driver (cache=none, io=native)"])
        try expectStableRoundTrip(result)
    }

    @Test func liveDumpOfARunningGuest() throws {
        let result = try ImportResult(libvirtXML: LibvirtFixtures.liveDump)
        let d = result.definition
        #expect(d.memory == 8 << 30 && d.currentMemory == 4 << 30 && d.vcpus == 4)
        #expect(d.onCrash == .preserve)
        #expect(d.disks == [
            Disk(source: "/var/lib/libvirt/images/db01.qcow2", format: .qcow2, target: "vda"),
            Disk(source: "/srv/iso/seed.iso", device: .cdrom, format: .raw, target: "sda", readonly: true),
        ])
        #expect(d.interfaces.map(\.source) == ["br0"])
        #expect(d.console.type == .pty)
        #expect(result.unsupported.sorted() == [
            "devices/console (tty=/dev/pts/4)",
            "devices/console/alias (name=serial0)",
            "devices/console/source",
            "devices/disk[1]/address (type=pci)",
            "devices/disk[1]/alias (name=virtio-disk0)",
            "devices/disk[1]/source (index=2)",
            "devices/disk[2]/address (type=drive)",
            "devices/disk[2]/alias (name=sata0-0-0)",
            "devices/disk[2]/source (index=1)",
            "devices/disk[2]/target (bus=sata)",
            "devices/emulator",
            "devices/interface/address (type=pci)",
            "devices/interface/alias (name=net0)",
            "devices/interface/target",
            "devices/serial/alias (name=serial0)",
            "devices/serial/source",
            "domain (id=7)",
            "os/type (machine=pc-i440fx-6.2)",
            "resource",
            "seclabel (type=dynamic)",
            "title",
        ])
        try expectStableRoundTrip(result)
    }

    @Test func builderWithUnitsMetadataAndExtras() throws {
        let result = try ImportResult(libvirtXML: LibvirtFixtures.builderWithExtras)
        let d = result.definition
        #expect(d.uuid == UUID(uuidString: "0f8fad5b-d9cb-469f-a165-70867728950e"))
        #expect(d.autostart)
        #expect(d.memory == 4 << 30)
        #expect(d.currentMemory == 2_048_000_000)
        #expect(d.vcpus == 8)
        #expect(d.onCrash == .restart)
        #expect(d.disks.map(\.target) == ["vda", "vdb"])
        #expect(d.interfaces.count == 1 && d.interfaces[0].type == .network && d.interfaces[0].source == "build-net")
        #expect(d.interfaces[0].mac.description.hasPrefix("52:54:00:"))
        #expect(d.console.type == .pty)
        #expect(result.unsupported.sorted() == [
            "devices/disk[1]/boot",
            "devices/disk[2]/shareable",
            "devices/interface/source (portgroup=fast)",
            "devices/serial[2] (type=file)",
            "devices/watchdog (model=i6300esb)",
            "maxMemory",
            "qemu:commandline",
            "vcpu (current=2)",
        ])
        try expectStableRoundTrip(result)
    }

    @Test func nothingUnusedIsDroppedSilently() throws {
        // Extra attributes and children on elements Vireo does read are reported too.
        let xml = LibvirtErrorTests.domain(
            "<disk type='file'><source file='/a'/><target dev='vda'/><readonly shared='yes'/></disk>"
                + "<interface type='ethernet'><target dev='tap0' managed='yes'/><mac address='52:54:00:00:00:09' type='static'/></interface>",
            extra: "<vcpu placement='auto'>2</vcpu><uuid flag='1'>0f8fad5b-d9cb-469f-a165-70867728950e</uuid>",
            name: "<name lang='en'>vm1<i>x</i></name>")
        let result = try ImportResult(libvirtXML: xml)
        #expect(result.definition.name == "vm1")
        #expect(result.definition.disks[0].readonly)
        #expect(result.definition.interfaces[0].source == "tap0")
        #expect(result.unsupported == [
            "name (lang=en)", "name/i", "vcpu (placement=auto)", "uuid (flag=1)",
            "devices/disk/readonly (shared=yes)", "devices/interface/target (managed=yes)",
            "devices/interface/mac (type=static)",
        ])
    }

    @Test func dumpxmlLooksLikeVirsh() throws {
        let d = try ImportResult(libvirtXML: LibvirtFixtures.handWrittenRouter).definition
        let xml = d.libvirtXML()
        #expect(xml.hasPrefix("<domain type='kvm'>\n  <name>router</name>\n"))
        #expect(xml.contains("  <memory unit='KiB'>524288</memory>\n"))
        #expect(xml.contains("      <source dev='/dev/vg0/router'/>\n"))
        #expect(xml.contains("      <target dev='tap-wan' managed='no'/>\n"))
        #expect(!xml.contains("<serial type="), "a definition without a console has no serial port")
    }

    @Test func dumpxmlEscapesValues() throws {
        var d = try VMDefinition(yaml: "name: vm1\nmemory: 1G\nos: {kernel: \"/k&<'\\\">\", cmdline: \"a=<b> & c='d'\"}")
        d.disks = [Disk(source: "/images/it's&<>.raw", target: "vda", serial: "S&<'>")]
        let again = try ImportResult(libvirtXML: d.libvirtXML())
        #expect(again.definition == d)
        #expect(again.unsupported.isEmpty)
    }
}
