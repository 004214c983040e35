import Foundation
import Testing
@testable import Manager

@Suite("Native YAML/JSON definitions")
struct NativeFormatTests {
    static let minimal = """
        name: vm1
        memory: 512M
        os:
          kernel: /var/lib/vireo/vmlinux
        """

    static let full = """
        name: web-01
        uuid: 4DEA22B3-1D52-D8F3-2516-782E98AB3FA0
        memory: 2GiB
        currentMemory: {value: 1536, unit: MiB}
        vcpus: 4
        os:
          kernel: /var/lib/vireo/kernels/vmlinuz-6.6
          initrd: /var/lib/vireo/kernels/initrd-6.6.img
          cmdline: console=ttyS0 root=/dev/vda rw
        disks:
          - source: /var/lib/vireo/images/web-01.qcow2
            format: qcow2
            target: vda
            serial: WEB01-ROOT
          - source: /dev/vg0/web-data
            type: block
            target: vdb
            readonly: true
          - source: /srv/iso/tools.iso
            device: cdrom
            target: vdc
        interfaces:
          - type: bridge
            source: br0
            mac: 52:54:00:AB:CD:EF
          - type: network
            source: default
          - type: tap
            source: tap-web01
            mac: 52:54:00:00:00:02
            model: virtio
        console:
          type: pty
        onPoweroff: destroy
        onReboot: restart
        onCrash: preserve
        autostart: true
        """

    @Test func minimalDefinitionGetsDocumentedDefaults() throws {
        let definition = try VMDefinition(yaml: Self.minimal)
        #expect(definition.name == "vm1")
        #expect(definition.memory == 512 << 20)
        #expect(definition.currentMemory == 512 << 20)
        #expect(definition.vcpus == 1)
        #expect(definition.os == OSBoot(kernel: "/var/lib/vireo/vmlinux", initrd: nil, cmdline: ""))
        #expect(definition.disks.isEmpty && definition.interfaces.isEmpty)
        #expect(definition.console.type == .pty)
        #expect(definition.onPoweroff == .destroy && definition.onReboot == .restart && definition.onCrash == .destroy)
        #expect(definition.autostart == false)
        // A generated UUID is random (version 4); two parses must not share one.
        #expect(try VMDefinition(yaml: Self.minimal).uuid != definition.uuid)
    }

