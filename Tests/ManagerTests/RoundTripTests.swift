import Foundation
import Testing
import TestSupport
@testable import Manager

/// dumpxml, yaml() and json() each read back to the same definition, for any valid definition:
/// checked over a few hundred generated ones that vary every field and use awkward strings.
@Suite("Round trips")
struct RoundTripTests {
    typealias SeededGenerator = SplitMix64

    static let awkwardStrings = [
        "", "console=ttyS0", "a & b < c > d", "quote ' and \" both", "null", "yes", "123", "~", "#not a comment",
        "key: value", "- dash", "[flow]", "{flow}", "ünïcødé ✓", "trailing space ", " leading", "*alias", "&anchor",
        "%percent", "@at", "`tick`", "a,b", "0x1F", "1e3", ".inf", "52:54:00:00:00:01", "!tag",
    ]

    static func pick<T>(_ values: [T], _ rng: inout SeededGenerator) -> T {
        values[Int(rng.next() % UInt64(values.count))]
    }

    static func path(_ rng: inout SeededGenerator) -> String {
        "/var/lib/vireo/" + pick(["a.img", "dir with space/b.qcow2", "x&y<z>.raw", "it's.iso", "ünï.img", "plain"], &rng)
    }

    static func definition(seed: UInt64) -> VMDefinition {
        var rng = SeededGenerator(state: seed)
        let nameCharacters = Array("abcXYZ019._-")
        let name = "v" + String((0..<Int(rng.next() % 63)).map { _ in pick(nameCharacters, &rng) })
        let memoryPages = 256 + rng.next() % (1 << 22)
        let memory = memoryPages * 4096
        let current = max(256, rng.next() % memoryPages + 1) * 4096
        let serialCharacters = Array("AZaz09 -_!~&<>'\"")
        var disks: [Disk] = []
        for index in 0..<Int(rng.next() % 6) {
            let device = pick(Disk.Device.allCases, &rng)
            disks.append(Disk(
                source: path(&rng), type: pick(Disk.SourceType.allCases, &rng), device: device,
                format: pick(Disk.Format.allCases, &rng), target: "vd" + String(UnicodeScalar(UInt8(97 + index))),
                readonly: device == .cdrom ? true : rng.next() % 2 == 0,
                serial: rng.next() % 2 == 0 ? nil : String((0..<(1 + Int(rng.next() % 20))).map { _ in pick(serialCharacters, &rng) })))
        }
        var interfaces: [NetworkInterface] = []
        for index in 0..<Int(rng.next() % 4) {
            let mac = MACAddress(String(format: "52:54:00:%02x:%02x:%02x", index, Int(rng.next() % 256), Int(rng.next() % 256)))
            let type = pick(NetworkInterface.Kind.allCases, &rng)
            interfaces.append(NetworkInterface(
                type: type, source: type == .user ? "" : pick(["br0", "virbr0", "tap-1", "default", "n.e_t"], &rng),
                mac: mac ?? .random(),
                forwards: type == .user ? Array(["tcp::2222-:22", "udp:127.0.0.1:5353-:53", "tcp::8080-:80"].prefix(Int(rng.next() % 4))) : []))
        }
        return VMDefinition(
            name: name, uuid: UUID(), memory: memory, currentMemory: current,
            vcpus: 1 + Int(rng.next() % 255),
            os: os(&rng),
            disks: disks, interfaces: interfaces, console: SerialConsole(type: pick(SerialConsole.Kind.allCases, &rng)),
            onPoweroff: pick(LifecycleAction.allCases, &rng), onReboot: pick(LifecycleAction.allCases, &rng),
            onCrash: pick(LifecycleAction.allCases, &rng), autostart: rng.next() % 2 == 0,
            cputune: cputune(&rng), memtune: memtune(&rng), blkiotune: blkiotune(&rng))
    }

    /// Each field set or not; values across their ranges.
    static func cputune(_ rng: inout SeededGenerator) -> CPUTune {
        func maybe(_ range: ClosedRange<UInt64>) -> UInt64? {
            rng.next() % 2 == 0 ? nil : range.lowerBound + rng.next() % (range.upperBound - range.lowerBound + 1)
        }
        return CPUTune(shares: maybe(CPUTune.sharesRange), period: maybe(CPUTune.periodRange), quota: maybe(CPUTune.quotaRange))
    }

    /// Limits in whole KiB and in odd bytes (written with unit='bytes'); soft ≤ hard ≤ swap.
    static func memtune(_ rng: inout SeededGenerator) -> MemoryTune {
        guard rng.next() % 3 != 0 else { return MemoryTune() }
        let hard = (1 << 20) + rng.next() % (1 << 30) * (rng.next() % 2 == 0 ? 1 : 1024)
        let soft = rng.next() % 2 == 0 ? nil : MemoryTune.minimumLimit + rng.next() % (hard - MemoryTune.minimumLimit + 1)
        let swap = rng.next() % 2 == 0 ? nil : hard + rng.next() % (1 << 30)
        return MemoryTune(hardLimit: rng.next() % 4 == 0 && swap == nil ? nil : hard, softLimit: soft, swapHardLimit: swap)
    }

