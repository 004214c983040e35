import VMContract
import Foundation

// The REST API's migration handlers: the source's (migrate, its progress, cancel) and the
// destination's (prepare an incoming VM, abort it). The work is in VMController+Migration and
// VMController+Incoming.
extension Daemon {
    /// The body of `POST /v1/vms/{name}/migrate`.
    static func migrateBody(_ body: [UInt8]) throws -> MigrateBody {
        do {
            return try JSONDecoder().decode(MigrateBody.self, from: Data(body))
        } catch {
            throw APIError(400, "body must be {\"destination\": \"unix:///path/to/daemon.sock\" or \"http://host:port\", \"live\": true|false, ...}",
                           field: "destination")
        }
    }

    /// `GET /v1/vms/{name}/migration`: the current or last migration of the VM, also after it
    /// was undefined by `undefine_source` (phase none when there was none).
    func migrationProgress(name: String) throws -> MigrationProgress {
        if let job = controllerIfCreated(name)?.migration { return job.progress }
        _ = try store.state(named: name)
        return MigrationProgress(phase: .none)
    }

    /// `POST /v1/migrations/incoming`, from a source daemon. Its VMM listens on a Unix socket in
    /// the VM's directory when the source came over the Unix socket (same host), else on TCP.
    func prepareIncoming(_ body: [UInt8], viaTCP: Bool) throws -> APIResponse {
        let incoming: IncomingMigrationBody
        do {
            incoming = try JSONDecoder().decode(IncomingMigrationBody.self, from: Data(body))
        } catch let error as DefinitionError {
            throw APIError.from(error)
        } catch {
            throw APIError(400, "body must be {\"definition\": {...}, \"keep_paused\": true|false}", field: "definition")
        }
        let controller = controllerEvenIfUndefined(incoming.definition.name)
        let answer = try controller.queue.sync {
            try controller.prepareIncoming(incoming, tcpAddress: viaTCP ? environment.migrationListen : nil)
        }
        environment.log("VM '\(answer.name)': receiving a migration on \(answer.address)")
        return .json(201, answer)
    }
}
