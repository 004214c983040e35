import Boot
import Devices
import Foundation
import GuestMemory
import KVM
import Storage
import Virtio
import VMContract

/// The snapshot reader on bytes, for the libFuzzer target in Fuzz/Snapshot (and its seed test):
/// `SnapshotFile.parse`, then every check a restore makes that needs no /dev/kvm.
///
/// A fuzz input is mostly the state section (JSON) with a short prefix of header fields; the
/// header, with correct SHA-256s, is built from them here, so that mutations reach the JSON
/// decoder and the device states behind it instead of dying at a checksum:
///
/// ```
///   0      1  mode. Low 3 bits zero: raw input, the rest is the file itself (header first, a short
///             one zero padded; the file is taken to be 16 TiB long, of which only these bytes
///             can be read). Otherwise structured, and the high bits are switches:
///             bit 3 version from bytes 1..<5 (else the supported one); bit 4 region table from
///             the input; bit 5 file shorter by byte 10 pages; bit 6 state checksum wrong;
///             bit 7 memory offset moved by byte 11 bytes
///   1      4  format version (bit 3)
///   5      4  RAM in MiB: the region table is X86Layout's for a machine of that size (bit 4 clear)
///   9      1  region count (bit 4); min(count, 8) regions of 16 bytes (start, size) follow byte 16
///  10      1  pages missing from the file (bit 5)
///  11      1  memory offset shift (bit 7)
///  12      4  zero
///  16         the regions (bit 4), then the state section
/// ```
///
/// After a successful parse, the restore continues as far as it can without KVM: the restored
/// launch specification and VMConfig, the legacy devices from their states, guest RAM of the
/// snapshot's layout (fresh, zero), the PCI root, and every virtio-pci function rebuilt from its
/// saved transport and device state behind the devices the machine description names (with
/// in-memory disk and network backends), inserted in slot order and kicked once per queue, as
/// `PCIPlatform` and `Machine.start` do. What only KVM checks (the vCPU and irqchip blobs'
/// shapes, KVM_SET_*) is left out.
public enum SnapshotFuzzing {
    /// Length of the structured input's fixed prefix.
    public static let prefixLength = 16
    /// Guest RAM above this is not allocated: the state is only parsed, not restored.
    public static let maximumRestoredMemory: UInt64 = 64 << 30
    static let path = "fuzz-input"

    /// Runs one input: throws where a real `vireo run --restore` of such a file would be refused
    /// (any error is fine for the fuzzer; a crash is a bug). Returns the payload it restored.
    @discardableResult
    public static func run(_ input: [UInt8]) throws -> SnapshotPayload {
        let (header, fileSize, state) = file(for: input)
        let (payload, regions) = try SnapshotFile.parse(header: header, fileSize: fileSize, path: path) { offset, count in
            // The file: the header, then `state` (raw input: the bytes after the header), then
            // nothing readable (guest RAM is never read by the parser).
            let headerLength = UInt64(SnapshotFile.headerLength)
            guard offset >= headerLength, count >= 0, offset - headerLength <= UInt64(state.count),
                  UInt64(count) <= UInt64(state.count) - (offset - headerLength) else {
                throw SnapshotError.truncated(path: path, expected: offset &+ UInt64(max(count, 0)), actual: fileSize)
            }
            let start = state.startIndex + Int(offset - headerLength)
            return Array(state[start..<(start + count)])
        }
        try restoreWithoutKVM(payload, regions: regions)
        return payload
    }

