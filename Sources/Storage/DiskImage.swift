#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum ImageFormat: String, Sendable, CaseIterable {
    case raw, qcow2
}

/// Opening images by format, and backing chains with a depth limit and loop detection.
public enum DiskImage {
    public static let maxBackingDepth = 64

    /// qcow2 if the file starts with the qcow2 magic, raw otherwise (what qemu-img probes too).
    public static func probeFormat(path: String) throws -> ImageFormat {
        let file = try PosixFile(path: path, mode: .readOnly)
        var magic = [UInt8](repeating: 0, count: 4)
        let got = try magic.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 0) }
        return got == 4 && magic.be32(0) == QCOW2Header.magic ? .qcow2 : .raw
    }

    public static func open(path: String, format: ImageFormat? = nil, readOnly: Bool,
                            openBacking: Bool = true) throws -> any ExtentMapping {
        try open(path: path, format: format, readOnly: readOnly, openBacking: openBacking, chain: [canonicalPath(path)])
    }

    static func open(path: String, format: ImageFormat?, readOnly: Bool, openBacking: Bool,
                     chain: [String]) throws -> any ExtentMapping {
        switch try format ?? probeFormat(path: path) {
        case .raw: return try RawImage(path: path, readOnly: readOnly)
        case .qcow2: return try QCOW2Image(path: path, readOnly: readOnly, openBacking: openBacking, chain: chain)
        }
    }

    /// A relative backing name is relative to the directory of the image that names it.
    public static func resolveBackingPath(_ name: String, relativeTo imagePath: String) -> String {
        guard !name.hasPrefix("/") else { return name }
        guard let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    static func openBacking(name: String, format: String?, of imagePath: String, chain: [String]) throws -> any BlockDevice {
        guard chain.count < maxBackingDepth else {
            throw QCOW2Error.backingChainTooDeep(path: imagePath, limit: maxBackingDepth)
        }
        let resolved = resolveBackingPath(name, relativeTo: imagePath)
        let canonical = canonicalPath(resolved)
        guard !chain.contains(canonical) else { throw QCOW2Error.backingLoop(path: imagePath, backing: name) }
        var backingFormat: ImageFormat?
        if let format {
            guard let known = ImageFormat(rawValue: format) else {
                throw QCOW2Error.unsupported(path: imagePath, feature: "backing file format '\(format)'")
            }
            backingFormat = known
        }
        guard access(resolved, F_OK) == 0 else {
            throw QCOW2Error.invalidOperation(path: imagePath, reason: "backing file '\(resolved)' does not exist")
        }
        return try open(path: resolved, format: backingFormat, readOnly: true, openBacking: true, chain: chain + [canonical])
    }
}
