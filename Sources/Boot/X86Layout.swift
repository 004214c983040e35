import GuestMemory

/// The fixed guest-physical layout of a Vireo x86 machine, in one place.
///
/// Below 1 MiB (all RAM, the part from `ebdaStart` on reported reserved in e820):
/// ```
/// 0x00400  BIOS data area (EBDA segment, base memory size)   0x09000  PML4
/// 0x00500  GDT                                               0x0A000  PDPT
/// 0x00520  IDT (one empty entry)                             0x0B000  4 page directories (4 GiB, 2 MiB pages)
/// 0x06000  PVH start_info / Multiboot info + tables          0x20000  command line(s), up to 64 KiB
/// 0x07000  Linux boot_params ("zero page")                   0x30000  setup_data (RNG seed)
/// 0x08FF0  initial stack pointer                             0x9FC00  EBDA: MP floating pointer + table
///                                                            0xE0000  ACPI: RSDP, then the tables
///                                                            0xF0000  copy of the MP floating pointer
/// ```
/// Kernels load at or above `highMemoryStart`; RAM between `mmioHoleStart` and 4 GiB moves above 4 GiB.
/// The hole holds the 32-bit PCI MMIO window (0xC000_0000-0xDFFF_FFFF), the PCI ECAM (0xE000_0000,
/// 1 MiB: bus 0), the I/O APIC and the local APIC.
public enum X86Layout {
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    public static let ioapicAddress: UInt64 = 0xFEC0_0000
    public static let lapicAddress: UInt64 = 0xFEE0_0000

    public static let biosDataArea: UInt64 = 0x400
    public static let gdtAddress: UInt64 = 0x500
    public static let idtAddress: UInt64 = 0x520
    public static let bootInfoAddress: UInt64 = 0x6000
    public static let zeroPageAddress: UInt64 = 0x7000
    public static let bootStackPointer: UInt64 = 0x8FF0
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xA000
    public static let pageDirectoryAddress: UInt64 = 0xB000
    /// Gigabytes identity-mapped by the boot page tables (one page directory each).
    public static let identityMappedGiB: UInt64 = 4
    public static let cmdlineAddress: UInt64 = 0x20000
    /// Bytes reserved for command-line strings, terminating NULs included.
    public static let cmdlineAreaSize: UInt64 = 0x10000
    public static let setupDataAddress: UInt64 = 0x30000
    /// Start of the reserved area: EBDA (MP table here), VGA hole, BIOS ROM; reserved in e820 up to 1 MiB.
    public static let ebdaStart: UInt64 = 0x9FC00
    public static let mpTableAddress: UInt64 = ebdaStart
    /// Second MP floating pointer, in the BIOS ROM range that MP-spec searches always scan.
    public static let mpFloatingPointerCopyAddress: UInt64 = 0xF0000
    /// ACPI RSDP: 16-byte aligned in 0xE0000-0xFFFFF, where Linux's and every OS's legacy scan
    /// looks when the boot protocol does not pass its address. The other tables follow it.
    public static let acpiRSDPAddress: UInt64 = 0xE0000
    /// End (exclusive) of the ACPI table area: the MP floating pointer copy starts here.
    public static let acpiAreaEnd: UInt64 = mpFloatingPointerCopyAddress
    /// ACPI fixed-hardware PM registers (Devices.ACPIPM): PM1a event block (PM1_STS, PM1_EN),
    /// PM1a control block and the 32-bit PM timer, all in I/O space.
    public static let acpiPM1EventPort: UInt16 = 0x600
    public static let acpiPM1ControlPort: UInt16 = 0x604
    public static let acpiPMTimerPort: UInt16 = 0x608
    /// The SCI: ISA IRQ 9, level-triggered active-high (a MADT interrupt source override says so).
    public static let acpiSCIInterrupt: UInt8 = 9
    /// PCI Express enhanced configuration space (ECAM, MCFG): 1 MiB per bus, bus 0 only.
    public static let pciECAMBase: UInt64 = 0xE000_0000
    public static let pciECAMSize: UInt64 = 1 << 20
    /// 32-bit PCI MMIO window (BARs below 4 GiB), from the start of the hole up to the ECAM.
    public static let pciMMIO32Start: UInt64 = mmioHoleStart
    public static let pciMMIO32End: UInt64 = pciECAMBase
    /// PCI I/O window: everything above the legacy ISA ports, fw_cfg (0x510) and ACPI PM (0x600).
    public static let pciIOWindow: ClosedRange<UInt16> = 0x1000...0xFFFF
    public static let highMemoryStart: UInt64 = 0x10_0000
    /// Where a bzImage's protected-mode code goes when it decompresses itself (its code32_start).
    public static let bzImageLoadAddress: UInt64 = 0x10_0000
    /// Where Linux links its kernel (LOAD_PHYSICAL_ADDR), for size checks when the image does not say.
    public static let linuxDefaultLoadAddress: UInt64 = 0x100_0000

