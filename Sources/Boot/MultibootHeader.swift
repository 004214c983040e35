/// The Multiboot v1 header (Multiboot Specification 0.6.96, section 3.1): magic 0x1BADB002,
/// flags and checksum summing to zero, 4-byte aligned within the first 8 KiB of the image.
struct MultibootHeader {
    static let magic: UInt32 = 0x1BAD_B002
    static let searchLimit = 8192
    static let pageAlignModules: UInt32 = 1 << 0
    static let memoryInfo: UInt32 = 1 << 1
    static let videoMode: UInt32 = 1 << 2
    static let addressFields: UInt32 = 1 << 16

    var offset: Int
    var flags: UInt32
    var headerAddress: UInt32 = 0, loadAddress: UInt32 = 0, loadEndAddress: UInt32 = 0
    var bssEndAddress: UInt32 = 0, entryAddress: UInt32 = 0

    var hasAddressFields: Bool { flags & MultibootHeader.addressFields != 0 }

    /// The first header with a valid checksum, or nil. The address fields are read only if present.
    static func find(in file: [UInt8]) -> MultibootHeader? {
        var offset = 0
        while offset + 12 <= min(file.count, searchLimit) {
            defer { offset += 4 }
            guard file.le(UInt32.self, at: offset) == magic,
                  let flags = file.le(UInt32.self, at: offset + 4),
                  let checksum = file.le(UInt32.self, at: offset + 8),
                  magic &+ flags &+ checksum == 0 else { continue }
            var header = MultibootHeader(offset: offset, flags: flags)
            if header.hasAddressFields {
                header.headerAddress = file.le(UInt32.self, at: offset + 12) ?? 0
                header.loadAddress = file.le(UInt32.self, at: offset + 16) ?? 0
                header.loadEndAddress = file.le(UInt32.self, at: offset + 20) ?? 0
                header.bssEndAddress = file.le(UInt32.self, at: offset + 24) ?? 0
                header.entryAddress = file.le(UInt32.self, at: offset + 28) ?? 0
            }
            return header
        }
        return nil
    }

    /// Requirement bits 0-15 that Vireo does not know make the image unbootable (spec 3.1.2).
    func checkRequirements(in file: [UInt8]) throws(BootError) {
        let unknown = flags & 0xFFFF & ~(MultibootHeader.pageAlignModules | MultibootHeader.memoryInfo | MultibootHeader.videoMode)
        guard unknown == 0 else { throw .badMultiboot("header requires unsupported features (flags \(hex(UInt64(flags))))") }
        if hasAddressFields, offset + 32 > file.count {
            throw .badMultiboot("header at \(hex(UInt64(offset))) sets the address-fields flag but the file ends inside them")
        }
    }

    /// Loads an a.out-kludge image (flags bit 16): the file from the computed offset is copied to
    /// load_addr up to load_end_addr, then zeroed to bss_end_addr. Returns (entry, end).
    func loadKludge(_ file: [UInt8], into writer: GuestWriter) throws(BootError) -> (entry: UInt64, end: UInt64) {
        guard loadAddress <= headerAddress, headerAddress - loadAddress <= UInt32(offset) else {
            throw .badMultiboot("load_addr \(hex(UInt64(loadAddress))) and header_addr \(hex(UInt64(headerAddress))) place the image before the start of the file")
        }
        let fileStart = offset - Int(headerAddress - loadAddress)
        let loadSize: UInt64
        if loadEndAddress == 0 {
            loadSize = UInt64(file.count - fileStart)
        } else {
            guard loadEndAddress > loadAddress else {
                throw .badMultiboot("load_end_addr \(hex(UInt64(loadEndAddress))) is not above load_addr \(hex(UInt64(loadAddress)))")
            }
            loadSize = UInt64(loadEndAddress - loadAddress)
        }
        guard let range = file.checkedRange(offset: UInt64(fileStart), length: loadSize) else {
            throw .badMultiboot("load_end_addr asks for \(loadSize) bytes from file offset \(hex(UInt64(fileStart))), past the end of the \(file.count)-byte file")
        }
        let loadEnd = UInt64(loadAddress) + loadSize
        var end = loadEnd
        if bssEndAddress != 0 {
            guard UInt64(bssEndAddress) >= loadEnd else {
                throw .badMultiboot("bss_end_addr \(hex(UInt64(bssEndAddress))) is below the end of the loaded image \(hex(loadEnd))")
            }
            end = UInt64(bssEndAddress)
        }
        try ELFImage.checkPlacement(address: UInt64(loadAddress), size: end - UInt64(loadAddress), in: writer)
        guard entryAddress >= loadAddress, UInt64(entryAddress) < end else {
            throw .badMultiboot("entry_addr \(hex(UInt64(entryAddress))) is outside the loaded image \(hex(UInt64(loadAddress)))-\(hex(end))")
        }
        try writer.write(Array(file[range]), at: UInt64(loadAddress), "Multiboot image")
        if end > loadEnd { try writer.zero(at: loadEnd, length: end - loadEnd, "Multiboot bss") }
        return (UInt64(entryAddress), end)
    }
}
