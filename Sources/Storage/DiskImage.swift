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

    /// qcow2 if the file starts with the qcow2 magic, raw if it carries no signature at all;
    /// another hypervisor's format (VMDK, VHDX, ...) is named in an error rather than read as raw.
    public static func probeFormat(path: String) throws -> ImageFormat {
        let file = try PosixFile(path: path, mode: .readOnly, sharing: .unlocked)
        var head = [UInt8](repeating: 0, count: ImageSignature.headLength)
        let got = try head.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 0) }
        switch ImageSignature.format(head: head.prefix(got)) {
        case nil: break
        case "qcow2": return .qcow2
        case let other?: throw StorageError.foreignFormat(path: path, format: other)
        }
        let size = try file.size()
        if size >= 1024 {
            var tail = [UInt8](repeating: 0, count: 512)
            _ = try tail.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: size - 512) }
            if let other = ImageSignature.format(tail: tail) { throw StorageError.foreignFormat(path: path, format: other) }
        }
        return .raw
    }

    /// Opens an image and its backing chain. Without `format` the format is probed; a writable
    /// image probed as raw refuses writes that would give it another format's signature (the
    /// guest of a VM could otherwise write a qcow2 header naming any host file as its backing
    /// file, and get that file at the next start), as QEMU does.
    public static func open(path: String, format: ImageFormat? = nil, readOnly: Bool,
                            openBacking: Bool = true, sharing: ImageSharing = .standard) throws -> any ExtentMapping {
        try open(path: path, format: format, readOnly: readOnly, openBacking: openBacking, sharing: sharing,
                 chain: [canonicalPath(path)])
    }

    static func open(path: String, format: ImageFormat?, readOnly: Bool, openBacking: Bool, sharing: ImageSharing,
                     chain: [String], allowBlockDevice: Bool = true) throws -> any ExtentMapping {
        let probed = format == nil
        switch try format ?? probeFormat(path: path) {
        case .raw:
            return try RawImage(path: path, readOnly: readOnly, probed: probed, sharing: sharing, allowBlockDevice: allowBlockDevice)
        case .qcow2:
            return try QCOW2Image(path: path, readOnly: readOnly, openBacking: openBacking, sharing: sharing, chain: chain,
                                  allowBlockDevice: allowBlockDevice)
        }
    }

    /// A relative backing name is relative to the directory of the image that names it.
    public static func resolveBackingPath(_ name: String, relativeTo imagePath: String) -> String {
        guard !name.hasPrefix("/") else { return name }
        guard let slash = imagePath.lastIndex(of: "/") else { return name }
        return String(imagePath[...slash]) + name
    }

    /// A backing file: a regular file (not a device, FIFO or socket), opened read-only.
    static func openBacking(name: String, format: String?, of imagePath: String, chain: [String],
                            sharing: ImageSharing) throws -> any BlockDevice {
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
        return try open(path: resolved, format: backingFormat, readOnly: true, openBacking: true,
                        sharing: sharing == .unlocked ? .unlocked : sharing, chain: chain + [canonical], allowBlockDevice: false)
    }
}