    @Test func fullDefinitionReadsEveryField() throws {
        let d = try VMDefinition(yaml: Self.full)
        #expect(d.name == "web-01")
        #expect(d.uuid.uuidString.lowercased() == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0")
        #expect(d.memory == 2 << 30)
        #expect(d.currentMemory == 1536 << 20)
        #expect(d.vcpus == 4)
        #expect(d.os.initrd == "/var/lib/vireo/kernels/initrd-6.6.img")
        #expect(d.os.cmdline == "console=ttyS0 root=/dev/vda rw")
        #expect(d.disks == [
            Disk(source: "/var/lib/vireo/images/web-01.qcow2", type: .file, device: .disk, format: .qcow2,
                 target: "vda", readonly: false, serial: "WEB01-ROOT"),
            Disk(source: "/dev/vg0/web-data", type: .block, device: .disk, format: .raw, target: "vdb", readonly: true),
            Disk(source: "/srv/iso/tools.iso", type: .file, device: .cdrom, format: .raw, target: "vdc", readonly: true),
        ])
        #expect(d.interfaces[0] == NetworkInterface(type: .bridge, source: "br0", mac: try #require(MACAddress("52:54:00:ab:cd:ef"))))
        #expect(d.interfaces[1].type == .network && d.interfaces[1].source == "default")
        #expect(d.interfaces[1].mac.description.hasPrefix("52:54:00:"))
        #expect(d.interfaces[2].type == .tap && d.interfaces[2].mac.description == "52:54:00:00:00:02")
        #expect(d.onCrash == .preserve)
        #expect(d.autostart)
    }

    @Test func jsonIsAcceptedWithTheSameSchema() throws {
        let json = """
            {"name": "vm1", "memory": 536870912, "vcpus": 2,
             "os": {"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0"},
             "disks": [{"source": "/images/vm1.raw", "target": "vda"}],
             "autostart": false}
            """
        let d = try VMDefinition(yaml: json)
        #expect(d.memory == 512 << 20 && d.vcpus == 2)
        #expect(d.disks == [Disk(source: "/images/vm1.raw", target: "vda")])
    }

    static let sizeSpellings: [(String, UInt64)] = [
        ("512M", 512 << 20), ("512MiB", 512 << 20), ("2G", 2 << 30), ("2GiB", 2 << 30),
        ("2 GiB", 2 << 30), ("1t", 1 << 40), ("65536K", 64 << 20), ("1024MB", 1_024_000_000),
        ("4096000KB", 4_096_000_000), ("16777216", 16 << 20), ("16777216b", 16 << 20),
    ]

    @Test(arguments: sizeSpellings)
    func sizesAcceptUnits(text: String, bytes: UInt64) throws {
        let d = try VMDefinition(yaml: "name: a\nmemory: \(text)\nos: {kernel: /k}\n")
        #expect(d.memory == bytes)
    }

    @Test func sizeObjectsAcceptValueAndUnit() throws {
        let d = try VMDefinition(yaml: "name: a\nmemory: {value: 3, unit: GiB}\ncurrentMemory: {value: 1073741824}\nos: {kernel: /k}")
        #expect(d.memory == 3 << 30 && d.currentMemory == 1 << 30)
    }

    @Test func yamlRoundTripsEveryField() throws {
        let original = try VMDefinition(yaml: Self.full)
        let yaml = try original.yaml()
        #expect(try VMDefinition(yaml: yaml) == original)
        // Sizes are written in units a person reads, not bytes.
        #expect(yaml.contains("memory: 2GiB"))
        #expect(yaml.contains("currentMemory: 1536MiB"))
    }

    @Test func jsonRoundTripsAndKeepsDocumentedKeyOrder() throws {
        let original = try VMDefinition(yaml: Self.full)
        let json = original.json()
        #expect(try VMDefinition(yaml: json) == original)
        #expect(try JSONDecoder().decode(VMDefinition.self, from: Data(json.utf8)) == original)
        let keys = ["\"name\"", "\"uuid\"", "\"memory\"", "\"currentMemory\"", "\"vcpus\"", "\"os\"", "\"disks\"",
                    "\"interfaces\"", "\"console\"", "\"onPoweroff\"", "\"onReboot\"", "\"onCrash\"", "\"autostart\""]
        let positions = keys.compactMap { json.range(of: $0)?.lowerBound }
        #expect(positions.count == keys.count)
        #expect(positions == positions.sorted())
    }

    @Test func stringsThatLookLikeOtherYAMLTypesSurviveTheRoundTrip() throws {
        // "123", "yes", "null", "1e3" are valid names/serials that a careless emitter would unquote.
        for name in ["123", "yes", "null", "1e3", "on", "0x1F"] {
            var d = try VMDefinition(yaml: Self.minimal)
            d.name = name
            d.disks = [Disk(source: "/x", target: "vda", serial: name)]
            let reparsed = try VMDefinition(yaml: try d.yaml())
            #expect(reparsed == d, "name \(name)")
        }
    }

    @Test func codableDecodingValidatesLikeTheParser() throws {
        let stored = #"{"name": "bad name", "memory": "1GiB", "os": {"kernel": "/k"}}"#
        #expect(throws: DefinitionError.invalidValue(
            field: "name", reason: "'bad name' contains ' ' (allowed: letters, digits, '.', '_', '-')")) {
            try JSONDecoder().decode(VMDefinition.self, from: Data(stored.utf8))
        }
    }

    @Test func validateCatchesValuesBuiltInCode() throws {
        var d = try VMDefinition(yaml: Self.minimal)
        d.disks = [Disk(source: "/a", target: "vda"), Disk(source: "/b", target: "vda")]
        #expect(throws: DefinitionError.invalidValue(field: "disks[1].target", reason: "'vda' is used by another disk")) {
            try d.validate()
        }
    }
}