    /// RAM ranges for `memorySize` bytes: everything below the hole, the rest from 4 GiB up.
    public static func ramRanges(memorySize: UInt64) -> [(start: GuestAddress, size: UInt64)] {
        guard memorySize > mmioHoleStart else { return [(GuestAddress(0), memorySize)] }
        // Clamped so the high range cannot wrap the address space even for absurd sizes.
        let highSize = min(memorySize - mmioHoleStart, UInt64.max - mmioHoleEnd)
        return [(GuestAddress(0), mmioHoleStart), (GuestAddress(mmioHoleEnd), highSize)]
    }

    /// End of the RAM that starts at address 0 (the only RAM 32-bit structures may point into).
    public static func lowMemoryEnd(of memory: GuestMemory) -> UInt64 {
        var end: UInt64 = 0
        for region in memory.regions.sorted(by: { $0.start < $1.start }) where region.start.raw == end {
            end = region.end
        }
        return min(end, mmioHoleStart)
    }
}

/// One BIOS e820 memory map entry (also the PVH memmap and Multiboot mmap types).
public struct E820Entry: Equatable, Sendable {
    public static let ram: UInt32 = 1
    public static let reserved: UInt32 = 2

    public var address: UInt64
    public var size: UInt64
    public var type: UInt32

    public init(address: UInt64, size: UInt64, type: UInt32) {
        self.address = address
        self.size = size
        self.type = type
    }
}

extension X86Layout {
    /// The memory map reported to guests: every RAM range, with [ebdaStart, 1 MiB) reserved for the
    /// EBDA/MP table, the legacy VGA window and the BIOS area, as real firmware does.
    public static func e820Map(ranges: [(start: GuestAddress, size: UInt64)]) -> [E820Entry] {
        var map: [E820Entry] = []
        for range in ranges.sorted(by: { $0.start < $1.start }) where range.size > 0 {
            let start = range.start.raw
            let end = start &+ range.size < start ? UInt64.max : start + range.size
            var cursor = start
            if cursor < ebdaStart {
                let ramEnd = min(end, ebdaStart)
                map.append(E820Entry(address: cursor, size: ramEnd - cursor, type: E820Entry.ram))
                cursor = ramEnd
            }
            if cursor < end, cursor < highMemoryStart {
                let reservedEnd = min(end, highMemoryStart)
                map.append(E820Entry(address: cursor, size: reservedEnd - cursor, type: E820Entry.reserved))
                cursor = reservedEnd
            }
            if cursor < end {
                map.append(E820Entry(address: cursor, size: end - cursor, type: E820Entry.ram))
            }
        }
        return map
    }

    public static func e820Map(of memory: GuestMemory) -> [E820Entry] {
        e820Map(ranges: memory.regions.map { ($0.start, $0.size) })
    }

    /// The map for a machine with ACPI: the PCI ECAM is also reported reserved, as SeaBIOS does,
    /// because Linux only uses MMCONFIG early in boot when e820 reserves it.
    public static func e820Map(of memory: GuestMemory, acpi: ACPIPlatform?) -> [E820Entry] {
        var map = e820Map(of: memory)
        guard let acpi, acpi.pciECAMSize > 0 else { return map }
        map.append(E820Entry(address: acpi.pciECAMBase, size: acpi.pciECAMSize, type: E820Entry.reserved))
        return map.sorted { $0.address < $1.address }
    }
}