    /// A structured input whose state section is `state` (JSON), for a machine of `memoryBytes`.
    public static func input(state: [UInt8], memoryBytes: UInt64) -> [UInt8] {
        var prefix = [UInt8](repeating: 0, count: prefixLength)
        prefix[0] = 1
        withUnsafeBytes(of: SnapshotFile.formatVersion.littleEndian) { prefix.replaceSubrange(1..<5, with: $0) }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: memoryBytes >> 20).littleEndian) { prefix.replaceSubrange(5..<9, with: $0) }
        return prefix + state
    }

    /// The snapshot file an input describes: header, file size and the bytes after the header.
    static func file(for input: [UInt8]) -> (header: [UInt8], fileSize: UInt64, state: ArraySlice<UInt8>) {
        let headerLength = SnapshotFile.headerLength
        guard let mode = input.first, mode & 7 != 0 else {
            let raw = input.dropFirst()
            var header = Array(raw.prefix(headerLength))
            header += [UInt8](repeating: 0, count: headerLength - header.count)
            return (header, 1 << 44, raw.dropFirst(headerLength))
        }
        var prefix = Array(input.prefix(prefixLength))
        prefix += [UInt8](repeating: 0, count: prefixLength - prefix.count)
        func field(_ offset: Int) -> UInt32 {
            UInt32(prefix[offset]) | UInt32(prefix[offset + 1]) << 8 | UInt32(prefix[offset + 2]) << 16 | UInt32(prefix[offset + 3]) << 24
        }
        var rest = input.dropFirst(prefixLength)
        var regions: [(start: UInt64, size: UInt64)]
        var regionCount: UInt32
        if mode & 0x10 != 0 {
            regionCount = UInt32(prefix[9])
            regions = []
            for _ in 0..<min(Int(regionCount), SnapshotFile.maximumRegions) {
                var entry = Array(rest.prefix(16))
                rest = rest.dropFirst(16)
                entry += [UInt8](repeating: 0, count: 16 - entry.count)
                let start = entry[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                let size = entry[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                regions.append((start, size))
            }
        } else {
            regions = X86Layout.ramRanges(memorySize: UInt64(field(5)) << 20).map { ($0.start.raw, $0.size) }
            regionCount = UInt32(regions.count)
        }
        let state = rest
        let stateOffset = UInt64(headerLength)
        var memoryOffset = (stateOffset + UInt64(state.count) + SnapshotFile.pageSize - 1) / SnapshotFile.pageSize * SnapshotFile.pageSize
        if mode & 0x80 != 0 { memoryOffset += UInt64(prefix[11]) }
        let memoryLength = regions.reduce(UInt64(0)) { $0 &+ $1.size }

        var header = [UInt8](repeating: 0, count: headerLength)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(offset..<offset + MemoryLayout<T>.size, with: $0) }
        }
        header.replaceSubrange(0..<8, with: SnapshotFile.magic)
        put(mode & 0x08 != 0 ? field(1) : SnapshotFile.formatVersion, at: 8)
        put(UInt32(headerLength), at: 12)
        put(stateOffset, at: 16)
        put(UInt64(state.count), at: 24)
        var stateDigest = SnapshotFile.sha256(Array(state))
        if mode & 0x40 != 0, !stateDigest.isEmpty { stateDigest[0] ^= 1 }
        header.replaceSubrange(32..<64, with: stateDigest)
        put(memoryOffset, at: 64)
        put(memoryLength, at: 72)
        put(regionCount, at: 80)
        for (index, region) in regions.enumerated() {
            put(region.start, at: 88 + 16 * index)
            put(region.size, at: 96 + 16 * index)
        }
        header.replaceSubrange(4064..<4096, with: SnapshotFile.sha256(Array(header[0..<4064])))
        let (end, overflow) = memoryOffset.addingReportingOverflow(memoryLength)
        var fileSize = overflow ? UInt64.max : end
        if mode & 0x20 != 0 { fileSize = fileSize > UInt64(prefix[10]) * 4096 ? fileSize - UInt64(prefix[10]) * 4096 : 0 }
        return (header, fileSize, state)
    }

    // MARK: The restore, up to KVM

    /// What `VMSession` and `Machine` do with a validated snapshot before any KVM call, on
    /// stand-ins for the host side.
    static func restoreWithoutKVM(_ payload: SnapshotPayload, regions: [SnapshotFile.Region]) throws {
        let spec = try VMSession.restoredSpec(payload.machine, launch: LaunchSpec(restore: RestoreSource(path: path)))
        _ = try VMConfig(kernel: [], kernelPath: spec.kernel ?? "", initrd: nil, initrdPath: spec.initrd,
                         cmdline: spec.cmdline, cpus: spec.cpus, memorySize: spec.memoryBytes, devices: spec.devices)
        let state = payload.state
        let host = FuzzHost()
        _ = try Serial16550(restoring: state.devices.serial, interrupt: host, output: host)
        _ = try I8042(restoring: state.devices.i8042, events: host, keyboardInterrupt: host, auxInterrupt: host)
        _ = try CMOSRTC(restoring: state.devices.rtc)
        _ = try FwCfg(restoring: state.devices.fwCfg)
        _ = try ACPIPM(restoring: state.devices.acpiPM, events: host, sci: host)

        guard regions.reduce(0, { $0 + $1.size }) <= maximumRestoredMemory else { return }
        let memory = try GuestMemory(ranges: regions.map { (GuestAddress($0.start), $0.size) })
        let root = try PCIRootComplex(ecamBase: X86Layout.pciECAMBase, ecamSize: X86Layout.pciECAMSize,
                                      mmio32: spec.firmware == nil ? X86Layout.pciMMIO32Start..<X86Layout.pciMMIO32End : FirmwareBoot.pciMMIO32,
                                      resetSink: host)
        try root.restore(state.pciRoot)
        guard state.pci.count == spec.devices.deviceCount else {
            throw MachineStateError.mismatch("the snapshot has \(state.pci.count) PCI functions, this machine \(spec.devices.deviceCount)")
        }
        var transports: [VirtioPCIDevice] = []
        for (name, device) in try devices(for: spec.devices, host: host) {
            let saved = state.pci[transports.count]
            guard saved.name == name else {
                throw MachineStateError.mismatch("PCI function \(transports.count) is \(saved.name) in the snapshot, \(name) here")
            }
            let transport = try VirtioPCIDevice(restoring: saved.transport, deviceState: saved.device, device: device,
                                                memory: memory, msixController: host)
            guard let slot = root.nextFreeSlot() else {
                throw ConfigError.tooManyDevices(transports.count + 1, maximum: DeviceOptions.maximumDevices)
            }
            let gsi = ACPIPlatform.pciInterruptGSI(slot: UInt8(slot), pin: 0)
            _ = try root.insert(transport, slot: slot, intx: PCIINTxWiring(line: host, irq: UInt8(gsi)))
            transports.append(transport)
        }
        // Machine.start: every restored queue is served once (the guest may have published meanwhile).
        for transport in transports {
            for queue in 0..<transport.queueCount { transport.device.queueNotified(queue) }
        }
    }

    /// The virtio devices `PCIPlatform` builds for `options`, in its order, over in-memory backends.
    static func devices(for options: DeviceOptions, host: FuzzHost) throws -> [(String, any VirtioDevice)] {
        var devices: [(String, any VirtioDevice)] = []
        for (index, disk) in options.disks.enumerated() {
            let configuration = VirtioBlockConfiguration(readOnly: disk.readOnly, serial: disk.serial ?? "vireo-disk\(index)")
            devices.append(("vblk\(index)", try VirtioBlock(backend: FuzzDisk(readOnly: disk.readOnly), configuration: configuration)))
        }
        for (index, network) in options.networks.enumerated() {
            let mac = network.mac ?? [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]
            devices.append(("vnet\(index)", try VirtioNet(backend: FuzzNetwork(), configuration: VirtioNetConfiguration(mac: mac))))
        }
        if options.virtioConsole { devices.append(("vcon", VirtioConsole(output: host))) }
        if options.entropy { devices.append(("vrng", VirtioEntropyDevice(source: { bytes in bytes = [UInt8](repeating: 0xA5, count: bytes.count) }))) }
        return devices
    }

    // MARK: Seeds

    /// Valid inputs (each restores without error): a 32 MiB, one-vCPU machine with a disk, a NIC,
    /// a virtio console and a virtio-rng, once at power-on and once with every device's driver
    /// at DRIVER_OK and its queues enabled. The vCPU and irqchip blobs are zeros of KVM's sizes.
    /// The same bytes on every call (fixed clocks).
    public static func seeds() throws -> [[UInt8]] {
        try [false, true].map { running in
            let payload = try seedPayload(running: running)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return input(state: Array(try encoder.encode(payload)), memoryBytes: payload.machine.memoryBytes)
        }
    }

    static func seedPayload(running: Bool) throws -> SnapshotPayload {
        let memoryBytes: UInt64 = 32 << 20
        let options = DeviceOptions(disks: [DiskOptions(path: "/var/lib/vireo/disk.qcow2", format: .qcow2)],
                                    networks: [NetworkOptions(attachment: .user(forwards: []), mac: [0x52, 0x54, 0x00, 0xAB, 0xCD, 0xEF])],
                                    virtioConsole: true, entropy: true)
        let machine = LaunchSpec(kernel: "/boot/vmlinuz", cmdline: "console=hvc0", cpus: 1, memoryBytes: memoryBytes, devices: options)
        let host = FuzzHost()
        let memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: memoryBytes))
        let root = try PCIRootComplex(ecamBase: X86Layout.pciECAMBase, ecamSize: X86Layout.pciECAMSize,
                                      mmio32: X86Layout.pciMMIO32Start..<X86Layout.pciMMIO32End, resetSink: host)
        var pci: [PCIFunctionState] = []
        for (name, device) in try devices(for: options, host: host) {
            let transport = try VirtioPCIDevice(device: device, memory: memory, msixController: host)
            let address = try root.insert(transport, slot: root.nextFreeSlot() ?? 0, intx: nil)
            if running { try SeedDriver(root: root, address: address).start(functionIndex: pci.count) }
            pci.append(PCIFunctionState(name: name, transport: transport.state, device: transport.captureDeviceState()))
        }
        let fwCfg = try FwCfg(ramSize: memoryBytes, cpuCount: 1)
        try fwCfg.addFile(name: "etc/vireo/cmdline", data: Array(machine.cmdline.utf8))
        var registers = Registers()
        registers.rip = 0xFFFF_FFFF_8100_0000; registers.rsp = 0xFFFF_C900_0000_3F00; registers.rflags = 0x246
        let vcpu = VCPUState(id: 0, registers: registers, specialRegisters: SpecialRegisters(), mpState: 0,
                             lapic: zeros(1024), events: zeros(64), fpu: zeros(416), xsave: zeros(4096), xcrs: zeros(392),
                             msrs: [])
        let state = MachineState(
            vcpus: [vcpu],
            platform: VMPlatformState(irqchips: [zeros(520), zeros(520), zeros(520)], pit: zeros(112), clock: 1_000_000_000),
            devices: .init(serial: Serial16550(interrupt: host, output: host).state, i8042: I8042(events: host).state,
                           rtc: CMOSRTC(memoryBelow4G: memoryBytes, memoryAbove4G: 0, cpuCount: 1, now: { .seconds(1_750_000_000) }).state,
                           fwCfg: fwCfg.state, acpiPM: ACPIPM(events: host, sci: host, clock: { .milliseconds(1) }).state),
            pci: pci, pciRoot: root.savedState)
        return SnapshotPayload(machine: machine, effectiveCmdline: machine.cmdline + " tsc=reliable", paused: false, state: state)
    }

    private static func zeros(_ count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }
}

