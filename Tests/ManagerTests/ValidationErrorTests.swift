import Foundation
import Testing
@testable import Manager

/// Every rejected native definition names its field, with the exact message a user sees.
@Suite("Native validation errors")
struct ValidationErrorTests {
    static let base = """
        name: vm1
        memory: 512M
        os:
          kernel: /boot/vmlinuz
        """

    /// `base` with one top-level key added or replaced.
    static func with(_ line: String) -> String { base + "\n" + line }

    static let disk = "disks:\n  - {source: /images/a.raw, target: vda}\n"

    static let cases: [(String, String)] = [
        ("memory: 512M\nos: {kernel: /k}", "name: missing"),
        ("name: vm1\nos: {kernel: /k}", "memory: missing"),
        ("name: vm1\nmemory: 512M", "os: missing"),
        ("name: vm1\nmemory: 512M\nos: {initrd: /i}",
         "os: needs os.kernel (direct kernel boot) or os.firmware (bios, uefi or a firmware file)"),
        ("name: ''\nmemory: 512M\nos: {kernel: /k}", "name: must not be empty"),
        ("name: my vm\nmemory: 512M\nos: {kernel: /k}",
         "name: 'my vm' contains ' ' (allowed: letters, digits, '.', '_', '-')"),
        ("name: -vm\nmemory: 512M\nos: {kernel: /k}", "name: '-vm' must not start with '.' or '-'"),
        ("name: .vm\nmemory: 512M\nos: {kernel: /k}", "name: '.vm' must not start with '.' or '-'"),
        ("name: \(String(repeating: "a", count: 65))\nmemory: 512M\nos: {kernel: /k}",
         "name: '\(String(repeating: "a", count: 64))…' is longer than 64 characters"),
        ("name: vm/1\nmemory: 512M\nos: {kernel: /k}",
         "name: 'vm/1' contains '/' (allowed: letters, digits, '.', '_', '-')"),
        ("name: 42\nmemory: 512M\nos: {kernel: /k}", "name: expected a string"),
        ("name: vm1\nmemory: 12X\nos: {kernel: /k}", "memory: '12X' is not a size"),
        ("name: vm1\nmemory: 1.5G\nos: {kernel: /k}", "memory: '1.5G' is not a size"),
        ("name: vm1\nmemory: -512M\nos: {kernel: /k}", "memory: '-512M' is negative"),
        ("name: vm1\nmemory: -5\nos: {kernel: /k}", "memory: '-5' is negative"),
        ("name: vm1\nmemory: 99999999999999999999\nos: {kernel: /k}", "memory: '99999999999999999999' is too large"),
        ("name: vm1\nmemory: 17179869184E\nos: {kernel: /k}", "memory: '17179869184E' is too large"),
        ("name: vm1\nmemory: 512K\nos: {kernel: /k}", "memory: 512KiB is below the minimum of 1MiB"),
        ("name: vm1\nmemory: 17T\nos: {kernel: /k}", "memory: 17TiB exceeds the maximum of 16TiB"),
        ("name: vm1\nmemory: 1048577000\nos: {kernel: /k}", "memory: 1048577000 bytes is not a multiple of 4KiB"),
        ("name: vm1\nmemory: {value: 2, unit: XB}\nos: {kernel: /k}", "memory.unit: unknown unit 'XB'"),
        ("name: vm1\nmemory: {unit: GiB}\nos: {kernel: /k}", "memory.value: missing"),
        ("name: vm1\nmemory: {value: 2, units: GiB}\nos: {kernel: /k}",
         "memory.units: unknown key (expected value, unit)"),
        ("name: vm1\nmemory: [1]\nos: {kernel: /k}",
         "memory: expected a size such as 512MiB, a number of bytes, or {value, unit}"),
        (with("currentMemory: 1G"), "currentMemory: 1GiB exceeds memory (512MiB)"),
        (with("vcpus: 0"), "vcpus: 0 is out of range (1 to 255)"),
        (with("vcpus: 256"), "vcpus: 256 is out of range (1 to 255)"),
        (with("vcpus: two"), "vcpus: expected a whole number"),
        (with("uuid: not-a-uuid"), "uuid: 'not-a-uuid' is not a UUID"),
        (with("autostart: yes"), "autostart: expected true or false"),
        (with("onCrash: coredump-restart"),
         "onCrash: unknown action 'coredump-restart' (expected destroy, restart or preserve)"),
        (with("onReboot: reboot"), "onReboot: unknown action 'reboot' (expected destroy, restart or preserve)"),
        (with("console: {type: tcp}"), "console.type: unknown console type 'tcp' (expected pty or none)"),
        (with("graphics: vnc"),
         "graphics: unknown key (expected name, uuid, memory, currentMemory, vcpus, os, disks, interfaces, console, rng, onPoweroff, onReboot, onCrash, autostart, cputune, memtune, blkiotune)"),
        ("name: vm1\nmemory: 512M\nos: {kernel: vmlinuz}", "os.kernel: 'vmlinuz' is not an absolute path"),
        ("name: vm1\nmemory: 512M\nos: {kernel: /k, initrd: initrd.img}", "os.initrd: 'initrd.img' is not an absolute path"),
        ("name: vm1\nmemory: 512M\nos: {kernel: /k, cmdline: \"a\\tb\"}", "os.cmdline: 'a\\x09b' contains a control character"),
        ("name: vm1\nmemory: 512M\nos: {kernel: /k, append: quiet}",
         "os.append: unknown key (expected kernel, initrd, cmdline, firmware, nvram, boot)"),
        (with("disks:\n  - {source: /a, target: vda}\n  - {source: /b, target: vdb, format: vmdk}"),
         "disks[1].format: unknown format 'vmdk' (expected raw or qcow2)"),
        (with("disks:\n  - {source: /a, target: vda, type: network}"),
         "disks[0].type: unknown type 'network' (expected file or block)"),
        (with("disks:\n  - {source: /a, target: vda, device: floppy}"),
         "disks[0].device: unknown device 'floppy' (expected disk or cdrom)"),
        (with("disks:\n  - {target: vda}"), "disks[0].source: missing"),
        (with("disks:\n  - {source: /a}"), "disks[0].target: missing"),
        (with("disks:\n  - {source: a.raw, target: vda}"), "disks[0].source: 'a.raw' is not an absolute path"),
        (with("disks:\n  - {source: /a, target: VDA}"),
         "disks[0].target: 'VDA' is not a disk name (lowercase letters and digits, like vda)"),
        (with("disks:\n  - {source: /a, target: vda}\n  - {source: /b, target: vda}"),
         "disks[1].target: 'vda' is used by another disk"),
        (with("disks:\n  - {source: /a, target: vda, serial: 123456789012345678901}"),
         "disks[0].serial: '123456789012345678901' is not 1 to 20 printable ASCII characters"),
        (with("disks:\n  - {source: /a, target: vda, serial: 'abcdefghijklmnopqrstu'}"),
         "disks[0].serial: 'abcdefghijklmnopqrstu' is not 1 to 20 printable ASCII characters"),
        (with("disks:\n  - {source: /a, target: vda, device: cdrom, readonly: false}"),
         "disks[0].readonly: a cdrom is always read-only"),
        (with("disks:\n  - {source: /a, target: vda, fromat: qcow2}"),
         "disks[0].fromat: unknown key (expected source, type, device, format, target, readonly, serial)"),
        (with("disks: /images/a.raw"), "disks: expected a list"),
        (with("interfaces:\n  - {source: br0}"), "interfaces[0].type: missing"),
        (with("interfaces:\n  - {type: slirp, source: x}"),
         "interfaces[0].type: unknown type 'slirp' (expected bridge, network, tap or user)"),
        (with("interfaces:\n  - {type: user, source: x}"),
         "interfaces[0].source: a user interface has no source (passt needs no host device)"),
        (with("interfaces:\n  - {type: bridge, source: br0, mac: 52:54:00:zz:00:01}"),
         "interfaces[0].mac: '52:54:00:zz:00:01' is not a MAC address"),
        (with("interfaces:\n  - {type: bridge, source: br0, mac: 01:00:5e:00:00:01}"),
         "interfaces[0].mac: 01:00:5e:00:00:01 is a multicast address"),
        (with("interfaces:\n  - {type: bridge, source: br0, mac: 00:00:00:00:00:00}"),
         "interfaces[0].mac: 00:00:00:00:00:00 is the all-zero address"),
        (with("interfaces:\n  - {type: bridge, source: br0, mac: 52:54:00:00:00:01}\n  - {type: tap, source: tap0, mac: 52:54:00:00:00:01}"),
         "interfaces[1].mac: 52:54:00:00:00:01 is used by another interface"),
        (with("interfaces:\n  - {type: bridge, source: a-very-long-bridge-name}"),
         "interfaces[0].source: 'a-very-long-bridge-name' is longer than 15 characters"),
        (with("interfaces:\n  - {type: network, source: br0, model: e1000}"),
         "interfaces[0].model: unknown model 'e1000' (expected virtio)"),
        (with("name: vm2"), "name: appears more than once"),
        (with("cputune: {shares: 1}"), "cputune.shares: 1 is out of range (2 to 262144)"),
        (with("cputune: {period: 999}"), "cputune.period: 999 is out of range (1000 to 1000000)"),
        (with("cputune: {quota: 10}"), "cputune.quota: 10 is out of range (-1 for unlimited, or 1000 to 17592186044415 µs)"),
        (with("cputune: {quota: -2}"), "cputune.quota: -2 is out of range (-1 for unlimited, or 1000 µs and more)"),
        (with("cputune: {weight: 100}"), "cputune.weight: unknown key (expected shares, period, quota)"),
        (with("memtune: {hardLimit: 512K}"), "memtune.hardLimit: 512KiB is below the minimum of 1MiB"),
        (with("memtune: {hardLimit: lots}"), "memtune.hardLimit: 'lots' is not a size"),
        (with("memtune: {swapHardLimit: 1G}"), "memtune.swapHardLimit: needs memtune.hardLimit (it limits memory plus swap)"),
        (with("memtune: {hardLimit: 1G, swapHardLimit: 512M}"), "memtune.swapHardLimit: 512MiB is below memtune.hardLimit (1GiB)"),
        (with("memtune: {hardLimit: 1G, softLimit: 2G}"), "memtune.softLimit: 2GiB exceeds memtune.hardLimit (1GiB)"),
        (with("blkiotune: {weight: 50}"), "blkiotune.weight: 50 is out of range (100 to 1000)"),
        (with("blkiotune: {devices: [{path: sda, weight: 200}]}"), "blkiotune.devices[0].path: 'sda' is not an absolute path"),
        (with("blkiotune: {devices: [{path: /dev/sda}]}"), "blkiotune.devices[0].path: sets neither a weight nor a limit"),
        (with("blkiotune: {devices: [{path: /dev/sda, weight: 2000}]}"), "blkiotune.devices[0].weight: 2000 is out of range (100 to 1000)"),
        (with("blkiotune: {devices: [{path: /dev/sda, readIopsSec: 0}]}"), "blkiotune.devices[0].readIopsSec: must be above 0 (leave it out for no limit)"),
        (with("blkiotune: {devices: [{path: /dev/sda, weight: 200}, {path: /dev/sda, writeBytesSec: 1M}]}"),
         "blkiotune.devices[1].path: '/dev/sda' appears more than once"),
        ("- name: vm1", "definition: expected a mapping"),
    ]

    @Test(arguments: cases)
    func rejectsWithExactMessage(yaml: String, message: String) {
        do {
            let definition = try VMDefinition(yaml: yaml)
            Issue.record("accepted: \(definition.name)")
        } catch let error as DefinitionError {
            #expect(error.description == message)
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func errorsNameTheirFieldProgrammatically() throws {
        do {
            _ = try VMDefinition(yaml: Self.with(Self.disk + "  - {source: /b, target: vdb, format: vmdk}"))
            Issue.record("accepted")
        } catch let error as DefinitionError {
            #expect(error.field == "disks[1].format")
        }
    }

    @Test func syntaxErrorsGiveTheLine() {
        #expect(throws: DefinitionError.self) { try VMDefinition(yaml: "name: [unclosed\nmemory: 1G\n") }
        do {
            _ = try VMDefinition(yaml: "name: vm1\nmemory: 1G\nos: {kernel: /k\n")
        } catch let error as DefinitionError {
            #expect(error.description.hasPrefix("definition: YAML syntax error at line "))
        } catch {
            Issue.record("untyped error \(error)")
        }
    }
}
