import Foundation
import GuestMemory
@testable import Boot

/// Synthetic kernels built byte by byte, so each test controls exactly what the loader sees.
enum TestImages {
    struct Segment {
        var physicalAddress: UInt64
        var virtualAddress: UInt64
        var data: [UInt8]
        var memorySize: UInt64
        init(_ physicalAddress: UInt64, data: [UInt8], bss: UInt64 = 0, virtualAddress: UInt64? = nil) {
            self.physicalAddress = physicalAddress
            self.virtualAddress = virtualAddress ?? physicalAddress
            self.data = data
            self.memorySize = UInt64(data.count) + bss
        }
    }

    /// Recognisable, non-repeating-at-small-scale content.
    static func pattern(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed) &+ ($0 >> 9)) }
    }

    /// An ELF note: namesz, descsz, type, padded name, padded desc.
    static func note(name: String, type: UInt32, desc: [UInt8]) -> [UInt8] {
        let nameBytes = Array(name.utf8) + [0]
        func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        var out = le32(UInt32(nameBytes.count)) + le32(UInt32(desc.count)) + le32(type)
        out += nameBytes + [UInt8](repeating: 0, count: (4 - nameBytes.count % 4) % 4)
        out += desc + [UInt8](repeating: 0, count: (4 - desc.count % 4) % 4)
        return out
    }

    static func pvhNote(entry: UInt64, descSize: Int = 8) -> [UInt8] {
        let desc = (0..<descSize).map { UInt8(truncatingIfNeeded: entry >> (8 * $0)) }
        return note(name: "Xen", type: 18, desc: desc)
    }

    /// A minimal ELF executable: header, program headers (PT_LOADs then one PT_NOTE), then data.
    static func elf(is64: Bool = true, machine: UInt16? = nil, entry: UInt64, segments: [Segment],
                    notes: [UInt8]? = nil, prefix: [UInt8] = []) -> [UInt8] {
        let headerSize = is64 ? 64 : 52, phentsize = is64 ? 56 : 32
        let phnum = segments.count + (notes == nil ? 0 : 1)
        var dataOffset = headerSize + phentsize * phnum
        var file = [UInt8](repeating: 0, count: dataOffset)
        file.put(bytes: [0x7F, 0x45, 0x4C, 0x46, is64 ? 2 : 1, 1, 1], at: 0)
        file.put(UInt16(2), at: 16)
        file.put(machine ?? (is64 ? 62 : 3), at: 18)
        file.put(UInt32(1), at: 20)
        if is64 {
            file.put(entry, at: 24); file.put(UInt64(headerSize), at: 32)
            file.put(UInt16(headerSize), at: 52); file.put(UInt16(phentsize), at: 54); file.put(UInt16(phnum), at: 56)
        } else {
            file.put(UInt32(truncatingIfNeeded: entry), at: 24); file.put(UInt32(headerSize), at: 28)
            file.put(UInt16(headerSize), at: 40); file.put(UInt16(phentsize), at: 42); file.put(UInt16(phnum), at: 44)
        }
        // Extra bytes (e.g. a Multiboot header) right after the program headers.
        file += prefix
        dataOffset = file.count
        var headers: [(type: UInt32, offset: Int, segment: Segment)] = []
        for segment in segments {
            let aligned = (dataOffset + 15) & ~15
            file += [UInt8](repeating: 0, count: aligned - file.count) + segment.data
            headers.append((1, aligned, segment))
            dataOffset = file.count
        }
        if let notes {
            headers.append((4, file.count, Segment(0, data: notes)))
            file += notes
        }
        for (index, header) in headers.enumerated() {
            let at = headerSize + index * phentsize
            let s = header.segment
            file.put(header.type, at: at)
            if is64 {
                file.put(UInt64(header.offset), at: at + 8); file.put(s.virtualAddress, at: at + 16)
                file.put(s.physicalAddress, at: at + 24); file.put(UInt64(s.data.count), at: at + 32)
                file.put(s.memorySize, at: at + 40)
            } else {
                file.put(UInt32(header.offset), at: at + 4); file.put(UInt32(s.virtualAddress), at: at + 8)
                file.put(UInt32(s.physicalAddress), at: at + 12); file.put(UInt32(s.data.count), at: at + 16)
                file.put(UInt32(s.memorySize), at: at + 20)
            }
        }
        return file
    }

    /// The vmlinux the synthetic bzImages carry: 64 KiB of text at 16 MiB, 8 KiB of bss.
    static let innerText = pattern(64 * 1024, seed: 9)
    static let innerEntry: UInt64 = 0x100_0040
    static let innerELF = elf(entry: innerEntry, segments: [Segment(0x100_0000, data: innerText, bss: 8192)])

    /// Compresses with the real CLI, exactly as the kernel build does, and appends the LE32 size.
    static func kernelCompress(_ data: [UInt8], _ compression: Compression) throws -> [UInt8] {
        let command: String
        switch compression {
        case .gzip: command = "gzip -9n -c"
        case .xz: command = "xz --check=crc32 --x86 --lzma2=preset=6e -c"
        case .lzma: command = "lzma -9 -c"
        case .lz4: command = "lz4 -l -9 -c -q"
        case .zstd: command = "zstd -19 -c -q"
        case .bzip2: command = "bzip2 -9 -c"
        default: command = "cat"
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-boot-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("in"), output = directory.appendingPathComponent("out")
        try Data(data).write(to: input)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\(command) < '\(input.path)' > '\(output.path)'"]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("\(command) exited \(process.terminationStatus)") }
        var compressed = [UInt8](try Data(contentsOf: output))
        let size = UInt32(data.count)
        compressed += (0..<4).map { UInt8(truncatingIfNeeded: size >> (8 * $0)) }
        return compressed
    }

    /// Offsets inside the synthetic protected-mode code.
    static let payloadOffset = 0x400
    static let protectedModeFiller = pattern(payloadOffset, seed: 77)

    /// A bzImage: setup sectors with a protocol-2.15 header, then protected-mode code whose payload
    /// (at payloadOffset) is `payload`.
    static func bzImage(payload: [UInt8], setupSects: UInt8 = 4, version: UInt16 = 0x020F, xloadflags: UInt16 = 1,
                        initSize: UInt32 = 0x40_0000, initrdAddrMax: UInt32 = 0x7FFF_FFFF, cmdlineSize: UInt32 = 2047,
                        payloadOffset: UInt32? = nil, payloadLength: UInt32? = nil) -> [UInt8] {
        let sectors = setupSects == 0 ? 4 : Int(setupSects)
        var setup = [UInt8](repeating: 0, count: (sectors + 1) * 512)
        setup[0x1F1] = setupSects
        setup.put(UInt16(0xAA55), at: 0x1FE)
        setup[0x200] = 0xEB; setup[0x201] = 0x6A            // jmp over the header: ends at 0x26C
        setup.put(SetupHeader.magic, at: 0x202)
        setup.put(version, at: 0x206)
        setup[0x211] = 1                                     // LOADED_HIGH
        setup.put(UInt32(0x10_0000), at: 0x214)
        setup.put(initrdAddrMax, at: 0x22C)
        setup.put(UInt32(0x20_0000), at: 0x230)
        setup[0x234] = 1
        setup.put(xloadflags, at: 0x236)
        setup.put(cmdlineSize, at: 0x238)
        setup.put(payloadOffset ?? UInt32(TestImages.payloadOffset), at: 0x248)
        setup.put(payloadLength ?? UInt32(payload.count), at: 0x24C)
        setup.put(UInt64(0x100_0000), at: 0x258)
        setup.put(initSize, at: 0x260)
        return setup + protectedModeFiller + payload + pattern(16, seed: 3)
    }

    static func memory(_ size: UInt64) throws -> GuestMemory {
        try GuestMemory(ranges: X86Layout.ramRanges(memorySize: size))
    }

    static func request(_ kernel: [UInt8], initrd: [UInt8]? = nil, cmdline: String = "console=ttyS0",
                        vcpus: Int = 1, seed: [UInt8] = [], boot: BootProtocol = .auto) -> BootRequest {
        BootRequest(kernel: kernel, kernelName: "/boot/kernel", initrd: initrd, initrdName: "/boot/initrd.img",
                    cmdline: cmdline, vcpuCount: vcpus, rngSeed: seed, bootProtocol: boot)
    }

    /// Loads and returns the error the loader threw (nil if it succeeded).
    static func loadError(_ request: BootRequest, memory: GuestMemory) -> BootError? {
        do { _ = try KernelLoader.load(request, into: memory); return nil } catch { return error }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension GuestMemory {
    func u8(_ address: UInt64) throws -> UInt8 { try read(UInt8.self, at: GuestAddress(address)) }
    func u16(_ address: UInt64) throws -> UInt16 { try read(UInt16.self, at: GuestAddress(address)) }
    func u32(_ address: UInt64) throws -> UInt32 { try read(UInt32.self, at: GuestAddress(address)) }
    func u64(_ address: UInt64) throws -> UInt64 { try read(UInt64.self, at: GuestAddress(address)) }
    func bytes(_ address: UInt64, _ count: Int) throws -> [UInt8] { try readBytes(at: GuestAddress(address), count: count) }
    func cString(_ address: UInt64, limit: Int = 4096) throws -> String {
        let raw = try bytes(address, limit)
        return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}