/// A guest driver just good enough to bring a function to DRIVER_OK (VIRTIO 1.2 §3.1.1), through
/// ECAM and the BAR window as a guest would, so a seed holds real device states.
private struct SeedDriver {
    let root: PCIRootComplex
    let address: PCIDeviceAddress

    func config(_ offset: Int, size: Int) -> UInt64 { root.ecam.read(offset: UInt64(address.device) << 15 | UInt64(offset), size: size) }
    func setConfig(_ offset: Int, size: Int, _ value: UInt64) {
        root.ecam.write(offset: UInt64(address.device) << 15 | UInt64(offset), size: size, value: value)
    }

    func start(functionIndex: Int) throws {
        setConfig(0x04, size: 2, config(0x04, size: 2) | 0x2)  // memory space on
        // The common configuration structure: the vendor capability with cfg_type 1.
        var pointer = Int(config(0x34, size: 1)), common: UInt64?, seen = 0
        while pointer != 0, seen < 48 {
            seen += 1
            if config(pointer, size: 1) == 0x09, config(pointer + 3, size: 1) == 1, config(pointer + 4, size: 1) == 0 {
                common = config(pointer + 8, size: 4)
            }
            pointer = Int(config(pointer + 1, size: 1))
        }
        guard let common else { throw SnapshotError.invalidState(path: "seed", what: "no common configuration capability") }
        let bar = config(0x10, size: 4) & ~0xF | config(0x14, size: 4) << 32
        let window = root.mmio32Window
        func read(_ offset: UInt64, _ size: Int) -> UInt64 { window.read(offset: bar + common + offset - window.base, size: size) }
        func write(_ offset: UInt64, _ size: Int, _ value: UInt64) { window.write(offset: bar + common + offset - window.base, size: size, value: value) }
        write(0x14, 1, 0)
        write(0x14, 1, UInt64(VirtioStatus.acknowledge))
        write(0x14, 1, UInt64(VirtioStatus.acknowledge | VirtioStatus.driver))
        for half: UInt64 in 0..<2 {
            write(0x00, 4, half)
            let offered = read(0x04, 4)
            write(0x08, 4, half)
            write(0x0C, 4, offered)
        }
        write(0x14, 1, UInt64(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK))
        guard read(0x14, 1) & UInt64(VirtioStatus.featuresOK) != 0 else {
            throw SnapshotError.invalidState(path: "seed", what: "the device refused its own features")
        }
        // Rings in guest RAM, 64 KiB per queue (enough for 1024 entries), a megabyte per function.
        for queue in 0..<read(0x12, 2) {
            write(0x16, 2, queue)
            let base = 0x100_0000 + UInt64(functionIndex) << 20 + queue << 16
            write(0x20, 8, base)
            write(0x28, 8, base + 0x4000)
            write(0x30, 8, base + 0x8000)
            write(0x1C, 2, 1)
        }
        write(0x14, 1, UInt64(VirtioStatus.acknowledge | VirtioStatus.driver | VirtioStatus.featuresOK | VirtioStatus.driverOK))
    }
}

