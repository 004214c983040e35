import CZlib
import Foundation
import GuestMemory
#if canImport(Glibc)
import Glibc
#endif

/// Where a migration stream goes: a TCP address or a Unix socket.
public enum MigrationAddress: Equatable, Sendable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    /// `tcp:HOST:PORT` (HOST may be `[v6]` or empty for every address when listening),
    /// `unix:PATH` or `unix:///PATH`.
    public init(parsing text: String) throws {
        if text.hasPrefix("unix:") {
            var path = String(text.dropFirst(5))
            if path.hasPrefix("//") { path = String(path.dropFirst(2)) }
            guard path.hasPrefix("/"), !path.isEmpty else {
                throw MigrationError.badAddress(text, "a Unix socket needs an absolute path (unix:/run/vm.sock)")
            }
            guard path.utf8.count < 100 else { throw MigrationError.badAddress(text, "the socket path is longer than 99 bytes") }
            self = .unix(path: path)
        } else if text.hasPrefix("tcp:") {
            let rest = text.dropFirst(4)
            guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else {
                throw MigrationError.badAddress(text, "expected tcp:HOST:PORT")
            }
            var host = String(rest[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            self = .tcp(host: host, port: port)
        } else {
            throw MigrationError.badAddress(text, "expected tcp:HOST:PORT or unix:PATH")
        }
    }

    public var description: String {
        switch self {
        case let .tcp(host, port): return host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)"
        case let .unix(path): return "unix:\(path)"
        }
    }
}

/// Why a migration failed, one line each.
public enum MigrationError: Error, Equatable, CustomStringConvertible {
    case badAddress(String, String)
    case io(String, errno: Int32)
    case closed(String)
    case timedOut(String)
    case corrupt(String)
    case unsupportedVersion(found: UInt32, supported: UInt32)
    case refused(String)
    case cancelled
    case busy(String)

    public var description: String {
        switch self {
        case let .badAddress(address, why): return "bad migration address '\(address)': \(why)"
        case let .io(what, errno): return "\(what): \(String(cString: strerror(errno)))"
        case let .closed(when): return "the migration connection closed \(when)"
        case let .timedOut(what): return "timed out \(what)"
        case let .corrupt(what): return "corrupt migration stream: \(what)"
        case let .unsupportedVersion(found, supported):
            return "migration stream version \(found); this Vireo speaks version \(supported)"
        case let .refused(why): return "the other side refused the migration: \(why)"
        case .cancelled: return "the migration was cancelled"
        case let .busy(why): return why
        }
    }
}

/// The kinds of frame a migration stream carries.
enum MigrationFrame: UInt8, CaseIterable {
    /// Source → destination, first: "VIREOMIG", version, then the machine (JSON `MigrationHello`).
    case hello = 1
    /// Destination → source: RAM allocated, send it.
    case ready = 2
    /// Guest-physical address (8 bytes), then whole pages.
    case pages = 3
    /// Guest-physical address and length (8 bytes each): pages that are all zeros now.
    case zeros = 4
    /// The end of a pre-copy round (4 bytes: its number).
    case roundEnd = 5
    /// The device and vCPU state (JSON `SnapshotPayload`), sent while the guest is stopped.
    case state = 6
    /// Source → destination: everything is there, run the guest.
    case complete = 7
    /// Destination → source: the guest runs here now.
    case running = 8
    /// Either way: the sender gives up, with why (UTF-8).
    case error = 9
    /// `--copy-storage-all`: disk index (4 bytes), 4 zero bytes, byte offset (8), then data.
    case diskData = 10
    /// `--copy-storage-all`: disk index (4), 4 zero bytes, offset (8), length (8) reading as zeros.
    case diskZeros = 11
    /// Source → destination, before the state: switch to post-copy; the payload is, per RAM
    /// region, a word count (8 bytes) and that many bitmap words: the pages still to come.
    case postcopy = 12
    /// Destination → source during post-copy: the guest faulted on this guest-physical page.
    case pageRequest = 13
    /// Post-copy: the source has sent every page (and, back, the destination has them all).
    case postcopyEnd = 14
    /// Source → destination, after the last pages (with "verify"): a CRC-32 per page of all of
    /// RAM, 4 bytes each, region after region; the destination compares its copy.
    case verify = 15

