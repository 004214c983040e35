/// The Linux x86 setup header of a bzImage (Documentation/arch/x86/boot.rst), at file offset 0x1F1.
/// Offsets below are boot_params offsets, which equal file offsets for the header.
struct SetupHeader {
    enum Offset {
        static let setupSects = 0x1F1, bootFlag = 0x1FE, jump = 0x200, magic = 0x202, version = 0x206
        static let typeOfLoader = 0x210, loadflags = 0x211, code32Start = 0x214
        static let ramdiskImage = 0x218, ramdiskSize = 0x21C, heapEndPtr = 0x224, cmdLinePtr = 0x228
        static let initrdAddrMax = 0x22C, kernelAlignment = 0x230, xloadflags = 0x236, cmdlineSize = 0x238
        static let payloadOffset = 0x248, payloadLength = 0x24C, setupData = 0x250, prefAddress = 0x258
        static let initSize = 0x260
        /// First boot_params field after the header (edd_mbr_sig_buffer): the copy never reaches it.
        static let headerLimit = 0x290
    }

    static let magic: UInt32 = 0x5372_6448   // "HdrS"
    static let xlfKernel64: UInt16 = 1 << 0
    static let loadedHigh: UInt8 = 1 << 0
    static let canUseHeap: UInt8 = 1 << 7

    /// The header bytes [0x1F1, end) as found in the file, end = 0x202 + the jump's offset byte.
    var bytes: [UInt8]
    var version: UInt16
    var setupSize: Int

    static func isBzImage(_ file: [UInt8]) -> Bool {
        file.le(UInt32.self, at: Offset.magic) == magic && file.le(UInt16.self, at: Offset.bootFlag) == 0xAA55
    }

    init(parsing file: [UInt8]) throws(BootError) {
        guard SetupHeader.isBzImage(file), let version = file.le(UInt16.self, at: Offset.version) else {
            throw .badBzImage("no setup header (HdrS and boot flag 0xAA55) at 0x1F1")
        }
        guard version >= 0x0206 else {
            throw .badBzImage("boot protocol \(SetupHeader.versionString(version)) is too old; Vireo needs 2.06 or later")
        }
        let headerEnd = min(0x202 + Int(file[0x201]), Offset.headerLimit, file.count)
        bytes = Array(file[Offset.setupSects..<max(headerEnd, Offset.magic + 4)])
        self.version = version
        let sectors = file[Offset.setupSects] == 0 ? 4 : Int(file[Offset.setupSects])
        setupSize = (sectors + 1) * 512
        guard setupSize < file.count else {
            throw .badBzImage("setup_sects \(sectors) puts the protected-mode code at \(hex(UInt64(setupSize))), past the end of the \(file.count)-byte file")
        }
    }

    static func versionString(_ version: UInt16) -> String { "\(version >> 8).\(String(format2: version & 0xFF))" }

    /// Reads a field by its boot_params offset; nil when the header in this file is too short for it.
    func field<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ offset: Int) -> T? {
        bytes.le(type, at: offset - Offset.setupSects)
    }

    var xloadflags: UInt16 { version >= 0x020C ? field(UInt16.self, Offset.xloadflags) ?? 0 : 0 }
    var initSize: UInt64 { version >= 0x020A ? UInt64(field(UInt32.self, Offset.initSize) ?? 0) : 0 }
    var prefAddress: UInt64 {
        version >= 0x020A ? field(UInt64.self, Offset.prefAddress) ?? X86Layout.linuxDefaultLoadAddress
                          : X86Layout.linuxDefaultLoadAddress
    }
    /// Highest address the initrd may occupy (boot.rst: 0x37FFFFFF before protocol 2.03).
    var initrdAddrMax: UInt64 { UInt64(field(UInt32.self, Offset.initrdAddrMax) ?? 0x37FF_FFFF) }
    /// Longest command line without its NUL (255 before protocol 2.06).
    var cmdlineSize: Int { Int(field(UInt32.self, Offset.cmdlineSize) ?? 255) }
    var payload: (offset: UInt64, length: UInt64)? {
        guard version >= 0x0208, let offset = field(UInt32.self, Offset.payloadOffset),
              let length = field(UInt32.self, Offset.payloadLength) else { return nil }
        return (UInt64(offset), UInt64(length))
    }
}

private extension String {
    init(format2 value: UInt16) { self = value < 10 ? "0\(value)" : "\(value)" }
}
