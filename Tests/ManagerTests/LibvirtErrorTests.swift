import Foundation
import Testing
@testable import Manager

/// Bad values in domain XML are errors that name the element, XPath-style.
@Suite("libvirt import errors")
struct LibvirtErrorTests {
    /// A valid domain with `devices` inside <devices> and `extra` after <os>; `os` replaceable.
    static func domain(
        _ devices: String = "", extra: String = "", name: String = "<name>vm1</name>",
        memory: String = "<memory unit='MiB'>512</memory>",
        os: String = "<os><type>hvm</type><kernel>/boot/vmlinuz</kernel></os>", type: String = "type='kvm'"
    ) -> String {
        "<domain \(type)>\(name)\(memory)\(os)\(extra)<devices>\(devices)</devices></domain>"
    }

    static let disk = "<disk type='file' device='disk'><source file='/a.raw'/><target dev='vda'/></disk>"

    static let cases: [(String, String)] = [
        ("<vm/>", "vm: root element is 'vm' (expected domain)"),
        (domain(type: ""), "domain: missing type attribute (expected kvm)"),
        (domain(type: "type='xen'"), "domain: type 'xen' is not supported (expected kvm)"),
        (domain(name: ""), "name: missing"),
        (domain(name: "<name>vm1</name><name>vm2</name>"), "name: appears more than once"),
        (domain(name: "<name>my vm</name>"), "name: 'my vm' contains ' ' (allowed: letters, digits, '.', '_', '-')"),
        (domain(memory: ""), "memory: missing"),
        (domain(memory: "<memory unit='XB'>1</memory>"), "memory: unknown unit 'XB'"),
        (domain(memory: "<memory>abc</memory>"), "memory: 'abc' is not a number"),
        (domain(memory: "<memory>-1048576</memory>"), "memory: '-1048576' is not a number"),
        (domain(memory: "<memory>99999999999999999999999</memory>"), "memory: '99999999999999999999999' is too large"),
        (domain(memory: "<memory unit='TiB'>99999999</memory>"), "memory: '99999999 TiB' is too large"),
        (domain(memory: "<memory unit='b'>1000</memory>"), "memory: 1000 bytes is below the minimum of 1MiB"),
        (domain(extra: "<currentMemory unit='GiB'>1</currentMemory>"), "currentMemory: 1GiB exceeds memory (512MiB)"),
        (domain(extra: "<vcpu>many</vcpu>"), "vcpu: 'many' is not a number"),
        (domain(extra: "<vcpu>0</vcpu>"), "vcpu: 0 is out of range (1 to 255)"),
        (domain(extra: "<uuid>xyz</uuid>"), "uuid: 'xyz' is not a UUID"),
        (domain(extra: "<on_crash>coredump-destroy</on_crash>"),
         "on_crash: unknown action 'coredump-destroy' (expected destroy, restart or preserve)"),
        (domain(os: ""), "os: missing"),
        (domain(os: "<os><type>xen</type><kernel>/k</kernel></os>"), "os/type: 'xen' is not supported (expected hvm)"),
        (domain(os: "<os><type arch='aarch64'>hvm</type><kernel>/k</kernel></os>"),
         "os/type: arch 'aarch64' is not supported (expected x86_64)"),
        (domain(os: "<os><type>hvm</type><boot dev='fd'/></os>"),
         "os/boot: unknown boot device 'fd' (expected hd, cdrom or network)"),
        (domain(os: "<os><type>hvm</type><kernel>vmlinuz</kernel></os>"), "os/kernel: 'vmlinuz' is not an absolute path"),
        (domain(disk + "<disk type='file'><driver name='qemu' type='vmdk'/><source file='/b'/><target dev='vdb'/></disk>"),
         "devices/disk[2]/driver: unknown format 'vmdk' (expected raw or qcow2)"),
        (domain("<disk type='network'><source protocol='nbd'/><target dev='vda'/></disk>"),
         "devices/disk: unknown disk type 'network' (expected file or block)"),
        (domain("<disk type='file' device='floppy'><source file='/f'/><target dev='fda'/></disk>"),
         "devices/disk: unknown device 'floppy' (expected disk or cdrom)"),
        (domain("<disk type='file'><target dev='vda'/></disk>"), "devices/disk/source: missing"),
        (domain("<disk type='file'><source dev='/dev/sda'/><target dev='vda'/></disk>"),
         "devices/disk/source: missing file attribute"),
        (domain("<disk type='file'><source file='/a'/></disk>"), "devices/disk/target: missing"),
        (domain(disk + disk), "devices/disk[2]/target: 'vda' is used by another disk"),
        (domain("<disk type='file'><source file='/a'/><target dev='vda'/><serial>\(String(repeating: "x", count: 21))</serial></disk>"),
         "devices/disk/serial: '\(String(repeating: "x", count: 21))' is not 1 to 20 printable ASCII characters"),
        (domain("<interface type='vdpa'><model type='virtio'/></interface>"),
         "devices/interface: interface type 'vdpa' is not supported (expected bridge, network, ethernet or user)"),
        (domain("<interface type='bridge'><model type='virtio'/></interface>"), "devices/interface/source: missing"),
        (domain("<interface type='bridge'><source network='default'/></interface>"),
         "devices/interface/source: missing bridge attribute"),
        (domain("<interface type='ethernet'><model type='virtio'/></interface>"), "devices/interface/target: missing"),
        (domain("<interface type='bridge'><source bridge='br0'/><mac address='zz'/></interface>"),
         "devices/interface/mac: 'zz' is not a MAC address"),
        (domain("<interface type='bridge'><source bridge='br0'/><mac address='03:00:00:00:00:01'/></interface>"),
         "devices/interface/mac: 03:00:00:00:00:01 is a multicast address"),
        (domain("<interface type='bridge'><source bridge='br0'/><model type='ne2000'/></interface>"),
         "devices/interface/model: unknown model 'ne2000' (expected virtio)"),
        (domain("<interface type='ethernet'><target dev='tap/../../x'/></interface>"),
         "devices/interface/target: 'tap/../../x' contains '/' (allowed: letters, digits, '.', '_', '-')"),
        (domain(extra: "<metadata><v:vm xmlns:v='https://vireo.dev/xmlns/domain/1'><v:autostart>maybe</v:autostart></v:vm></metadata>"),
         "metadata/v:vm/v:autostart: 'maybe' is not yes or no"),
        (domain(extra: "<cputune><shares>1</shares></cputune>"), "cputune/shares: 1 is out of range (2 to 262144)"),
        (domain(extra: "<cputune><quota>-5</quota></cputune>"), "cputune/quota: '-5' is not a whole number"),
        (domain(extra: "<cputune><period>10</period></cputune>"), "cputune/period: 10 is out of range (1000 to 1000000)"),
        (domain(extra: "<memtune><hard_limit unit='parsecs'>1</hard_limit></memtune>"), "memtune/hard_limit: unknown unit 'parsecs'"),
        (domain(extra: "<memtune><hard_limit>512</hard_limit></memtune>"), "memtune/hard_limit: 512KiB is below the minimum of 1MiB"),
        (domain(extra: "<memtune><hard_limit>1048576</hard_limit><swap_hard_limit>524288</swap_hard_limit></memtune>"),
         "memtune/swap_hard_limit: 512MiB is below memtune/hard_limit (1GiB)"),
        (domain(extra: "<blkiotune><weight>99</weight></blkiotune>"), "blkiotune/weight: 99 is out of range (100 to 1000)"),
        (domain(extra: "<blkiotune><device><weight>200</weight></device></blkiotune>"), "blkiotune/device/path: missing"),
        (domain(extra: "<blkiotune><device><path>/dev/sda</path><weight>200</weight></device><device><path>/dev/sdb</path><read_iops_sec>0</read_iops_sec></device></blkiotune>"),
         "blkiotune/device[2]/read_iops_sec: must be above 0 (leave it out for no limit)"),
    ]

