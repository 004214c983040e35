import Foundation
import Testing
@testable import Manager

/// <cputune>, <memtune> and <blkiotune> as libvirt users write them, and the native spelling.
@Suite("Resource tuning definitions")
struct TuningDefinitionTests {
    /// The shape of virsh's own output (schedinfo / memtune / blkiotune set on a domain), with
    /// the children Vireo does not apply (vcpupin, min_guarantee) left in to be reported.
    static let xml = """
        <domain type='kvm'>
          <name>tuned</name>
          <memory unit='MiB'>512</memory>
          <blkiotune>
            <weight>800</weight>
            <device>
              <path>/dev/sda</path>
              <weight>1000</weight>
              <read_iops_sec>2000</read_iops_sec>
              <write_bytes_sec>10485760</write_bytes_sec>
            </device>
            <device><path>/dev/vdb</path><read_bytes_sec>1048576</read_bytes_sec></device>
          </blkiotune>
          <memtune>
            <hard_limit unit='KiB'>1048576</hard_limit>
            <soft_limit unit='MiB'>256</soft_limit>
            <swap_hard_limit>2097152</swap_hard_limit>
            <min_guarantee unit='KiB'>65536</min_guarantee>
          </memtune>
          <vcpu placement='static'>2</vcpu>
          <cputune>
            <vcpupin vcpu='0' cpuset='1'/>
            <shares>2048</shares>
            <period>100000</period>
            <quota>-1</quota>
          </cputune>
          <os><type arch='x86_64'>hvm</type><kernel>/boot/vmlinuz</kernel></os>
        </domain>
        """

    @Test func libvirtTuningIsImportedWithLibvirtsUnitsAndTheRestReported() throws {
        let result = try ImportResult(libvirtXML: Self.xml)
        let d = result.definition
        #expect(d.cputune == CPUTune(shares: 2048, period: 100_000, quota: nil), "quota -1 is no limit")
        #expect(d.memtune == MemoryTune(hardLimit: 1 << 30, softLimit: 256 << 20, swapHardLimit: 2 << 30), "KiB unless a unit says")
        #expect(d.blkiotune == BlockIOTune(weight: 800, devices: [
            BlockIODevice(path: "/dev/sda", weight: 1000, writeBytesPerSecond: 10 << 20, readIOPS: 2000),
            BlockIODevice(path: "/dev/vdb", readBytesPerSecond: 1 << 20),
        ]))
        #expect(d.asksForResourceLimits)
        #expect(result.unsupported.sorted() == ["cputune/vcpupin", "memtune/min_guarantee"])
        let again = try ImportResult(libvirtXML: d.libvirtXML())
        #expect(again.definition == d && again.unsupported.isEmpty)
        #expect(try VMDefinition(yaml: try d.yaml()) == d)
    }

    @Test func nativeSpellingIsCamelCaseWithSizes() throws {
        let d = try VMDefinition(yaml: """
            name: tuned
            memory: 512M
            os: {kernel: /boot/vmlinuz}
            cputune: {shares: 512, period: 50000, quota: 25000}
            memtune: {hardLimit: 768MiB, softLimit: 512MiB, swapHardLimit: 1GiB}
            blkiotune:
              weight: 300
              devices:
                - {path: /dev/sda, readBytesSec: 20MiB, writeIopsSec: 100}
            """)
        #expect(d.cputune == CPUTune(shares: 512, period: 50_000, quota: 25_000))
        #expect(d.memtune == MemoryTune(hardLimit: 768 << 20, softLimit: 512 << 20, swapHardLimit: 1 << 30))
        #expect(d.blkiotune.devices == [BlockIODevice(path: "/dev/sda", readBytesPerSecond: 20 << 20, writeIOPS: 100)])
        let yaml = try d.yaml()
        #expect(yaml.contains("memtune:\n  hardLimit: 768MiB\n  softLimit: 512MiB\n  swapHardLimit: 1GiB\n"), "\(yaml)")
        #expect(yaml.contains("cputune:\n  shares: 512\n  period: 50000\n  quota: 25000\n"), "\(yaml)")
        let xml = d.libvirtXML()
        #expect(xml.contains("<hard_limit unit='KiB'>786432</hard_limit>"))
        #expect(xml.contains("<read_bytes_sec>20971520</read_bytes_sec>"))
        #expect(xml.contains("<quota>25000</quota>"))
    }

    @Test func quotaMinusOneIsUnlimitedAndAnEmptyTuneIsNotWritten() throws {
        let d = try VMDefinition(yaml: "name: a\nmemory: 64M\nos: {kernel: /k}\ncputune: {quota: -1}\n")
        #expect(d.cputune.isEmpty && !d.asksForResourceLimits)
        let yaml = try d.yaml()
        #expect(!yaml.contains("cputune") && !yaml.contains("memtune") && !yaml.contains("blkiotune"))
        #expect(!d.libvirtXML().contains("tune>"))
    }
}