    /// The largest payload each kind may have (a hostile peer cannot make the reader allocate more).
    var maximumPayload: Int {
        switch self {
        case .hello: return 1 << 20
        case .pages: return 8 + MigrationChannel.maximumPagesPerFrame * 4096
        case .zeros: return 16
        case .roundEnd: return 4
        case .state: return Int(SnapshotFile.maximumStateBytes)
        case .ready, .complete, .running: return 0
        case .error: return 4096
        case .diskData: return 16 + Int(TrackedDisk.chunkSize)
        case .diskZeros: return 24
        case .postcopy: return 64 << 20
        case .pageRequest: return 8
        case .postcopyEnd: return 0
        case .verify: return 64 << 20
        }
    }
}

/// The machine a migration describes before its RAM: what the destination needs to allocate it
/// and to check it can run it.
struct MigrationHello: Codable {
    var machine: LaunchSpec
    var effectiveCmdline: String
    /// RAM regions: guest-physical start and size.
    var regions: [[UInt64]]
    /// With `--copy-storage-all`: the disks the stream also carries, in device order.
    var mirroredDisks: [MirroredDisk]?
}

/// One migration connection: frames of `tag, kind, length, CRC-32, payload` over a stream socket.
/// Every frame is checked (tag, kind, length limit, checksum), so a corrupt or hostile stream
/// ends in a one-line error rather than in guest memory.
final class MigrationChannel: @unchecked Sendable {
    static let streamMagic = Array("VIREOMIG".utf8)
    static let streamVersion: UInt32 = 1
    static let frameTag: UInt32 = 0x4749_4D56  // "VMIG"
    static let headerLength = 16
    static let maximumPagesPerFrame = 256

    let fd: Int32
    /// Who is at the other end, for messages.
    let peer: String
    private var receiveBuffer: [UInt8] = []
    /// Frames are sent whole: post-copy sends from more than one thread.
    private let sendLock = Guarded(())
    private let closedFlag = Guarded(false)

    init(fd: Int32, peer: String) {
        self.fd = fd
        self.peer = peer
    }

    deinit { close() }

    func close() {
        let first = closedFlag.update { closed -> Bool in defer { closed = true }; return !closed }
        if first { Glibc.close(fd) }
    }

    /// Unblocks a send or receive in progress on another thread (cancel).
    func shutdown() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    /// Gives up waiting for the peer after this long (0: never).
    func setTimeout(seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)  // 0: no limit
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    // MARK: Connecting