    @Test(arguments: cases)
    func rejectsWithExactMessage(xml: String, message: String) {
        do {
            let result = try ImportResult(libvirtXML: xml)
            Issue.record("accepted: \(result.definition.name)")
        } catch let error as DefinitionError {
            #expect(error.description == message)
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    /// libxml2's own words with line and column, not just its error number.
    @Test(arguments: [
        ("<domain type='kvm'>\n<name>x</name>\n<memory>1</mem>",
         "XML syntax error at line 3, column 16: Opening and ending tag mismatch: memory line 3 and mem"),
        ("", "XML syntax error at line 1, column 1: Document is empty"),
        ("   \n\n", "XML syntax error at line 3, column 1: Document is empty"),
        ("<domain type='kvm>\n</domain>", "XML syntax error at line 2, column 1: Unescaped '<' not allowed in attributes values"),
        ("<domain type='kvm'><name>a &amp b</name></domain>", "XML syntax error at line 1, column 32: EntityRef: expecting ';'"),
    ])
    func syntaxErrorsNameLineColumnAndTheParsersMessage(xml: String, message: String) {
        #expect(throws: DefinitionError.malformedDocument(reason: message)) { try ImportResult(libvirtXML: xml) }
    }

    @Test func malformedXMLIsASyntaxError() {
        for xml in ["<domain type='kvm'><name>vm1</domain>", "", "not xml at all", "<domain type='kvm'>&undefined;</domain>"] {
            do {
                _ = try ImportResult(libvirtXML: xml)
                Issue.record("accepted \(xml)")
            } catch let error as DefinitionError {
                #expect(error.field == nil, "\(error)")
                #expect(error.description.hasPrefix("definition: "), "\(error)")
            } catch {
                Issue.record("untyped error \(error)")
            }
        }
    }
}
