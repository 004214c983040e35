import Testing
@testable import VMM

/// `--disk` and `--net` parse like QEMU's key=value lists; mistakes name the option and the key.
@Suite struct DeviceOptionsTests {
    @Test func diskOptions() throws {
        #expect(try DiskOptions.parse("root.img") == DiskOptions(path: "root.img"))
        #expect(try DiskOptions.parse("path=/d/a.img,readonly=on,format=raw,serial=vireo-1")
                == DiskOptions(path: "/d/a.img", readOnly: true, format: .raw, serial: "vireo-1"))
        #expect(try DiskOptions.parse("path=x,format=qcow2,readonly=off").format == .qcow2)
    }

    @Test(arguments: [
        ("", DeviceOptionError.malformed(option: "--disk", text: "")),
        ("readonly=on", .missing(option: "--disk", key: "path")),
        ("path=a,colour=red", .unknownKey(option: "--disk", key: "colour", allowed: ["path", "readonly", "format", "serial"])),
        ("path=a,path=b", .duplicateKey(option: "--disk", key: "path")),
        ("path=a,readonly=maybe", .invalidValue(option: "--disk", key: "readonly", value: "maybe", expected: "on or off")),
        ("path=a,format=vmdk", .invalidValue(option: "--disk", key: "format", value: "vmdk", expected: "raw or qcow2")),
        ("path=a,serial=123456789012345678901", .invalidValue(option: "--disk", key: "serial", value: "123456789012345678901", expected: "at most 20 ASCII characters")),
        ("path=a,,", .malformed(option: "--disk", text: "path=a,,")),
    ])
    func badDiskOptions(text: String, error: DeviceOptionError) {
        #expect(throws: error) { try DiskOptions.parse(text) }
    }

    @Test func networkOptions() throws {
        #expect(try NetworkOptions.parse("tap=vtap0") == NetworkOptions(attachment: .tap("vtap0")))
        let bridged = try NetworkOptions.parse("bridge=br0,mac=52:54:00:12:34:56,offload=off")
        #expect(bridged.attachment == .bridge("br0"))
        #expect(bridged.mac == [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        #expect(bridged.offloads == false)
    }

    @Test(arguments: [
        ("mac=52:54:00:12:34:56", DeviceOptionError.missing(option: "--net", key: "tap, bridge or user")),
        ("tap=a,bridge=b", .conflict(option: "--net", keys: "tap and bridge")),
        ("tap=averyveryverylongname", .invalidValue(option: "--net", key: "tap", value: "averyveryverylongname", expected: "an interface name of 1-15 characters")),
        ("tap=t0,mac=52:54:00:12:34", .invalidValue(option: "--net", key: "mac", value: "52:54:00:12:34", expected: "six hex bytes like 52:54:00:12:34:56")),
        ("tap=t0,mac=01:00:5e:00:00:01", .invalidValue(option: "--net", key: "mac", value: "01:00:5e:00:00:01", expected: "a unicast address (first byte even)")),
        ("vtap0", .malformed(option: "--net", text: "vtap0")),
    ])
    func badNetworkOptions(text: String, error: DeviceOptionError) {
        #expect(throws: error) { try NetworkOptions.parse(text) }
    }

    @Test func tooManyDevicesAreRefused() {
        let disks = (0..<32).map { DiskOptions(path: "d\($0)") }
        #expect(throws: ConfigError.tooManyDevices(32, maximum: 31)) {
            try VMConfig(kernel: [0], kernelPath: "k", devices: DeviceOptions(disks: disks))
        }
    }
}
