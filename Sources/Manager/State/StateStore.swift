import Foundation
import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// The management daemon's persistent state: VM definitions, autostart flags and last known states,
/// in `<stateDir>/vireo.sqlite`.
///
/// SQLite in WAL mode with `synchronous = FULL` and every change in one transaction: a daemon
/// killed at any instant leaves either the old or the new state, never a mix and never a
/// corrupt file. Thread-safe: GRDB's pool serializes writers and lets readers run beside them.
public final class StateStore: Sendable {
    public static let fileName = "vireo.sqlite"

    public let path: String
    let pool: DatabasePool

    /// Opens (creating if missing) the store in `stateDirectory`, then applies pending migrations.
    public init(stateDirectory: String) throws {
        path = stateDirectory.hasSuffix("/") ? stateDirectory + Self.fileName : stateDirectory + "/" + Self.fileName
        try Self.createPrivateDirectory(stateDirectory)
        try Self.createOrCheckFile(path)
        var configuration = Configuration()
        // Another process (a second daemon, a CLI reading state) may hold the write lock briefly.
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // FULL: a committed transaction survives power loss too, not only a killed process.
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch let error as DatabaseError where error.resultCode == .SQLITE_NOTADB {
            throw StateStoreError.notADatabase(path: path)
        } catch let error as DatabaseError {
            throw StateStoreError.cannotOpen(path: path, reason: error.message ?? "\(error.resultCode)")
        }
        let migrator = StateSchema.migrator
        try Self.mapErrors(path: path) {
            if try pool.read({ try migrator.hasBeenSuperseded($0) }) {
                throw StateStoreError.newerSchema(path: path)
            }
            try migrator.migrate(pool)
        }
    }

    /// The migrations applied to this database, oldest first.
    public func appliedMigrations() throws -> [String] {
        try read { try StateSchema.migrator.appliedMigrations($0) }
    }

    /// Runs `body` in one write transaction: it all commits, or on any throw none of it does.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        try Self.mapErrors(path: path) { try pool.write(body) }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        try Self.mapErrors(path: path) { try pool.read(body) }
    }

    /// SQLite's errors become one-line `StateStoreError`s; the store's own errors pass through.
    static func mapErrors<T>(path: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as StateStoreError {
            throw error
        } catch let error as DatabaseError where error.resultCode == .SQLITE_NOTADB {
            throw StateStoreError.notADatabase(path: path)
        } catch let error as DatabaseError {
            throw StateStoreError.database(reason: error.message ?? "\(error.resultCode)")
        }
    }

    /// The state holds definitions (kernel paths, sockets) that only the daemon's user should read.
    static func createPrivateDirectory(_ directory: String) throws {
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw StateStoreError.cannotOpen(path: directory, reason: "cannot create state directory: \(error.localizedDescription)")
        }
    }

    /// Creates an empty database file with mode 0600 (SQLite copies it to the -wal and -shm files),
    /// or checks that an existing file starts with SQLite's magic before SQLite may touch it.
    static func createOrCheckFile(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 {
            close(fd)
            return
        }
        let creationErrno = errno
        guard creationErrno == EEXIST else {
            throw StateStoreError.cannotOpen(path: path, reason: String(cString: strerror(creationErrno)))
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw StateStoreError.cannotOpen(path: path, reason: "cannot read file")
        }
        defer { try? handle.close() }
        let magic = Array("SQLite format 3\0".utf8)
        let header: Data
        do {
            header = try handle.read(upToCount: magic.count) ?? Data()
        } catch {
            throw StateStoreError.cannotOpen(path: path, reason: error.localizedDescription)
        }
        // An empty file is an empty database to SQLite (a crash right after creation leaves one).
        if header.isEmpty { return }
        guard Array(header) == magic else { throw StateStoreError.notADatabase(path: path) }
    }
}