    static func blkiotune(_ rng: inout SeededGenerator) -> BlockIOTune {
        func maybe(_ limit: UInt64) -> UInt64? { rng.next() % 2 == 0 ? nil : 1 + rng.next() % limit }
        var tune = BlockIOTune(weight: rng.next() % 2 == 0 ? nil : 100 + rng.next() % 901)
        for index in 0..<Int(rng.next() % 3) {
            var device = BlockIODevice(path: "/dev/" + pick(["sda", "vdb", "nvme0n1", "mapper/vg-lv"], &rng) + "\(index)",
                                       weight: rng.next() % 2 == 0 ? nil : 100 + rng.next() % 901,
                                       readBytesPerSecond: maybe(1 << 40), writeBytesPerSecond: maybe(1 << 40),
                                       readIOPS: maybe(1 << 20), writeIOPS: maybe(1 << 20))
            if device.weight == nil && !device.hasThrottle { device.weight = 500 }
            tune.devices.append(device)
        }
        return tune
    }

    /// A kernel (as before firmware boot existed) or firmware with or without a variable store
    /// and with any boot order.
    static func os(_ rng: inout SeededGenerator) -> OSBoot {
        if rng.next() % 3 != 0 {
            return OSBoot(kernel: path(&rng), initrd: rng.next() % 2 == 0 ? nil : path(&rng), cmdline: pick(awkwardStrings, &rng))
        }
        let firmware = pick([Firmware.bios, .uefi, .file(path(&rng))], &rng)
        let nvram = firmware.mayBeUEFI && rng.next() % 2 == 0 ? path(&rng) : nil
        var devices = BootDevice.allCases
        var order: [BootDevice] = []
        for _ in 0..<(1 + Int(rng.next() % 3)) {
            order.append(devices.remove(at: Int(rng.next() % UInt64(devices.count))))
        }
        return OSBoot(firmware: firmware, nvram: nvram, bootOrder: order)
    }

    @Test(arguments: 0..<300)
    func everyFormatReadsBackTheSameDefinition(seed: Int) throws {
        let original = Self.definition(seed: UInt64(seed))
        try original.validate()
        let imported = try ImportResult(libvirtXML: original.libvirtXML())
        #expect(imported.definition == original, "dumpxml, seed \(seed)")
        #expect(imported.unsupported.isEmpty)
        #expect(imported.definition.libvirtXML() == original.libvirtXML(), "dumpxml is byte-stable, seed \(seed)")
        #expect(try VMDefinition(yaml: try original.yaml()) == original, "yaml, seed \(seed)")
        #expect(try VMDefinition(yaml: original.json()) == original, "json via YAML, seed \(seed)")
        #expect(try JSONDecoder().decode(VMDefinition.self, from: Data(original.json().utf8)) == original, "json, seed \(seed)")
        #expect(try VMDefinition(yaml: try imported.definition.yaml()) == original)
    }

    @Test func generatorCoversTheInterestingCases() {
        let definitions = (0..<300).map { Self.definition(seed: UInt64($0)) }
        #expect(definitions.contains { $0.console.type == .none } && definitions.contains { $0.console.type == .pty })
        #expect(definitions.contains { $0.disks.contains { $0.device == .cdrom } })
        #expect(definitions.contains { $0.disks.contains { $0.type == .block } })
        #expect(definitions.contains { $0.interfaces.contains { $0.type == .tap } })
        #expect(definitions.contains { $0.memory % (1 << 20) != 0 }, "sizes that are not whole MiB")
        #expect(definitions.contains { $0.autostart })
        #expect(definitions.contains { $0.os.initrd == nil } && definitions.contains { $0.os.initrd != nil })
        #expect(definitions.contains { $0.os.firmware == .bios } && definitions.contains { $0.os.firmware == .uefi })
        #expect(definitions.contains { if case .file = $0.os.firmware { $0.os.nvram != nil } else { false } })
        #expect(definitions.contains { if case .file = $0.os.firmware { $0.os.nvram == nil } else { false } })
        #expect(definitions.contains { $0.os.firmware == .uefi && $0.os.nvram != nil })
        #expect(definitions.contains { $0.os.bootOrder.count == 3 } && definitions.contains { $0.os.bootOrder == [.hd] })
        #expect(definitions.contains { $0.os.firmware != nil && $0.os.bootOrder.first != .hd })
        #expect(definitions.contains { $0.cputune.quota != nil } && definitions.contains { $0.cputune.isEmpty })
        #expect(definitions.contains { ($0.memtune.hardLimit ?? 0) % 1024 != 0 }, "limits libvirt writes in bytes")
        #expect(definitions.contains { $0.memtune.swapHardLimit != nil && $0.memtune.softLimit != nil })
        #expect(definitions.contains { $0.blkiotune.devices.count == 2 } && definitions.contains { $0.blkiotune.isEmpty })
    }
}
