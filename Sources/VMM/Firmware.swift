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
    case variablesNeedUEFI(path: String)
    case badVariableStore(path: String, reason: String)

    public var description: String {
        switch self {
        case let .missing(name, path, package):
            return "firmware '\(name)' needs \(path), which is missing: install Debian's \(package) package (apt-get install \(package))"
        case let .badSize(path, size):
            return "firmware '\(path)' is \(size) bytes: a firmware image (with its variable store) is a whole number of 4 KiB pages, at least 64 KiB and at most \(FirmwareImage.maximumSize >> 20) MiB (it is mapped just below 4 GiB)"
        case let .noResetVector(path, bytes):
            return "firmware '\(path)' is not a PC firmware image: its last 16 bytes, where the CPU starts, hold no jump (\(bytes.map { String(format: "%02x", $0) }.joined(separator: " ")))"
        case let .notYet(name, why):
            return "firmware '\(name)' is not supported yet: \(why)"
        case let .variablesNeedUEFI(path):
            return "--efivars goes with UEFI firmware (--firmware uefi, or an OVMF build); '\(path)' is not one"
        case let .badVariableStore(path, reason):
            return "UEFI variable store '\(path)': \(reason)"
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
    /// UEFI (an image that starts with a firmware volume, as every OVMF build does) or a BIOS.
    public let kind: Kind
    /// The empty variable store a new VM's is copied from (for "uefi": Debian's OVMF_VARS_4M.fd).
    public let variableStoreTemplate: String?

    public enum Kind: String, Sendable { case bios, uefi }

    /// The top-of-4-GiB window ends at 4 GiB and starts above the local APIC and KVM's TSS pages.
    public static let maximumSize = 16 << 20
    public static let minimumSize = 64 << 10
    /// The part copied below 1 MiB: 0xC0000-0xFFFFF at most.
    public static let legacyWindowSize = 256 << 10
    /// The KVM memory slot of the ROM (guest RAM takes slots from 0 up).
    static let memorySlot: UInt32 = 16

    /// Firmware by name, from Debian's packages. SeaBIOS: the 256 KiB build (QEMU's default for
    /// its PC machines; the 128 KiB bios.bin lacks features, bios-microvm.bin expects a machine
    /// without a PCI host bridge). OVMF: the 4 MiB build's code (without Secure Boot's SMM
    /// requirement), with a variable store beside it in flash (`FirmwareVariableStore`), the
    /// pair QEMU's `-drive if=pflash` and virt-install use.
    public static let known: [(name: String, path: String, package: String, variables: String?)] = [
        ("bios", "/usr/share/seabios/bios-256k.bin", "seabios", nil),
        ("uefi", "/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ]

    /// Reads the firmware `choice` names ("bios", "uefi" or a path) and checks its size.
    public static func load(_ choice: String) throws -> FirmwareImage {
        let path: String
        var template: String?
        if let entry = known.first(where: { $0.name == choice }) {
            guard access(entry.path, R_OK) == 0 else { throw FirmwareError.missing(name: choice, path: entry.path, package: entry.package) }
            if let variables = entry.variables, access(variables, R_OK) != 0 {
                throw FirmwareError.missing(name: choice, path: variables, package: entry.package)
            }
            path = entry.path
            template = entry.variables
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
        return FirmwareImage(name: choice, path: path, bytes: bytes, kind: isFirmwareVolume(bytes) ? .uefi : .bios,
                             variableStoreTemplate: template)
    }

    /// A UEFI (PI) firmware volume header: "_FVH" at offset 40. OVMF's code, variable store and
    /// unified images all start with one; SeaBIOS and coreboot images do not.
    static func isFirmwareVolume(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 44 && Array(bytes[40..<44]) == Array("_FVH".utf8)
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

/// A UEFI firmware's variable store: flash (`PFlash`) right below the firmware's code, as QEMU's
/// second pflash unit sits, where OVMF's build expects it (its layout is fixed when it is built:
/// the 4 MiB build's store at 0xFFC00000, 528 KiB, then the code up to 4 GiB). Array reads come
/// from a read-only memory slot over the flash's own pages; writes (commands) exit to the device;
/// while the flash answers reads with a register (status, identifier), the slot is removed.
final class FirmwareVariableStore: @unchecked Sendable {
    static let memorySlot: UInt32 = 17
    let flash: PFlash
    let base: UInt64
    var size: UInt64 { UInt64(flash.memory.count) }

    init(_ memory: FlashMemory, below codeBase: UInt64, vm: VirtualMachine, system: KVMSystem, restoring saved: PFlashState?,
         log: @escaping @Sendable (String) -> Void) throws {
        let base = codeBase - UInt64(memory.count)
        self.base = base
        let mapsArray = system.check(.readonlyMem) > 0
        let host = UInt(bitPattern: memory.base), size = UInt64(memory.count)
        // Without read-only slots every access reaches the device (slower, same behaviour).
        let onRegisterReads: @Sendable (Bool) -> Void = { registers in
            guard mapsArray else { return }
            do {
                try vm.setUserMemoryRegion(slot: Self.memorySlot, guestAddress: base, size: registers ? 0 : size,
                                           hostAddress: host, readOnly: true)
            } catch {
                log("UEFI variable store: cannot \(registers ? "unmap" : "map") its array: \(error)")
            }
        }
        if let saved {
            flash = try PFlash(memory: memory, restoring: saved, onRegisterReads: onRegisterReads)
        } else {
            flash = PFlash(memory: memory, onRegisterReads: onRegisterReads)
        }
        if mapsArray && !flash.readsNeedDevice {
            try vm.setUserMemoryRegion(slot: Self.memorySlot, guestAddress: base, size: size, hostAddress: host, readOnly: true)
        }
    }

    /// The store for `firmware`: the file at `path` (made from the firmware's template when it
    /// does not exist yet, as libvirt makes a VM's nvram), or, without a path, a private copy of
    /// the template (variables last as long as the VM). Nil for a UEFI firmware file with neither.
    static func open(path: String?, for firmware: FirmwareImage) throws -> FlashMemory? {
        guard firmware.kind == .uefi else {
            if path != nil { throw FirmwareError.variablesNeedUEFI(path: firmware.path) }
            return nil
        }
        let template = try firmware.variableStoreTemplate.map { try readWholeFile($0, kind: "UEFI variable store template", limit: UInt64(FirmwareImage.maximumSize)) }
        guard let path else { return try template.map { try FlashMemory(copying: $0) } }
        var fd = Glibc.open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        if fd < 0 && errno == ENOENT {
            guard let template else {
                throw FirmwareError.badVariableStore(path: path, reason: "does not exist, and firmware '\(firmware.path)' names no empty store to copy: copy its VARS file there")
            }
            fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw FirmwareError.badVariableStore(path: path, reason: "cannot create it: \(String(cString: strerror(errno)))") }
            var written = 0
            while written < template.count {
                let count = template[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    let reason = String(cString: strerror(count < 0 ? errno : EIO))
                    close(fd); unlink(path)
                    throw FirmwareError.badVariableStore(path: path, reason: "cannot write it: \(reason)")
                }
                written += count
            }
            if fsync(fd) != 0 {
                let reason = String(cString: strerror(errno))
                close(fd); unlink(path)
                throw FirmwareError.badVariableStore(path: path, reason: "cannot write it: \(reason)")
            }
        }
        guard fd >= 0 else { throw FirmwareError.badVariableStore(path: path, reason: String(cString: strerror(errno))) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw FirmwareError.badVariableStore(path: path, reason: "not a regular file")
        }
        let size = Int(info.st_size)
        let room = FirmwareImage.maximumSize - firmware.bytes.count
        guard size >= PFlash.blockSize, size % PFlash.blockSize == 0, size <= room else {
            close(fd)
            throw FirmwareError.badVariableStore(path: path, reason: "\(size) bytes: a store is a whole number of 4 KiB blocks, at most \(room >> 10) KiB beside this firmware")
        }
        if let template, template.count != size {
            close(fd)
            throw FirmwareError.badVariableStore(path: path, reason: "\(size) bytes, where this firmware's store (\(firmware.variableStoreTemplate ?? "")) has \(template.count): it belongs to another firmware build")
        }
        let memory = try FlashMemory(file: fd, path: path)
        guard FirmwareImage.isFirmwareVolume(memory.bytes) else {
            throw FirmwareError.badVariableStore(path: path, reason: "holds no firmware volume header (not an OVMF VARS file)")
        }
        return memory
    }
}

/// What a firmware boot puts into a fresh machine: the BIOS copy below 1 MiB and the fw_cfg
/// files QEMU's firmware reads (the memory map, the ACPI tables with their loader script, the
/// serial console port).
enum FirmwareBoot {
    /// Where SeaBIOS places PCI BARs (top down from the I/O APIC) on a host bridge it does not
    /// know, as Vireo's: the machine's 32-bit window and the DSDT's _CRS say the same.
    static let pciMMIO32: Range<UInt64> = (X86Layout.pciECAMBase + X86Layout.pciECAMSize)..<X86Layout.ioapicAddress

    /// OVMF's PIIX4_PMBA_VALUE: where it would put the ACPI PM block, and powers off through.
    static let ovmfPIIX4PMBase: UInt64 = 0xB000

    /// Where OVMF places 32-bit BARs on an i440FX: from the end of low RAM (2 GiB at least) up;
    /// the machine's window ends at the ECAM, which leaves room for 512 MiB of BARs at least.
    static func uefiMMIO32(lowMemoryEnd: UInt64) -> Range<UInt64> {
        max(lowMemoryEnd, 2 << 30)..<X86Layout.pciECAMBase
    }

    /// 64-bit BARs: OVMF picks an aperture from the guest's physical address width (the top
    /// eighth of it, in the build Debian ships) or from the RAM size and a fixed size (older
    /// builds), so the machine decodes everything from the end of RAM (1 GiB aligned) to the top
    /// of the physical address space, and the DSDT's _CRS says the same.
    static func uefiMMIO64(memory: GuestMemory, physicalAddressBits: Int) -> Range<UInt64> {
        let ramEnd = memory.regions.map { $0.start.raw + $0.size }.max() ?? 0
        let start = (max(ramEnd, X86Layout.mmioHoleEnd) + (1 << 30) - 1) & ~((1 << 30) - 1)
        let end = UInt64(1) << UInt64(min(max(physicalAddressBits, 36), 52))
        return start < end ? start..<end : start..<(start + (1 << 30))
    }

    /// The firmware boot's fw_cfg files: the memory map, the ACPI tables (with the machine's PCI
    /// windows in their _CRS), the serial console for SeaBIOS, and `bootorder` (the disks, in the
    /// order the VM lists them, as OpenFirmware paths both SeaBIOS and OVMF match).
    static func prepare(_ image: FirmwareImage, memory: GuestMemory, fwCfg: FwCfg, cpus: Int,
                        pciMMIO32: Range<UInt64>, pciMMIO64: Range<UInt64>?, bootDevices: [String]) throws {
        if image.kind == .bios {
            let copy = image.legacyCopy
            try memory.writeBytes(copy.bytes, to: GuestAddress(copy.address))
        }
        try fwCfg.addFile(name: "etc/e820", data: e820Table(memory: memory))
        // SeaBIOS's serial console: its own text and int 10h output (boot loaders) go to COM1.
        try fwCfg.addFile(name: "etc/sercon-port", data: [0xF8, 0x03])
        if !bootDevices.isEmpty {
            // As QEMU writes it: one path per line, the last one NUL-terminated.
            try fwCfg.addFile(name: "bootorder", data: Array(bootDevices.joined(separator: "\n").utf8) + [0])
        }
        let acpi = try FirmwareACPITables.build(ACPIPlatform(vcpuCount: cpus, pciMMIO32: pciMMIO32, pciMMIO64: pciMMIO64))
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
