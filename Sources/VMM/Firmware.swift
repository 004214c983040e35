import Boot
import Devices
import GuestMemory
import KVM
#if canImport(Glibc)
import Glibc
#endif

public enum FirmwareError: Error, Equatable, CustomStringConvertible {
    case missing(name: String, path: String, package: String)
    case badSize(path: String, size: Int)
    case kernelToo
    case notYet(name: String, why: String)
    case noResetVector(path: String, bytes: [UInt8])

    public var description: String {
        switch self {
        case let .missing(name, path, package):
            return "firmware '\(name)' needs \(path), which is missing: install Debian's \(package) package (apt-get install \(package))"
        case let .badSize(path, size):
            return "firmware '\(path)' is \(size) bytes: a firmware image is a whole number of 4 KiB pages, at least 64 KiB and at most \(FirmwareImage.maximumSize >> 20) MiB (it is mapped just below 4 GiB)"
        case let .noResetVector(path, bytes):
            return "firmware '\(path)' is not a PC firmware image: its last 16 bytes, where the CPU starts, hold no jump (\(bytes.map { String(format: "%02x", $0) }.joined(separator: " ")))"
        case let .notYet(name, why):
            return "firmware '\(name)' is not supported yet: \(why)"
        case .kernelToo:
            return "--firmware and --kernel exclude each other: the firmware boots what the disk's boot loader names"
        }
    }
}

/// A firmware image a machine boots through (SeaBIOS, OVMF or a file the user names), mapped
/// read-only so that it ends at 4 GiB, where the CPU fetches its first instruction after reset
/// (0xFFFFFFF0), with its last 256 KiB also copied into the legacy BIOS area below 1 MiB (as a
/// PC chipset's shadow RAM holds it once the BIOS has unlocked it: SeaBIOS runs from there).
public struct FirmwareImage: Sendable {
    /// "bios", "uefi" or the path the user gave.
    public let name: String
    public let path: String
    public let bytes: [UInt8]

    /// The top-of-4-GiB window ends at 4 GiB and starts above the local APIC and KVM's TSS pages.
    public static let maximumSize = 16 << 20
    public static let minimumSize = 64 << 10
    /// The part copied below 1 MiB: 0xC0000-0xFFFFF at most.
    public static let legacyWindowSize = 256 << 10
    /// The KVM memory slot of the ROM (guest RAM takes slots from 0 up).
    static let memorySlot: UInt32 = 16

    /// Firmware by name, from Debian's packages. SeaBIOS: the 256 KiB build (QEMU's default for
    /// its PC machines; the 128 KiB bios.bin lacks features, bios-microvm.bin expects a machine
    /// without a PCI host bridge). OVMF: the unified image (code and a variable store in one,
    /// variables kept in memory).
    public static let known: [(name: String, path: String, package: String)] = [
        ("bios", "/usr/share/seabios/bios-256k.bin", "seabios"),
        ("uefi", "/usr/share/ovmf/OVMF.fd", "ovmf"),
    ]

    /// Reads the firmware `choice` names ("bios", "uefi" or a path) and checks its size.
    public static func load(_ choice: String) throws -> FirmwareImage {
        if choice == "uefi" {
            // Debian's OVMF.fd printed nothing within 3 minutes on this machine (nested test host):
            // it needs more of QEMU's PC than Vireo has (a known host bridge, pflash). Say so
            // rather than run a VM that never shows anything.
            throw FirmwareError.notYet(name: choice, why: "OVMF does not start on Vireo's machine yet (it expects QEMU's i440FX or Q35 chipset and pflash); use --firmware bios")
        }
        let path: String
        if let entry = known.first(where: { $0.name == choice }) {
            guard access(entry.path, R_OK) == 0 else { throw FirmwareError.missing(name: choice, path: entry.path, package: entry.package) }
            path = entry.path
        } else {
            path = choice
        }
        var info = stat()
        if stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size > maximumSize {
            throw FirmwareError.badSize(path: path, size: Int(info.st_size))
        }
        let bytes = try readWholeFile(path, kind: "firmware", limit: UInt64(maximumSize))
        guard bytes.count >= minimumSize, bytes.count <= maximumSize, bytes.count % 4096 == 0 else {
            throw FirmwareError.badSize(path: path, size: bytes.count)
        }
        // The CPU's first instruction is at 0xFFFFFFF0, 16 bytes before the image's end: every PC
        // firmware jumps away within them (SeaBIOS: a far jump; coreboot and OVMF_CODE: nops, then
        // a near jump; OVMF.fd checks CR0 first). A file with no jump opcode there is not one.
        let resetVector = Array(bytes.suffix(16))
        guard resetVector.contains(where: { [0xE9, 0xEA, 0xEB].contains($0) }) else {
            throw FirmwareError.noResetVector(path: path, bytes: resetVector)
        }
        return FirmwareImage(name: choice, path: path, bytes: bytes)
    }

