/// Named objects and data objects of the AML grammar (ACPI 6.5 sections 20.2.5-20.2.6), each
/// returned as the finished bytes its parent embeds. Composition is by value: a Device is its
/// name plus the concatenated bytes of the terms inside it.
extension AML {
    static let nameOp: UInt8 = 0x08, scopeOp: UInt8 = 0x10, bufferOp: UInt8 = 0x11, packageOp: UInt8 = 0x12
    static let methodOp: UInt8 = 0x14, returnOp: UInt8 = 0xA4
    static let extOpPrefix: UInt8 = 0x5B, deviceOp: UInt8 = 0x82

    /// DefScope: ScopeOp PkgLength NameString TermList.
    public static func scope(_ name: String, _ terms: [[UInt8]]) throws(AMLError) -> [UInt8] {
        try [scopeOp] + packaged(try nameString(name) + terms.flatMap { $0 })
    }

    /// DefDevice: ExtOpPrefix DeviceOp PkgLength NameString TermList.
    public static func device(_ name: String, _ terms: [[UInt8]]) throws(AMLError) -> [UInt8] {
        try [extOpPrefix, deviceOp] + packaged(try nameString(name) + terms.flatMap { $0 })
    }

    /// DefName: NameOp NameString DataRefObject.
    public static func name(_ name: String, _ value: [UInt8]) throws(AMLError) -> [UInt8] {
        try [nameOp] + nameString(name) + value
    }

    /// DefMethod: MethodOp PkgLength NameString MethodFlags TermList. MethodFlags carries the
    /// argument count in bits 0-2, SerializeFlag in bit 3 and the sync level in bits 4-7.
    public static func method(_ name: String, argumentCount: Int = 0, serialized: Bool = false, syncLevel: Int = 0,
                              _ terms: [[UInt8]]) throws(AMLError) -> [UInt8] {
        guard (0...7).contains(argumentCount), (0...15).contains(syncLevel) else {
            throw .invalidMethodFlags(argumentCount: argumentCount, syncLevel: syncLevel)
        }
        let flags = UInt8(argumentCount) | (serialized ? 0x08 : 0) | UInt8(syncLevel) << 4
        return try [methodOp] + packaged(try nameString(name) + [flags] + terms.flatMap { $0 })
    }

    /// DefReturn: ReturnOp ArgObject.
    public static func returnValue(_ value: [UInt8]) -> [UInt8] {
        [returnOp] + value
    }

    /// DefPackage: PackageOp PkgLength NumElements PackageElementList (at most 255 elements;
    /// larger lists need VarPackageOp, which nothing here uses).
    public static func package(_ elements: [[UInt8]]) throws(AMLError) -> [UInt8] {
        guard elements.count <= 255 else { throw .tooManyPackageElements(elements.count) }
        return try [packageOp] + packaged([UInt8(elements.count)] + elements.flatMap { $0 })
    }

    /// DefBuffer: BufferOp PkgLength BufferSize ByteList, the size as the smallest integer.
    public static func buffer(_ bytes: [UInt8]) throws(AMLError) -> [UInt8] {
        try [bufferOp] + packaged(integer(UInt64(bytes.count)) + bytes)
    }

    /// `body` preceded by its PkgLength.
    static func packaged(_ body: [UInt8]) throws(AMLError) -> [UInt8] {
        try pkgLength(bodyLength: body.count) + body
    }
}
