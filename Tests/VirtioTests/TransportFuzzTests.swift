import Devices
import Foundation
import GuestMemory
import Storage
import Testing
import TestSupport
@testable import Virtio

/// Seeded random guests against the real devices behind the PCI transport: config space, the BAR
/// (common config, notify, ISR, device config, MSI-X), status transitions with random queue
/// addresses, and garbage written over the rings. Nothing a guest does may crash the VMM; each
/// run must also end with a reset that brings the function back to status 0.
@Suite struct TransportFuzzTests {
    enum Kind: String, CaseIterable { case block, net, console, entropy }

    static func makeDevice(_ kind: Kind, scratch: String) throws -> any VirtioDevice {
        switch kind {
        case .block:
            try Data(count: 1 << 20).write(to: URL(fileURLWithPath: scratch))
            return try VirtioBlock(backend: try RawImage(path: scratch, readOnly: false))
        case .net:
            let backend = InMemoryNetworkBackend(offloads: [.checksum, .tso4])
            for size in [14, 60, 1514, 9000] { backend.deliver(netFrame([UInt8](repeating: 0xEE, count: size))) }
            return try VirtioNet(backend: backend, configuration: VirtioNetConfiguration(mac: [0x52, 0x54, 0, 1, 2, 3]))
        case .console:
            let device = VirtioConsole(output: DiscardingOutput())
            _ = device.enqueueInput([UInt8](repeating: 0x41, count: 100))
            return device
        case .entropy:
            return VirtioEntropyDevice(source: { bytes in for index in bytes.indices { bytes[index] = UInt8(index & 0xFF) } })
        }
    }

    /// Addresses a guest might use: inside RAM, at region edges, in holes, past the end, wrapping.
    static func guestAddress(_ rng: inout SplitMix64) -> UInt64 {
        let candidates: [UInt64] = [0x1000, 0x2000, 0xFFF0, 0x10000, 0x1FFF8, holeStart, 0x40000, 0x40FF0, 0x41000,
                                    UInt64.max - 7, UInt64(rng.next() & 0xFFFFF)]
        return candidates[Int(rng.next() % UInt64(candidates.count))] & ~(rng.next() % 4 == 0 ? 0 : 0xF)
    }

