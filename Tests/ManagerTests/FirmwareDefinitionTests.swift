import VMContract
import Foundation
import Testing
@testable import Manager

/// Definitions that boot through firmware (SeaBIOS, OVMF or a firmware file) instead of a kernel:
/// the native keys, libvirt's <os> forms as virt-install writes them, dumpxml, and the LaunchSpec.
@Suite("Firmware boot definitions")
struct FirmwareDefinitionTests {
    // MARK: - Fixtures

    /// virt-install --import --boot hd,cdrom --os-variant debian12 (libvirt 9.0, Debian 12): no
    /// <kernel>, no loader, so libvirt boots SeaBIOS.
    static let virtInstallBIOS = """
        <domain type='kvm'>
          <name>deb-bios</name>
          <uuid>2f0c3a1e-8d4b-4c6e-9f1a-7b5d3e2c1a09</uuid>
          <metadata>
            <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
              <libosinfo:os id="http://debian.org/debian/12"/>
            </libosinfo:libosinfo>
          </metadata>
          <memory unit='KiB'>2097152</memory>
          <currentMemory unit='KiB'>2097152</currentMemory>
          <vcpu placement='static'>2</vcpu>
          <os>
            <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
            <boot dev='hd'/>
            <boot dev='cdrom'/>
          </os>
          <features>
            <acpi/>
            <apic/>
          </features>
          <cpu mode='host-passthrough' check='none' migratable='on'/>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/deb-bios.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <source file='/var/lib/libvirt/images/debian-12.7.0-amd64-netinst.iso'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
            </disk>
            <serial type='pty'>
              <target type='isa-serial' port='0'>
                <model name='isa-serial'/>
              </target>
            </serial>
            <console type='pty'>
              <target type='serial' port='0'/>
            </console>
          </devices>
        </domain>
        """

    /// virt-install --boot uefi --import --os-variant debian12, after libvirt's firmware
    /// autoselection filled in the loader and the per-VM variable store.
    static let virtInstallUEFI = """
        <domain type='kvm'>
          <name>deb-uefi</name>
          <uuid>9a4e1c2b-3d5f-4a6b-8c7d-0e1f2a3b4c5d</uuid>
          <memory unit='KiB'>4194304</memory>
          <currentMemory unit='KiB'>4194304</currentMemory>
          <vcpu placement='static'>4</vcpu>
          <os firmware='efi'>
            <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
            <firmware>
              <feature enabled='no' name='enrolled-keys'/>
              <feature enabled='no' name='secure-boot'/>
            </firmware>
            <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
            <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram>
            <boot dev='hd'/>
          </os>
          <features>
            <acpi/>
            <apic/>
          </features>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/deb-uefi.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            <interface type='network'>
              <mac address='52:54:00:9c:41:7e'/>
              <source network='default'/>
              <model type='virtio'/>
            </interface>
          </devices>
        </domain>
        """

    static func domain(os: String) -> String {
        "<domain type='kvm'><name>vm1</name><memory unit='MiB'>512</memory>\(os)<devices/></domain>"
    }

    static func expectStableRoundTrip(_ definition: VMDefinition) throws {
        let xml = definition.libvirtXML()
        let again = try ImportResult(libvirtXML: xml)
        #expect(again.definition == definition)
        #expect(again.unsupported == [])
        #expect(again.definition.libvirtXML() == xml)
        #expect(try VMDefinition(yaml: try definition.yaml()) == definition)
        #expect(try VMDefinition(yaml: definition.json()) == definition)
    }

    // MARK: - Native format

    @Test func yamlWithUEFIAVariableStoreAndABootOrder() throws {
        let d = try VMDefinition(yaml: """
            name: win
            memory: 4GiB
            os:
              firmware: uefi
              nvram: /var/lib/vireo/nvram/win_VARS.fd
              boot: [cdrom, hd]
            """)
        #expect(d.os == OSBoot(firmware: .uefi, nvram: "/var/lib/vireo/nvram/win_VARS.fd", bootOrder: [.cdrom, .hd]))
        #expect(d.os.kernel == nil && d.os.initrd == nil && d.os.cmdline == "")
        let yaml = try d.yaml()
        #expect(yaml.contains("os:\n  firmware: uefi\n  nvram: /var/lib/vireo/nvram/win_VARS.fd\n  boot:\n  - cdrom\n  - hd\n"))
        #expect(!yaml.contains("kernel") && !yaml.contains("cmdline"))
        try Self.expectStableRoundTrip(d)
    }

