/// Problems with a qcow2 file's format or metadata, each naming the file and where it went wrong.
public enum QCOW2Error: Error, Equatable, CustomStringConvertible {
    case notQCOW2(path: String)
    case invalidHeader(path: String, reason: String)
    case unsupported(path: String, feature: String)
    /// Metadata that contradicts the format (bad offset, table past EOF, overlap...).
    case corruptMetadata(path: String, what: String, offset: UInt64)
    case markedCorrupt(path: String)
    case markedDirty(path: String)
    case decompressionFailed(path: String, hostOffset: UInt64, reason: String)
    case backingChainTooDeep(path: String, limit: Int)
    case backingLoop(path: String, backing: String)
    case limitExceeded(path: String, what: String)
    case snapshotNotFound(path: String, name: String)
    case invalidOperation(path: String, reason: String)

    public var description: String {
        switch self {
        case let .notQCOW2(path): return "\(path): not a qcow2 image (bad magic)"
        case let .invalidHeader(path, reason): return "\(path): invalid qcow2 header: \(reason)"
        case let .unsupported(path, feature): return "\(path): unsupported qcow2 feature: \(feature)"
        case let .corruptMetadata(path, what, offset):
            return "\(path): corrupt qcow2 metadata: \(what) (offset 0x\(String(offset, radix: 16)))"
        case let .markedCorrupt(path):
            return "\(path): image is marked corrupt; it can only be opened read-only (repair with check -r all)"
        case let .markedDirty(path):
            return "\(path): image has the dirty bit set (lazy refcounts); run `vireo img check -r all` first"
        case let .decompressionFailed(path, offset, reason):
            return "\(path): compressed cluster at 0x\(String(offset, radix: 16)) is invalid: \(reason)"
        case let .backingChainTooDeep(path, limit): return "\(path): backing chain deeper than \(limit) images"
        case let .backingLoop(path, backing): return "\(path): backing file loop through \(backing)"
        case let .limitExceeded(path, what): return "\(path): \(what)"
        case let .snapshotNotFound(path, name): return "\(path): no snapshot named '\(name)'"
        case let .invalidOperation(path, reason): return "\(path): \(reason)"
        }
    }
}