/// Every host-side sink a restored machine needs, doing nothing.
final class FuzzHost: InterruptLine, MachineEventSink, SerialOutput, MSIXInterruptController {
    func setLevel(_ high: Bool) {}
    func machineEvent(_ event: MachineEvent) {}
    func emit(_ byte: UInt8) {}
    func route(device: PCIDeviceAddress, vector: Int, message: MSIMessage?) {}
    func trigger(device: PCIDeviceAddress, vector: Int) {}
}

/// A 1 MiB disk of zeros that forgets writes.
final class FuzzDisk: BlockDevice {
    let size: UInt64 = 1 << 20
    let isReadOnly: Bool
    init(readOnly: Bool) { isReadOnly = readOnly }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else { throw StorageError.outOfRange(path: "fuzz-disk", offset: offset, length: UInt64(buffer.count)) }
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard offset <= size, UInt64(buffer.count) <= size - offset else { throw StorageError.outOfRange(path: "fuzz-disk", offset: offset, length: UInt64(buffer.count)) }
    }
    func flush() throws {}
    func discard(at offset: UInt64, length: UInt64) throws {}
    func writeZeroes(at offset: UInt64, length: UInt64) throws {}
}

/// A network backend with nothing to receive that drops what is sent.
final class FuzzNetwork: NetworkBackend {
    func send(_ frame: [UInt8]) throws {}
    func receive(maxLength: Int) throws -> [UInt8]? { nil }
    var offloads: NetworkOffloads { [] }
    func setOffloads(_ accepted: NetworkOffloads) throws {}
}