    /// Connects to a listening destination.
    static func connect(to address: MigrationAddress, timeoutSeconds: Int = 30) throws -> MigrationChannel {
        switch address {
        case let .unix(path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw MigrationError.io("socket", errno: errno) }
            var addr = unixAddress(path)
            let status = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard status == 0 else {
                let err = errno
                Glibc.close(fd)
                throw MigrationError.io("cannot connect to \(address)", errno: err)
            }
            let channel = MigrationChannel(fd: fd, peer: address.description)
            channel.setTimeout(seconds: timeoutSeconds)
            return channel
        case let .tcp(host, port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host.isEmpty ? "localhost" : host, String(port), &hints, &list)
            guard status == 0, let first = list else {
                throw MigrationError.badAddress(address.description, "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
            }
            defer { freeaddrinfo(first) }
            var lastError: Int32 = ECONNREFUSED
            var entry: UnsafeMutablePointer<addrinfo>? = first
            while let info = entry {
                entry = info.pointee.ai_next
                let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.pointee.ai_protocol)
                guard fd >= 0 else { lastError = errno; continue }
                if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                    var one: Int32 = 1
                    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    let channel = MigrationChannel(fd: fd, peer: address.description)
                    channel.setTimeout(seconds: timeoutSeconds)
                    return channel
                }
                lastError = errno
                Glibc.close(fd)
            }
            throw MigrationError.io("cannot connect to \(address)", errno: lastError)
        }
    }

    /// A listening socket for `vireo run --incoming`.
    final class Listener: @unchecked Sendable {
        let fd: Int32
        let address: MigrationAddress
        /// The TCP port really bound (differs from the address's when it asked for port 0).
        let port: UInt16?

        init(_ address: MigrationAddress) throws {
            self.address = address
            let fd: Int32
            switch address {
            case let .unix(path):
                fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                guard fd >= 0 else { throw MigrationError.io("socket", errno: errno) }
                // A socket file left by an earlier run is replaced; anything else at the path is not.
                var info = stat()
                if lstat(path, &info) == 0 {
                    guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                        Glibc.close(fd)
                        throw MigrationError.badAddress(address.description, "\(path) exists and is not a socket")
                    }
                    unlink(path)
                }
                // Bound beside the path and renamed onto it once listening, so that the socket
                // file appears only when a connection to it can succeed (scripts wait for it).
                unlink(path + ".tmp")
                var addr = unixAddress(path + ".tmp")
                let status = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                guard status == 0 else {
                    let err = errno
                    Glibc.close(fd)
                    throw MigrationError.io("cannot listen on \(address)", errno: err)
                }
                self.port = nil
            case let .tcp(host, port):
                var hints = addrinfo()
                hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
                hints.ai_flags = AI_PASSIVE
                var list: UnsafeMutablePointer<addrinfo>?
                let status = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &list)
                guard status == 0, let info = list else {
                    throw MigrationError.badAddress(address.description, "cannot resolve \(host): \(String(cString: gai_strerror(status)))")
                }
                defer { freeaddrinfo(info) }
                fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), info.pointee.ai_protocol)
                guard fd >= 0 else { throw MigrationError.io("socket", errno: errno) }
                var one: Int32 = 1
                _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
                guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
                    let err = errno
                    Glibc.close(fd)
                    throw MigrationError.io("cannot listen on \(address)", errno: err)
                }
                var bound = sockaddr_storage()
                var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                _ = withUnsafeMutablePointer(to: &bound) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
                }
                let family = bound.ss_family
                self.port = withUnsafePointer(to: &bound) { pointer -> UInt16 in
                    if family == sa_family_t(AF_INET6) {
                        return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                    }
                    return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
                }
            }
            guard listen(fd, 1) == 0 else {
                let err = errno
                Glibc.close(fd)
                throw MigrationError.io("cannot listen on \(address)", errno: err)
            }
            if case let .unix(path) = address, rename(path + ".tmp", path) != 0 {
                let err = errno
                Glibc.close(fd)
                unlink(path + ".tmp")
                throw MigrationError.io("cannot listen on \(address)", errno: err)
            }
            self.fd = fd
        }

        /// Waits for the source (without a time limit, as QEMU's -incoming does).
        func accept() throws -> MigrationChannel {
            while true {
                let client = Glibc.accept(fd, nil, nil)
                if client >= 0 {
                    _ = fcntl(client, F_SETFD, FD_CLOEXEC)
                    if case .tcp = address {
                        var one: Int32 = 1
                        _ = setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    }
                    return MigrationChannel(fd: client, peer: Self.peerName(client) ?? address.description)
                }
                if errno == EINTR || errno == ECONNABORTED { continue }
                throw MigrationError.io("accept on \(address)", errno: errno)
            }
        }

        func close() {
            Glibc.close(fd)
            if case let .unix(path) = address { unlink(path) }
        }

        private static func peerName(_ fd: Int32) -> String? {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let status = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
            }
            guard status == 0 else { return nil }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST)), service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
            let named = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    getnameinfo($0, length, &host, socklen_t(host.count), &service, socklen_t(service.count), NI_NUMERICHOST | NI_NUMERICSERV)
                }
            }
            guard named == 0, storage.ss_family != sa_family_t(AF_UNIX) else { return nil }
            return "tcp:\(String(cString: host)):\(String(cString: service))"
        }
    }

    private static func unixAddress(_ path: String) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
        }
        return addr
    }

    // MARK: Frames

    /// Sends one frame whose payload is `parts` back to back.
    func send(_ kind: MigrationFrame, _ parts: [UnsafeRawBufferPointer] = []) throws {
        let length = parts.reduce(0) { $0 + $1.count }
        precondition(length <= kind.maximumPayload, "frame \(kind) of \(length) bytes")
        var crc = crc32(0, nil, 0)
        for part in parts where part.count > 0 {
            crc = crc32(crc, part.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(part.count))
        }
        var header = [UInt8](repeating: 0, count: Self.headerLength)
        Self.put(Self.frameTag, at: 0, in: &header)
        header[4] = kind.rawValue
        Self.put(UInt32(length), at: 8, in: &header)
        Self.put(UInt32(truncatingIfNeeded: crc), at: 12, in: &header)
        try header.withUnsafeBytes { headerBytes in
            var pieces = [headerBytes] + parts.filter { $0.count > 0 }
            try sendLock.update { _ in try sendAll(&pieces) }
        }
    }

    func send(_ kind: MigrationFrame, bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send(kind, [$0]) }
    }

    /// Sends an error frame if the connection still takes it; never throws (the error being
    /// reported matters more than this one).
    func sendError(_ message: String) {
        try? send(.error, bytes: Array(message.utf8.prefix(MigrationFrame.error.maximumPayload)))
    }

    private func sendAll(_ pieces: inout [UnsafeRawBufferPointer]) throws {
        var index = 0
        var offset = 0
        while index < pieces.count {
            var vectors = pieces[index...].enumerated().map { position, piece -> iovec in
                let skip = position == 0 ? offset : 0
                return iovec(iov_base: UnsafeMutableRawPointer(mutating: piece.baseAddress! + skip), iov_len: piece.count - skip)
            }
            var message = msghdr()
            let sent = vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                message.msg_iov = buffer.baseAddress
                message.msg_iovlen = buffer.count
                return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw MigrationError.timedOut("sending to \(peer)") }
                throw MigrationError.io("sending to \(peer)", errno: errno)
            }
            var remaining = sent
            while remaining > 0 && index < pieces.count {
                let left = pieces[index].count - offset
                if remaining >= left { remaining -= left; index += 1; offset = 0 } else { offset += remaining; remaining = 0 }
            }
        }
    }

    /// Receives one frame: its kind and payload (valid until the next receive). `during` names
    /// what was being waited for, for the error when the peer goes away.
    func receive(during: String) throws -> (MigrationFrame, UnsafeRawBufferPointer) {
        var header = [UInt8](repeating: 0, count: Self.headerLength)
        try header.withUnsafeMutableBytes { try receiveExactly($0, during: during) }
        guard Self.get(header, 0) as UInt32 == Self.frameTag else { throw MigrationError.corrupt("bad frame tag \(during)") }
        guard let kind = MigrationFrame(rawValue: header[4]), header[5] == 0, header[6] == 0, header[7] == 0 else {
            throw MigrationError.corrupt("unknown frame kind \(header[4]) \(during)")
        }
        let length = Int(Self.get(header, 8) as UInt32)
        guard length <= kind.maximumPayload else {
            throw MigrationError.corrupt("\(kind) frame of \(length) bytes (at most \(kind.maximumPayload)) \(during)")
        }
        if receiveBuffer.count < length { receiveBuffer = [UInt8](repeating: 0, count: max(length, 64 << 10)) }
        let expected = Self.get(header, 12) as UInt32
        return try receiveBuffer.withUnsafeMutableBytes { raw in
            let payload = UnsafeMutableRawBufferPointer(rebasing: raw[0..<length])
            try receiveExactly(payload, during: during)
            let crc = length == 0 ? crc32(0, nil, 0) : crc32(crc32(0, nil, 0), payload.baseAddress!.assumingMemoryBound(to: Bytef.self), uInt(length))
            guard UInt32(truncatingIfNeeded: crc) == expected else { throw MigrationError.corrupt("checksum mismatch in a \(kind) frame \(during)") }
            if kind == .error {
                throw MigrationError.refused(String(decoding: UnsafeRawBufferPointer(payload), as: UTF8.self))
            }
            // The buffer outlives this closure (it is the channel's), so its pointer stays valid.
            return (kind, UnsafeRawBufferPointer(payload))
        }
    }

    private func receiveExactly(_ buffer: UnsafeMutableRawBufferPointer, during: String) throws {
        var done = 0
        while done < buffer.count {
            let count = recv(fd, buffer.baseAddress! + done, buffer.count - done, 0)
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw MigrationError.timedOut("waiting for \(peer) \(during)") }
                throw MigrationError.io("receiving from \(peer) \(during)", errno: errno)
            }
            if count == 0 { throw MigrationError.closed(during) }
            done += count
        }
    }

    static func put<T: FixedWidthInteger>(_ value: T, at offset: Int, in bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + MemoryLayout<T>.size, with: $0) }
    }

    static func get<T: FixedWidthInteger>(_ bytes: some Collection<UInt8>, _ offset: Int) -> T {
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { raw in
            for (index, byte) in bytes.dropFirst(offset).prefix(MemoryLayout<T>.size).enumerated() { raw[index] = byte }
        }
        return T(littleEndian: value)
    }

    static func get<T: FixedWidthInteger>(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> T {
        T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