    @Test func yamlFirmwareDefaultsAndSpellings() throws {
        let bios = try VMDefinition(yaml: "name: a\nmemory: 512M\nos: {firmware: bios}")
        #expect(bios.os == OSBoot(firmware: .bios))
        #expect(bios.os.bootOrder == [.hd])
        #expect(bios.json().contains("\"os\": {\n    \"firmware\": \"bios\",\n    \"boot\": [\n      \"hd\"\n    ]\n  }"))
        let file = try VMDefinition(yaml: "{\"name\": \"a\", \"memory\": \"512M\", \"os\": {\"firmware\": \"/srv/fw/custom.fd\"}}")
        #expect(file.os.firmware == .file("/srv/fw/custom.fd"))
        // Debian's own images have one spelling each, so every format reads them back the same.
        #expect(try VMDefinition(yaml: "name: a\nmemory: 512M\nos: {firmware: /usr/share/ovmf/OVMF.fd}").os.firmware == .uefi)
        #expect(try VMDefinition(yaml: "name: a\nmemory: 512M\nos: {firmware: /usr/share/seabios/bios-256k.bin}").os.firmware == .bios)
        try Self.expectStableRoundTrip(bios)
        try Self.expectStableRoundTrip(file)
    }

    @Test func kernelDefinitionsAreWrittenAsBefore() throws {
        let d = try VMDefinition(yaml: "name: a\nmemory: 512M\nos: {kernel: /k}")
        #expect(d.os == OSBoot(kernel: "/k"))
        #expect(try d.yaml().contains("os:\n  kernel: /k\n  cmdline: ''\ndisks"))
        #expect(d.libvirtXML().contains("""
              <os>
                <type arch='x86_64'>hvm</type>
                <kernel>/k</kernel>
                <cmdline></cmdline>
              </os>
            """))
    }

    static let invalidNative: [(String, String)] = [
        ("os: {}", "os: needs os.kernel (direct kernel boot) or os.firmware (bios, uefi or a firmware file)"),
        ("os: {kernel: /k, firmware: bios}",
         "os.firmware: excludes os.kernel (a kernel boots directly; firmware boots the disk's boot loader)"),
        ("os: {firmware: bios, initrd: /i}", "os.initrd: only with a kernel (with firmware the disk's boot loader loads one)"),
        ("os: {firmware: uefi, cmdline: quiet}", "os.cmdline: only with a kernel (with firmware the disk's boot loader sets it)"),
        ("os: {firmware: bios, nvram: /v.fd}", "os.nvram: only with UEFI firmware, not with bios"),
        ("os: {kernel: /k, nvram: /v.fd}", "os.nvram: only with UEFI firmware, not with a kernel"),
        ("os: {kernel: /k, boot: [cdrom]}", "os.boot: only with firmware (a kernel is booted directly)"),
        ("os: {firmware: efi}", "os.firmware: 'efi' is not bios, uefi or an absolute path"),
        ("os: {firmware: ''}", "os.firmware: '' is not bios, uefi or an absolute path"),
        ("os: {firmware: uefi, nvram: vars.fd}", "os.nvram: 'vars.fd' is not an absolute path"),
        ("os: {firmware: bios, boot: [floppy]}", "os.boot[0]: unknown boot device 'floppy' (expected hd, cdrom or network)"),
        ("os: {firmware: bios, boot: [hd, fd]}", "os.boot[1]: unknown boot device 'fd' (expected hd, cdrom or network)"),
        ("os: {firmware: bios, boot: []}", "os.boot: must not be empty"),
        ("os: {firmware: bios, boot: [hd, cdrom, hd]}", "os.boot: 'hd' appears more than once"),
        ("os: {firmware: bios, boot: [hd, cdrom, network, hd]}", "os.boot: 4 boot devices exceed the limit of 3"),
        ("os: {firmware: bios, boot: hd}", "os.boot: expected a list"),
        ("os: {firmware: bios, bootorder: [hd]}", "os.bootorder: unknown key (expected kernel, initrd, cmdline, firmware, nvram, boot)"),
    ]

    @Test(arguments: invalidNative)
    func invalidNativeCombinations(os: String, message: String) {
        do {
            let definition = try VMDefinition(yaml: "name: vm1\nmemory: 512M\n" + os)
            Issue.record("accepted: \(definition.os)")
        } catch let error as DefinitionError {
            #expect(error.description == message)
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func definitionsBuiltInCodeAreValidatedToo() {
        func message(_ os: OSBoot) -> String? {
            do {
                try VMDefinition(name: "a", memory: 512 << 20, os: os).validate()
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(message(OSBoot()) == "os: needs os.kernel (direct kernel boot) or os.firmware (bios, uefi or a firmware file)")
        #expect(message(OSBoot(firmware: .file("/usr/share/ovmf/OVMF.fd")))
            == "os.firmware: '/usr/share/ovmf/OVMF.fd' is Debian's uefi firmware: write uefi")
        #expect(message(OSBoot(firmware: .file("fw.bin"))) == "os.firmware: 'fw.bin' is not an absolute path")
        #expect(message(OSBoot(firmware: .file("/srv/fw.bin"), nvram: "/srv/vars.fd")) == nil)
        #expect(message(OSBoot(firmware: .uefi, nvram: "/srv/vars.fd", bootOrder: [.network])) == nil)
        // The initializer stays source-compatible: a kernel alone is what it always was.
        #expect(OSBoot(kernel: "/k", cmdline: "quiet") == OSBoot(kernel: "/k", initrd: nil, cmdline: "quiet", firmware: nil,
                                                                 nvram: nil, bootOrder: [.hd]))
    }

    // MARK: - libvirt import

    @Test func virtInstallBIOSDomain() throws {
        let result = try ImportResult(libvirtXML: Self.virtInstallBIOS)
        let d = result.definition
        #expect(d.name == "deb-bios" && d.vcpus == 2 && d.memory == 2 << 30)
        #expect(d.os == OSBoot(firmware: .bios, bootOrder: [.hd, .cdrom]))
        #expect(d.disks.map(\.target) == ["vda", "sda"] && d.disks[1].device == .cdrom)
        #expect(d.console.type == .pty)
        #expect(result.unsupported.sorted() == [
            "cpu (mode=host-passthrough)",
            "devices/disk[2]/target (bus=sata)",
            "devices/emulator",
            "features",
            "metadata/libosinfo:libosinfo",
            "os/type (machine=pc-q35-7.2)",
        ])
        try Self.expectStableRoundTrip(d)
    }

    @Test func virtInstallUEFIDomain() throws {
        let result = try ImportResult(libvirtXML: Self.virtInstallUEFI)
        let d = result.definition
        #expect(d.name == "deb-uefi" && d.vcpus == 4)
        #expect(d.os == OSBoot(firmware: .uefi, nvram: "/var/lib/libvirt/qemu/nvram/vm_VARS.fd", bootOrder: [.hd]))
        #expect(d.interfaces.map(\.source) == ["default"])
        #expect(result.unsupported.sorted() == [
            "features",
            "os/firmware",
            "os/nvram (template=/usr/share/OVMF/OVMF_VARS_4M.fd)",
            "os/type (machine=pc-q35-7.2)",
        ])
        #expect(d.libvirtXML().contains("""
              <os firmware='efi'>
                <type arch='x86_64'>hvm</type>
                <nvram>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram>
                <boot dev='hd'/>
              </os>
            """))
        try Self.expectStableRoundTrip(d)
    }

    static let importedOS: [(String, OSBoot)] = [
        // No kernel, no loader, no firmware attribute: SeaBIOS, libvirt's default.
        ("<os><type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type></os>", OSBoot(firmware: .bios)),
        ("<os><type>hvm</type><boot dev='network'/><boot dev='hd'/></os>", OSBoot(firmware: .bios, bootOrder: [.network, .hd])),
        ("<os firmware='bios'><type>hvm</type></os>", OSBoot(firmware: .bios)),
        ("<os firmware='efi'><type>hvm</type></os>", OSBoot(firmware: .uefi)),
        ("<os firmware='efi'><type>hvm</type><loader secure='no'/><nvram/></os>", OSBoot(firmware: .uefi)),
        // Before firmware autoselection: the loader alone says UEFI.
        ("<os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
            + "<nvram>/var/lib/libvirt/qemu/nvram/old_VARS.fd</nvram></os>",
         OSBoot(firmware: .uefi, nvram: "/var/lib/libvirt/qemu/nvram/old_VARS.fd")),
        ("<os><type>hvm</type><loader type='rom'>/usr/share/ovmf/OVMF.fd</loader></os>", OSBoot(firmware: .uefi)),
        ("<os><type>hvm</type><loader type='rom'>/usr/share/seabios/bios-256k.bin</loader></os>", OSBoot(firmware: .bios)),
        ("<os><type>hvm</type><loader type='rom'>/srv/fw/seabios-debug.bin</loader></os>",
         OSBoot(firmware: .file("/srv/fw/seabios-debug.bin"))),
        ("<os firmware='efi'><type>hvm</type><loader readonly='yes' type='pflash'>/srv/fw/OVMF_CODE.fd</loader>"
            + "<nvram>/srv/fw/vm_VARS.fd</nvram></os>",
         OSBoot(firmware: .file("/srv/fw/OVMF_CODE.fd"), nvram: "/srv/fw/vm_VARS.fd")),
    ]

    @Test(arguments: importedOS)
    func libvirtOSForms(os: String, expected: OSBoot) throws {
        let result = try ImportResult(libvirtXML: Self.domain(os: os))
        #expect(result.definition.os == expected)
        try Self.expectStableRoundTrip(result.definition)
    }

    @Test func kernelDomainsIgnoreFirmwareElementsAsBefore() throws {
        let result = try ImportResult(libvirtXML: Self.domain(os: """
            <os firmware='efi'><type>hvm</type><loader type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
            <kernel>/k</kernel><boot dev='cdrom'/></os>
            """))
        #expect(result.definition.os == OSBoot(kernel: "/k"))
        #expect(result.unsupported.sorted() == ["os (firmware=efi)", "os/boot", "os/loader (type=pflash)"])
    }

    static let invalidXML: [(String, String)] = [
        ("<os firmware='xen'><type>hvm</type></os>", "os: firmware 'xen' is not supported (expected bios or efi)"),
        ("<os firmware='efi'><type>hvm</type><loader type='rom'>/usr/share/seabios/bios-256k.bin</loader></os>",
         "os/loader: '/usr/share/seabios/bios-256k.bin' is SeaBIOS, but the os firmware attribute is 'efi'"),
        ("<os firmware='bios'><type>hvm</type><loader type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader></os>",
         "os/loader: '/usr/share/OVMF/OVMF_CODE_4M.fd' is OVMF, but the os firmware attribute is 'bios'"),
        ("<os><type>hvm</type><loader readonly='yes' type='pflash'/></os>",
         "os/loader: has no path (name the firmware file, or write <os firmware='efi'>)"),
        ("<os><type>hvm</type><loader>OVMF.fd</loader></os>", "os/loader: 'OVMF.fd' is not an absolute path"),
        ("<os><type>hvm</type><loader>/a</loader><loader>/b</loader></os>", "os/loader: appears more than once"),
        ("<os><type>hvm</type><nvram>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram></os>",
         "os/nvram: only with UEFI firmware, not with bios"),
        ("<os firmware='efi'><type>hvm</type><nvram>vm_VARS.fd</nvram></os>", "os/nvram: 'vm_VARS.fd' is not an absolute path"),
        ("<os><type>hvm</type><boot/></os>", "os/boot: missing dev attribute"),
        ("<os><type>hvm</type><boot dev='hd'/><boot dev='fd'/></os>",
         "os/boot[2]: unknown boot device 'fd' (expected hd, cdrom or network)"),
        ("<os><type>hvm</type><boot dev='hd'/><boot dev='hd'/></os>", "os/boot: 'hd' appears more than once"),
    ]

    @Test(arguments: invalidXML)
    func invalidLibvirtOS(os: String, message: String) {
        do {
            let result = try ImportResult(libvirtXML: Self.domain(os: os))
            Issue.record("accepted: \(result.definition.os)")
        } catch let error as DefinitionError {
            #expect(error.description == message)
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    // MARK: - dumpxml

    @Test func exportWritesLibvirtsFirmwareElements() throws {
        func os(_ boot: OSBoot) throws -> String {
            let definition = VMDefinition(name: "a", uuid: UUID(), memory: 512 << 20, os: boot)
            try definition.validate()
            let xml = definition.libvirtXML()
            let start = try #require(xml.range(of: "  <os"))
            let end = try #require(xml.range(of: "</os>\n"))
            return String(xml[start.lowerBound..<end.upperBound])
        }
        #expect(try os(OSBoot(firmware: .bios, bootOrder: [.cdrom, .hd])) == """
              <os>
                <type arch='x86_64'>hvm</type>
                <boot dev='cdrom'/>
                <boot dev='hd'/>
              </os>

            """)
        #expect(try os(OSBoot(firmware: .uefi)) == """
              <os firmware='efi'>
                <type arch='x86_64'>hvm</type>
                <boot dev='hd'/>
              </os>

            """)
        #expect(try os(OSBoot(firmware: .file("/srv/fw/OVMF_CODE.fd"), nvram: "/srv/vm_VARS.fd")) == """
              <os>
                <type arch='x86_64'>hvm</type>
                <loader readonly='yes' type='pflash'>/srv/fw/OVMF_CODE.fd</loader>
                <nvram>/srv/vm_VARS.fd</nvram>
                <boot dev='hd'/>
              </os>

            """)
        #expect(try os(OSBoot(firmware: .file("/srv/fw/bios & co.bin"))) == """
              <os>
                <type arch='x86_64'>hvm</type>
                <loader type='rom'>/srv/fw/bios &amp; co.bin</loader>
                <boot dev='hd'/>
              </os>

            """)
    }

    // MARK: - LaunchSpec

    static let paths = VMPaths(stateDirectory: "/s", name: "fw")

    static func definition(_ os: OSBoot) -> VMDefinition {
        VMDefinition(name: "fw", memory: 256 << 20, vcpus: 2, os: os,
                     disks: [Disk(source: "/images/fw.qcow2", format: .qcow2, target: "vda")])
    }

    @Test func firmwareDefinitionsLaunchFirmwareWithoutAKernel() throws {
        let bios = try VMLaunch.spec(for: Self.definition(OSBoot(firmware: .bios)), paths: Self.paths)
        #expect(bios.firmware == "bios" && bios.kernel == nil && bios.initrd == nil && bios.cmdline == "")
        #expect(bios.firmwareLog == nil)
        #expect(bios.cpus == 2 && bios.memoryBytes == 256 << 20)
        #expect(bios.devices.disks == [DiskOptions(path: "/images/fw.qcow2", readOnly: false, format: .qcow2, serial: nil)])
        #expect(bios.efivars == nil)
        // UEFI: the VM's own variable store, in its directory unless the definition names one.
        let uefi = try VMLaunch.spec(for: Self.definition(OSBoot(firmware: .uefi)), paths: Self.paths)
        #expect(uefi.firmware == "uefi" && uefi.efivars == "/s/vms/fw/nvram.fd")
        let named = try VMLaunch.spec(for: Self.definition(OSBoot(firmware: .uefi, nvram: "/var/lib/libvirt/qemu/nvram/vm_VARS.fd")),
                                      paths: Self.paths)
        #expect(named.efivars == "/var/lib/libvirt/qemu/nvram/vm_VARS.fd")
        let file = try VMLaunch.spec(for: Self.definition(OSBoot(firmware: .file("/srv/fw.bin"))), paths: Self.paths)
        #expect(file.firmware == "/srv/fw.bin" && file.kernel == nil && file.efivars == nil)
        let fileWithStore = try VMLaunch.spec(for: Self.definition(OSBoot(firmware: .file("/srv/OVMF_CODE.fd"), nvram: "/srv/vm_VARS.fd")),
                                              paths: Self.paths)
        #expect(fileWithStore.efivars == "/srv/vm_VARS.fd")
        // A restored or arriving firmware machine needs its ROM mapped again.
        let restore = try VMLaunch.spec(for: Self.definition(OSBoot(firmware: .uefi)), paths: Self.paths,
                                        restore: RestoreSource(path: "/saves/fw"))
        #expect(restore.firmware == "uefi" && restore.kernel == nil && restore.restore?.path == "/saves/fw")
        #expect(restore.efivars == "/s/vms/fw/nvram.fd")
        // Kernel definitions name no firmware.
        let kernel = try VMLaunch.spec(for: Self.definition(OSBoot(kernel: "/k", cmdline: "quiet")), paths: Self.paths)
        #expect(kernel.firmware == nil && kernel.kernel == "/k" && kernel.cmdline == "quiet")
    }

    @Test func whatTheVMMCannotDoYetIsRefusedAtStartNotAtDefine() throws {
        let cdromFirst = Self.definition(OSBoot(firmware: .bios, bootOrder: [.cdrom, .hd]))
        try cdromFirst.validate()
        #expect(throws: APIError(501, "cannot start domain 'fw': boot order [cdrom, hd] is not supported by the VMM yet (the firmware chooses the boot device itself); set os.boot to [hd] to start", field: "os.boot")) {
            try VMLaunch.spec(for: cdromFirst, paths: Self.paths)
        }
        #expect(throws: APIError.self) {
            try VMLaunch.spec(for: cdromFirst, paths: Self.paths, incoming: "tcp:0.0.0.0:4444")
        }
    }
}
