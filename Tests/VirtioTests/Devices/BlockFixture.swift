import Foundation
import GuestMemory
import Storage
@testable import Virtio

/// A virtio-blk device over a RawImage in a temporary file, and a driver that builds requests
/// the way Linux's virtio_blk does: header descriptor, data descriptors, status descriptor.
final class BlockFixture {
    static let headerAddress: UInt64 = 0x10000
    static let statusAddress: UInt64 = 0x10100
    static let dataAddress: UInt64 = 0x20000

    let harness: DeviceHarness
    let device: VirtioBlock
    let path: String
    var memory: GuestMemory { harness.memory }
    var driver: MockDriverQueue { harness.drivers[0] }

    init(size: Int = 1 << 20, configuration: VirtioBlockConfiguration = VirtioBlockConfiguration(),
         readOnlyImage: Bool = false, contents: [UInt8]? = nil) throws {
        path = temporaryPath("blk")
        try RawImage.create(path: path, size: UInt64(size))
        let initial = contents ?? pattern(count: size, seed: 0x5a)
        try Data(initial).write(to: URL(fileURLWithPath: path))
        let image = try RawImage(path: path, readOnly: readOnlyImage)
        device = try VirtioBlock(backend: image, configuration: configuration)
        harness = try DeviceHarness(queueCount: 1)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func activate(features: UInt64? = nil) throws { try harness.activate(device, features: features) }

    func fileBytes(at offset: Int, count: Int) throws -> [UInt8] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return Array(data[offset ..< offset + count])
    }

    /// Sends one request: a 16-byte header, then `data`, then a 1-byte status buffer.
    /// Returns the status byte the device wrote (0xEE if it wrote none) and the used length.
    @discardableResult
    func request(type: UInt32, sector: UInt64, data: [MockDriverQueue.Buffer] = []) throws -> (status: UInt8, used: UInt32) {
        try memory.write(type, at: GuestAddress(Self.headerAddress))
        try memory.write(UInt32(0), at: GuestAddress(Self.headerAddress + 4))
        try memory.write(sector, at: GuestAddress(Self.headerAddress + 8))
        try memory.write(UInt8(0xEE), at: GuestAddress(Self.statusAddress))
        try harness.submit([.readable(Self.headerAddress, 16)] + data + [.writable(Self.statusAddress, 1)], queue: 0, to: device)
        let status: UInt8 = try memory.read(at: GuestAddress(Self.statusAddress))
        let used = try driver.usedIdx() == 0 ? 0 : try driver.usedElement(driver.usedIdx() &- 1).length
        return (status, used)
    }

    /// Writes DISCARD / WRITE_ZEROES ranges at `address` and returns the readable buffer naming them.
    func ranges(_ ranges: [(sector: UInt64, sectors: UInt32, flags: UInt32)], at address: UInt64 = 0x30000) throws -> MockDriverQueue.Buffer {
        for (index, range) in ranges.enumerated() {
            let base = address + 16 * UInt64(index)
            try memory.write(range.sector, at: GuestAddress(base))
            try memory.write(range.sectors, at: GuestAddress(base + 8))
            try memory.write(range.flags, at: GuestAddress(base + 12))
        }
        return .readable(address, UInt32(16 * ranges.count))
    }
}

/// Request types and statuses as a driver spells them (§5.2.6), kept apart from the device's own.
enum BlockWire {
    static let read: UInt32 = 0
    static let write: UInt32 = 1
    static let flush: UInt32 = 4
    static let getID: UInt32 = 8
    static let discard: UInt32 = 11
    static let writeZeroes: UInt32 = 13
    static let ok: UInt8 = 0
    static let ioError: UInt8 = 1
    static let unsupported: UInt8 = 2
}
