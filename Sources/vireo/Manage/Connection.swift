import ArgumentParser
import Foundation
import Manager
#if canImport(Glibc)
import Glibc
#endif

/// How a management command reaches the daemon: `--connect unix:///path`, `--socket PATH`
/// (default $VIREO_SOCKET, else /run/vireo.sock) or `--url http://host:port --token-file F`.
struct ConnectionOptions: ParsableArguments {
    static let defaultSocket = "/run/vireo.sock"

    @Option(name: [.customShort("c"), .long], help: "Daemon URI: unix:///path/to/socket or http://host:port.")
    var connect: String?

    @Option(help: "The daemon's Unix socket (default: $VIREO_SOCKET, else /run/vireo.sock).")
    var socket: String?

    @Option(help: "The daemon's TCP listener, http://host:port (needs --token-file).")
    var url: String?

    @Option(name: .customLong("token-file"), help: "File holding the bearer token for --url.")
    var tokenFile: String?

    func client(timeoutSeconds: Int = 120) throws -> HTTPClient {
        let token = try tokenFile.map { try readToken($0) }
        if let target = url ?? connect.flatMap({ $0.hasPrefix("http://") ? $0 : nil }) {
            guard let endpoint = Self.parseHTTP(target) else {
                throw ManageFailure(["invalid URL '\(target)' (expected http://host:port)"])
            }
            return HTTPClient(endpoint: endpoint, token: token, timeoutSeconds: timeoutSeconds)
        }
        if let connect {
            guard connect.hasPrefix("unix://"), connect.count > "unix://".count else {
                throw ManageFailure(["invalid connection URI '\(connect)' (expected unix:///path or http://host:port)"])
            }
            return HTTPClient(endpoint: .unix(path: String(connect.dropFirst("unix://".count))), token: token, timeoutSeconds: timeoutSeconds)
        }
        let path = socket ?? ProcessInfo.processInfo.environment["VIREO_SOCKET"] ?? Self.defaultSocket
        return HTTPClient(endpoint: .unix(path: path), token: token, timeoutSeconds: timeoutSeconds)
    }

    static func parseHTTP(_ text: String) -> Endpoint? {
        guard text.hasPrefix("http://") else { return nil }
        return Endpoint(daemonURI: text)
    }
}

/// Reads a bearer token: the first line of the file, which must not be readable by others.
func readToken(_ path: String) throws -> String {
    var info = stat()
    guard stat(path, &info) == 0 else { throw ManageFailure(["cannot read token file '\(path)': \(String(cString: strerror(errno)))"]) }
    guard info.st_mode & 0o077 == 0 else {
        throw ManageFailure(["token file '\(path)' is readable by other users; chmod 600 it"])
    }
    guard let data = readBounded(path, limit: 4096) else {
        throw ManageFailure(["cannot read token file '\(path)' (missing, unreadable or over 4 KiB)"])
    }
    let token = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).first
        .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    guard token.count >= 16, token.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
        throw ManageFailure(["token file '\(path)' must hold a token of at least 16 printable ASCII characters"])
    }
    return token
}

/// A failed management command: virsh prints each line as "error: ..." and exits 1.
struct ManageFailure: Error {
    var lines: [String]
    init(_ lines: [String]) { self.lines = lines }
}

/// Runs a command body with virsh's error reporting.
func manage(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as ManageFailure {
        for line in failure.lines { writeStandardError("error: \(line)\n") }
        throw ExitCode(1)
    } catch let error as ClientError {
        writeStandardError("error: failed to connect to the daemon\nerror: \(error)\n")
        throw ExitCode(1)
    }
}

func writeStandardError(_ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// The API's error for a response, in virsh's two lines: what failed, then why.
func failure(_ response: HTTPResponse, doing action: String, name: String) -> ManageFailure {
    if response.status == 404 && response.errorMessage.hasPrefix("no VM named") {
        return ManageFailure(["failed to get domain '\(name)'"])
    }
    return ManageFailure(["\(action) domain '\(name)'", response.errorMessage])
}

extension HTTPClient {
    /// A request that must succeed; anything else becomes the virsh-style failure.
    func expect(_ method: String, _ path: String, body: [UInt8] = [], action: String, name: String) throws -> HTTPResponse {
        let response = try request(method, path, body: body)
        guard (200..<300).contains(response.status) else { throw failure(response, doing: action, name: name) }
        return response
    }

    func decode<T: Decodable>(_ type: T.Type, _ method: String, _ path: String, body: Data = Data(), action: String,
                              name: String) throws -> T {
        let response = try expect(method, path, body: Array(body), action: action, name: name)
        do {
            return try JSONDecoder().decode(type, from: Data(response.body))
        } catch {
            throw ManageFailure(["unexpected answer from the daemon to \(method) \(path)"])
        }
    }
}

/// A VM name in a URL path.
func escapedName(_ name: String) -> String {
    name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._"))) ?? name
}

/// A file's bytes if it holds at most `limit` of them; never reads more than `limit + 1`, so a
/// device or a huge file named by mistake cannot exhaust memory.
func readBounded(_ path: String, limit: Int) -> Data? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    // (nil at once: an empty file)
    guard let data = try? handle.read(upToCount: limit + 1) ?? Data(), data.count <= limit else { return nil }
    return data
}

/// Reads a file a command was given; each failure is one line that names the file and says why
/// (missing, a directory, empty, over the limit).
func readInputFile(_ path: String, what: String, limit: Int) throws -> Data {
    var info = stat()
    guard stat(path, &info) == 0 else { throw ManageFailure(["cannot read \(what) '\(path)': \(String(cString: strerror(errno)))"]) }
    guard info.st_mode & S_IFMT == S_IFREG else { throw ManageFailure(["\(what) '\(path)' is not a regular file"]) }
    guard info.st_size <= limit else { throw ManageFailure(["\(what) '\(path)' is \(info.st_size) bytes; the limit is \(limit)"]) }
    guard info.st_size > 0 else { throw ManageFailure(["\(what) '\(path)' is empty"]) }
    guard let data = readBounded(path, limit: limit) else {
        throw ManageFailure(["cannot read \(what) '\(path)': \(String(cString: strerror(errno)))"])
    }
    return data
}