    public var romBase: UInt64 { X86Layout.mmioHoleEnd - UInt64(bytes.count) }

    /// The tail that goes below 1 MiB and where it starts.
    var legacyCopy: (address: UInt64, bytes: ArraySlice<UInt8>) {
        let count = min(bytes.count, Self.legacyWindowSize)
        return (X86Layout.highMemoryStart - UInt64(count), bytes[(bytes.count - count)...])
    }
}

/// The ROM's host pages, registered as a KVM memory slot for as long as the machine lives.
final class FirmwareROM: @unchecked Sendable {
    let image: FirmwareImage
    private let host: UnsafeMutableRawPointer
    private let size: Int

    /// Maps `image` at the top of 4 GiB in `vm`: read-only where KVM can (guest writes then exit to
    /// the VMM and are dropped), else writable RAM holding the same bytes.
    init(_ image: FirmwareImage, vm: VirtualMachine, system: KVMSystem) throws {
        size = image.bytes.count
        guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), mapped != MAP_FAILED else {
            throw ConfigError.unreadableFile(kind: "firmware", path: image.path, reason: "cannot map \(size) bytes: \(String(cString: strerror(errno)))")
        }
        host = mapped
        self.image = image
        image.bytes.withUnsafeBytes { host.copyMemory(from: $0.baseAddress!, byteCount: size) }
        do {
            try vm.setUserMemoryRegion(slot: FirmwareImage.memorySlot, guestAddress: image.romBase, size: UInt64(size),
                                       hostAddress: UInt(bitPattern: host), readOnly: system.check(.readonlyMem) > 0)
        } catch {
            munmap(host, size)
            throw error
        }
    }

    deinit { munmap(host, size) }
}

/// What a firmware boot puts into a fresh machine: the BIOS copy below 1 MiB and the fw_cfg
/// files QEMU's firmware reads (the memory map, the ACPI tables with their loader script, the
/// serial console port).
enum FirmwareBoot {
    /// Where SeaBIOS places PCI BARs (top down from the I/O APIC) on a host bridge it does not
    /// know, as Vireo's: the machine's 32-bit window and the DSDT's _CRS say the same.
    static let pciMMIO32: Range<UInt64> = (X86Layout.pciECAMBase + X86Layout.pciECAMSize)..<X86Layout.ioapicAddress

    static func prepare(_ image: FirmwareImage, memory: GuestMemory, fwCfg: FwCfg, cpus: Int) throws {
        let copy = image.legacyCopy
        try memory.writeBytes(copy.bytes, to: GuestAddress(copy.address))
        try fwCfg.addFile(name: "etc/e820", data: e820Table(memory: memory))
        // SeaBIOS's serial console: its own text and int 10h output (boot loaders) go to COM1.
        try fwCfg.addFile(name: "etc/sercon-port", data: [0xF8, 0x03])
        let acpi = try FirmwareACPITables.build(ACPIPlatform(vcpuCount: cpus, pciMMIO32: pciMMIO32))
        try fwCfg.addFile(name: FirmwareACPITables.tablesFile, data: acpi.tables)
        try fwCfg.addFile(name: FirmwareACPITables.rsdpFile, data: acpi.rsdp)
        try fwCfg.addFile(name: FirmwareACPITables.loaderFile, data: acpi.loader)
    }

    /// QEMU's etc/e820: packed {u64 address, u64 length, u32 type} entries, type 1 = RAM; the
    /// firmware reserves what it uses itself and hands the OS the result.
    static func e820Table(memory: GuestMemory) -> [UInt8] {
        var table: [UInt8] = []
        for region in memory.regions {
            table += littleEndianBytes(region.start.raw, 8) + littleEndianBytes(region.size, 8) + littleEndianBytes(1, 4)
        }
        return table
    }

    private static func littleEndianBytes(_ value: UInt64, _ count: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }
}