    @Test(arguments: Kind.allCases, [UInt64(1), 2, 3])
    func randomGuestsNeverCrashTheDevice(kind: Kind, seed: UInt64) throws {
        let scratch = NSTemporaryDirectory() + "vireo-fuzz-\(UUID().uuidString).img"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let memory = try makeTestMemory()
        let root = try PCIRootComplex(ecamBase: 0xE000_0000, ecamSize: 1 << 20, mmio32: 0xC000_0000..<0xE000_0000)
        let transport = try VirtioPCIDevice(device: try Self.makeDevice(kind, scratch: scratch), memory: memory,
                                            msixController: TransportMSIXRecorder())
        let address = try root.insert(transport, slot: 3, intx: PCIINTxWiring(line: TransportLine(), irq: 19))
        let bar = root.decodedBARs(of: address)[0]
        let function = UInt64(address.device) << 15
        var rng = SplitMix64(state: seed &* 0x9E37_79B9 &+ UInt64(Kind.allCases.firstIndex(of: kind)!))

        func size() -> Int { [1, 2, 4, 8][Int(rng.next() % 4)] }
        func common(_ offset: UInt64, _ width: Int, _ value: UInt64) {
            root.mmio32Window.write(offset: bar.address - root.mmio32Window.base + offset, size: width, value: value)
        }
        var activations = 0, needsReset = 0
        for _ in 0..<3000 {
            switch rng.next() % 10 {
            case 0:   // configuration space, mostly the header and capabilities
                let offset = rng.next() % 3 == 0 ? rng.next() % 4096 : rng.next() % 256
                let width = [1, 2, 4][Int(rng.next() % 3)]
                // Moving the BAR or turning decoding off ends the run's reach; do it rarely.
                if (0x04..<0x18).contains(offset), rng.next() % 16 != 0 { continue }
                if rng.next() % 2 == 0 {
                    root.ecam.write(offset: function | offset, size: width, value: rng.next())
                } else {
                    _ = root.ecam.read(offset: function | offset, size: width)
                }
            case 1, 2:   // anywhere in the BAR
                let offset = rng.next() % bar.size
                let width = size()
                guard offset + UInt64(width) <= bar.size else { continue }
                if rng.next() % 2 == 0 { common(offset, width, rng.next()) }
                else { _ = root.mmio32Window.read(offset: bar.address - root.mmio32Window.base + offset, size: width) }
            case 3, 4:   // a plausible queue setup with hostile addresses
                common(CommonOffset.queueSelect, 2, rng.next() % 4)
                common(CommonOffset.queueSize, 2, [1, 2, 3, 8, 16, 0, 0xFFFF][Int(rng.next() % 7)])
                common(CommonOffset.queueDesc, 8, Self.guestAddress(&rng))
                common(CommonOffset.queueDriver, 8, Self.guestAddress(&rng))
                common(CommonOffset.queueDevice, 8, Self.guestAddress(&rng))
                common(CommonOffset.queueMSIXVector, 2, rng.next() % 5)
                common(CommonOffset.queueEnable, 2, 1)
            case 5:   // the status dance, sometimes out of order
                let steps: [UInt64] = [0, 1, 3, 0xB, 0xF, 0x8F, 0x4F, rng.next() & 0xFF]
                common(CommonOffset.driverFeatureSelect, 4, rng.next() % 2)
                common(CommonOffset.driverFeature, 4, rng.next() % 3 == 0 ? rng.next() : 1)
                common(CommonOffset.deviceStatus, 1, steps[Int(rng.next() % UInt64(steps.count))])
                let status = root.mmio32Window.read(offset: bar.address - root.mmio32Window.base + CommonOffset.deviceStatus, size: 1)
                if status != 0xFF, status & UInt64(VirtioStatus.driverOK) != 0 { activations += 1 }
                if status != 0xFF, status & UInt64(VirtioStatus.deviceNeedsReset) != 0 { needsReset += 1 }
            case 6:   // notify a queue, as the guest's kick does
                common(0x3000 + (rng.next() % 4) * 4, 2, rng.next() % 4)
            case 7:   // scribble over guest RAM where rings and buffers live
                let target = Self.guestAddress(&rng)
                let value = rng.next()
                try? memory.write(value, at: GuestAddress(target))
            case 8:   // publish something on a ring the driver may have set up
                let ring = [0x1000, 0x2000, 0x10000, 0x40000][Int(rng.next() % 4)]
                try? memory.write(UInt16(truncatingIfNeeded: rng.next() % 20), at: GuestAddress(UInt64(ring) + 2))
                common(0x3000 + (rng.next() % 4) * 4, 2, 0)
            default:   // MSI-X table and PBA
                let offset = 0x4000 + rng.next() % 0x100
                common(offset & ~3, 4, rng.next())
            }
        }
        // The run went past feature negotiation into live queues, and met the error paths.
        #expect(activations > 0)
        #expect(needsReset > 0)
        // Whatever state the guest left (BAR moved, decoding off): a driver that puts the BAR
        // back and resets gets a function at status 0 again.
        root.ecam.write(offset: function | 0x10, size: 4, value: bar.address & 0xFFFF_FFFF)
        root.ecam.write(offset: function | 0x14, size: 4, value: bar.address >> 32)
        root.ecam.write(offset: function | 0x04, size: 2, value: 0x6)
        common(CommonOffset.deviceStatus, 1, 0)
        #expect(root.mmio32Window.read(offset: bar.address - root.mmio32Window.base + CommonOffset.deviceStatus, size: 1) == 0)
        #expect(root.ecam.read(offset: function, size: 2) == 0x1AF4)
    }
}

/// A serial sink that drops what the console writes.
struct DiscardingOutput: SerialOutput {
    func emit(_ byte: UInt8) {}
}
