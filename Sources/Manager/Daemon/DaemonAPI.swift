import VMContract
import Foundation

// The REST API's handlers (routes in `Route.all`, documented in docs/api/openapi.yaml).
// Lifecycle calls run on the VM's serial queue; reads go to the store directly (it is consistent
// on its own: each write is one transaction).
extension Daemon {
    func handle(_ request: APIRequest, respond: @escaping @Sendable (APIResponse) -> Void) {
        switch Route.resolve(method: request.method, path: request.path) {
        case .notFound:
            respond(.error(APIError(404, "no such resource: \(sanitizedPath(request.path))")))
        case .wrongMethod(let allowed):
            respond(.error(APIError(405, "\(request.method) is not allowed on \(sanitizedPath(request.path)) (use \(allowed.joined(separator: ", ")))")))
        case .found(let route, let parameters):
            let name = parameters["name"] ?? ""
            let action = route.template.hasPrefix("/v1/vms/{name}/") ? String(route.template.dropFirst("/v1/vms/{name}/".count)) : ""
            if route.method == "POST" && Self.queuedActions.contains(action) {
                lifecycle(action: action, name: name, body: request.body, respond: respond)
                return
            }
            DispatchQueue.global().async { [self] in
                do {
                    if route.template.hasPrefix("/v1/pools") {
                        respond(try answerPools(route, parameters, request: request))
                        return
                    }
                    respond(try answer(route, name: name, request: request))
                } catch {
                    respond(.error(APIError.from(error)))
                }
            }
        }
    }

    private func answer(_ route: Route, name: String, request: APIRequest) throws -> APIResponse {
        switch (route.method, route.template) {
        case ("GET", "/v1/vms"):
            return .json(200, try store.all().map { try summary(of: $0) })
        case ("POST", "/v1/vms"):
            let (definition, unsupported, adjusted) = try Self.parseDefinition(request.body, format: request.query["format"])
            return try define(definition, unsupported: unsupported, adjusted: adjusted)
        case ("GET", "/v1/vms/{name}"):
            return .json(200, try summary(of: try store.record(named: name)))
        case ("DELETE", "/v1/vms/{name}"):
            let controller = try controller(name)
            let removingManagedSave = try Self.flag(request.query, "managed_save")
            try controller.queue.sync { try controller.undefine(removingManagedSave: removingManagedSave) }
            return .json(200, ["message": "Domain '\(name)' has been undefined"])
        case ("GET", "/v1/vms/{name}/definition"):
            return try definitionDocument(name: name, format: request.query["format"] ?? "yaml")
        case ("PUT", "/v1/vms/{name}/definition"):
            let (definition, unsupported, adjusted) = try Self.parseDefinition(request.body, format: request.query["format"])
            guard definition.name == name else {
                throw APIError(400, "name: '\(definition.name)' differs from the VM being replaced ('\(name)')", field: "name")
            }
            return try define(definition, unsupported: unsupported, adjusted: adjusted)
        case ("PUT", "/v1/vms/{name}/autostart"):
            guard let body = try? JSONDecoder().decode(AutostartBody.self, from: Data(request.body)) else {
                throw APIError(400, "body must be {\"enabled\": true|false}", field: "enabled")
            }
            try store.setAutostart(name: name, on: body.enabled)
            return .json(200, ["message": body.enabled ? "Domain '\(name)' marked as autostarted" : "Domain '\(name)' unmarked as autostarted"])
        case ("GET", "/v1/vms/{name}/state"):
            let state = try store.state(named: name)
            return .json(200, VMStateBody(state: state.state.rawValue, reason: state.reason.rawValue))
        case ("GET", "/v1/vms/{name}/stats"):
            return .json(200, try stats(of: try store.record(named: name)))
        case ("GET", "/v1/vms/{name}/console"):
            return try console(name: name, follow: request.query["follow"] == "1")
        case ("POST", "/v1/vms/{name}/console/input"):
            guard let running = try controller(name).process else { throw APIError(409, "domain '\(name)' is not running") }
            let answer = try running.control.call(.consoleInput, body: request.body)
            return APIResponse(status: answer.status, contentType: "application/json", body: .bytes(answer.body))
        case ("GET", "/v1/vms/{name}/save/progress"):
            // Not on the VM's queue: the save it reports on holds that queue.
            guard let running = try controller(name).process else { throw APIError(409, "domain '\(name)' is not running") }
            guard let progress = running.control.answer(SnapshotProgress.self, to: .snapshotProgress) else {
                throw APIError(502, "domain '\(name)': the VMM did not report snapshot progress")
            }
            return .json(200, progress)
        case ("DELETE", "/v1/vms/{name}/managedsave"):
            let controller = try controller(name)
            return .json(200, ["message": try controller.queue.sync { try controller.removeManagedSave() }])
        case ("POST", "/v1/restore"):
            return try restore(request.body)
        case ("GET", "/v1/vms/{name}/migration"):
            return .json(200, try migrationProgress(name: name))
        case ("POST", "/v1/vms/{name}/migrate/cancel"):
            // Not on the VM's queue: the migration's end may need it.
            return .json(200, try controller(name).cancelMigration())
        case ("POST", "/v1/migrations/incoming"):
            return try prepareIncoming(request.body, viaTCP: request.viaTCP)
        case ("DELETE", "/v1/migrations/incoming/{name}"):
            let controller = try controller(name)
            return .json(200, try controller.queue.sync { try controller.abortIncoming() })
        case ("GET", "/v1/events"):
            return eventStream()
        case ("GET", "/metrics"):
            return .text(200, try metricsText(), contentType: "text/plain; version=0.0.4; charset=utf-8")
        default:
            throw APIError(500, "route \(route) has no handler")
        }
    }

    /// `POST /v1/vms/{name}/ACTION` calls that run on the VM's queue.
    static let queuedActions: Set<String> = ["start", "shutdown", "destroy", "reboot", "suspend", "resume", "save", "managedsave", "migrate"]

    private func lifecycle(action: String, name: String, body: [UInt8], respond: @escaping @Sendable (APIResponse) -> Void) {
        let controller: VMController
        let operation: @Sendable () throws -> ActionResult
        do {
            controller = try self.controller(name)
            switch action {
            case "start":
                let forceBoot = try Self.startBody(body).forceBoot
                operation = { try controller.start(forceBoot: forceBoot) }
            case "managedsave": operation = controller.managedSave
            case "shutdown": operation = controller.shutdown
            case "destroy": operation = controller.destroy
            case "reboot": operation = controller.reboot
            case "suspend": operation = controller.suspend
            case "save":
                let path = try Self.snapshotFile(body)
                operation = { try controller.save(to: path) }
            case "migrate":
                let request = try Self.migrateBody(body)
                controller.enqueue({ try controller.migrate(request) }) { result in
                    switch result {
                    case .success(let progress): respond(.json(202, progress))
                    case .failure(let error): respond(.error(error))
                    }
                }
                return
            default: operation = controller.resume
            }
        } catch {
            respond(.error(APIError.from(error)))
            return
        }
        // Only destroy goes ahead while the VM is migrating (it ends the migration with the VM).
        let refuse = action != "destroy"
        controller.enqueue({ () throws -> ActionResult in
            if refuse { try controller.refuseDuringMigration() }
            return try operation()
        }) { result in
            switch result {
            case .success(let answer): respond(.json(200, answer))
            case .failure(let error): respond(.error(error))
            }
        }
    }

    /// `POST /v1/vms/{name}/start`'s body: none, or `{"force_boot": Bool}`.
    static func startBody(_ body: [UInt8]) throws -> StartBody {
        if body.isEmpty { return StartBody(forceBoot: false) }
        guard let request = try? JSONDecoder().decode(StartBody.self, from: Data(body)) else {
            throw APIError(400, "body must be empty or {\"force_boot\": true|false}", field: "force_boot")
        }
        return request
    }

    /// A yes/no query parameter: absent is false; true/false/1/0 (or empty: `?flag`).
    static func flag(_ query: [String: String], _ key: String) throws -> Bool {
        switch query[key] {
        case nil, "false", "0": return false
        case "", "true", "1": return true
        case let other?: throw APIError(400, "\(key): '\(sanitized(String(other.prefix(64))))' is not true or false", field: key)
        }
    }

    /// `POST /v1/restore`: the VM whose saved image the file is, resumed from it (on its queue).
    private func restore(_ body: [UInt8]) throws -> APIResponse {
        let path = try Self.snapshotFile(body)
        guard let image = canonicalPath(path) else {
            let reason = String(cString: strerror(errno))
            throw APIError(404, "cannot restore from \(path): \(reason)")
        }
        guard let name = try store.vmName(savedTo: image) else {
            throw APIError(404, "no defined domain was saved to \(path)")
        }
        let controller = try controller(name)
        return .json(200, try controller.queue.sync { try controller.restore(from: image) })
    }

    /// The `{"path": ...}` body of save and restore: a file on the daemon's host, so absolute.
    static func snapshotFile(_ body: [UInt8]) throws -> String {
        guard let request = try? JSONDecoder().decode(SnapshotFileBody.self, from: Data(body)) else {
            throw APIError(400, "body must be {\"path\": \"/absolute/file\"}", field: "path")
        }
        guard request.path.hasPrefix("/"), request.path.utf8.count <= DefinitionLimits.maxPathBytes else {
            throw APIError(400, "path: '\(sanitized(String(request.path.prefix(256))))' is not an absolute path", field: "path")
        }
        return request.path
    }

    private func define(_ definition: VMDefinition, unsupported: [String], adjusted: [String]) throws -> APIResponse {
        try environment.checkStorage(definition, resolve: false)
        let existed = (try? store.record(named: definition.name)) != nil
        let record = try store.define(definition)
        events.publish(.defined, name: record.name)
        return .json(existed ? 200 : 201, DefineResult(vm: try summary(of: record), unsupported: unsupported,
                                                              adjusted: adjusted.isEmpty ? nil : adjusted))
    }

    /// A native YAML/JSON document, or libvirt XML (`?format=xml`, or a body that starts with '<').
    static func parseDefinition(_ body: [UInt8], format: String?) throws -> (VMDefinition, [String], [String]) {
        let firstByte = body.first { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }
        if format == "xml" || (format == nil && firstByte == UInt8(ascii: "<")) {
            let imported = try ImportResult(libvirtXML: Data(body))
            return (imported.definition, imported.unsupported, imported.adjusted)
        }
        guard format == nil || format == "yaml" || format == "json" else {
            throw APIError(400, "format: '\(format ?? "")' is not one of xml, yaml, json", field: "format")
        }
        return (try VMDefinition(yaml: Data(body)), [], [])
    }

    private func definitionDocument(name: String, format: String) throws -> APIResponse {
        let definition = try store.record(named: name).definition
        switch format {
        case "xml": return .text(200, definition.libvirtXML(), contentType: "application/xml")
        case "json": return .text(200, definition.json(), contentType: "application/json")
        case "yaml": return .text(200, try definition.yaml(), contentType: "application/yaml")
        default: throw APIError(400, "format: '\(format.prefix(16))' is not one of xml, yaml, json", field: "format")
        }
    }

    func summary(of record: VMRecord) throws -> VMSummary {
        let state = try store.state(named: record.name)
        let running = state.state.isActive ? try? controller(record.name).process : nil
        let snapshot = running.flatMap { ProcessSnapshot.read(pid: $0.identity.pid) }
        let cpu = snapshot.map { UInt64(($0.userSeconds + $0.systemSeconds) * 1e9) } ?? 0
        return VMSummary(name: record.name, uuid: record.uuid.uuidString.lowercased(), state: state.state.rawValue,
                         reason: state.reason.rawValue, id: running?.identity.pid, autostart: record.autostart,
                         persistent: true, vcpus: record.definition.vcpus, memoryBytes: record.definition.memory,
                         currentMemoryBytes: record.definition.currentMemory, cpuTimeNanoseconds: cpu,
                         managedSave: (try? controller(record.name).managedSaveImage()) != nil)
    }

    func stats(of record: VMRecord) throws -> VMStats {
        let state = try store.state(named: record.name)
        let running = state.state.isActive ? try? controller(record.name).process : nil
        let snapshot = running.flatMap { ProcessSnapshot.read(pid: $0.identity.pid) }
        let user = snapshot?.userSeconds ?? 0, system = snapshot?.systemSeconds ?? 0
        var devices = deviceCounters(running)
        // The VMM reports disks in definition order by image path; virsh names them by target.
        for index in devices.block.indices where index < record.definition.disks.count {
            devices.block[index].path = devices.block[index].name
            devices.block[index].name = record.definition.disks[index].target
        }
        var stats = VMStats(name: record.name, state: state.state.rawValue, stateCode: VMStats.code(for: state.state),
                            reason: state.reason.rawValue, cpuUserSeconds: user, cpuSystemSeconds: system,
                            cpuTimeNanoseconds: UInt64((user + system) * 1e9), memoryMaxBytes: record.definition.memory,
                            memoryCurrentBytes: record.definition.currentMemory,
                            rssBytes: running.flatMap { ProcessSnapshot.residentBytes(pid: $0.identity.pid) } ?? 0,
                            vcpus: record.definition.vcpus,
                            block: devices.block, net: devices.net)
        if let running, case .success(let cgroups) = environment.cgroups {
            let group = cgroups.group(for: record.name)
            if group.holds(pid: running.identity.pid) {
                let memory = group.memory()
                stats.cgroup = group.path
                stats.cgroupMemoryBytes = memory.usageBytes
                stats.cgroupMemoryLimitBytes = memory.limitBytes
            }
        } else if running == nil {
            let paths = VMPaths(stateDirectory: environment.stateDirectory, name: record.name)
            stats.lastExit = RunStatus.read(from: paths.statusFile)?.detail
        }
        return stats
    }

    /// Block and network counters from the VMM's `GET /vm/stats`, named as virsh domstats names
    /// them. A VMM that does not answer (stopping, restarting) yields none.
    func deviceCounters(_ running: VMProcess?) -> (block: [DeviceCounters], net: [DeviceCounters]) {
        guard let stats = running?.control.answer(VMContract.VMStats.self, to: .stats) else { return ([], []) }
        return (stats.devices.disks.map(DeviceCounters.init), stats.devices.nets.map(DeviceCounters.init))
    }

    /// Recent serial output (from the running VMM's ring, or the serial log of a stopped VM), and
    /// with follow=1 everything after it as it comes.
    private func console(name: String, follow: Bool) throws -> APIResponse {
        let controller = try controller(name)
        guard let running = controller.process else {
            if follow { throw APIError(409, "domain '\(name)' is not running") }
            return APIResponse(status: 200, contentType: "application/octet-stream",
                               body: .bytes(readTailBytes(controller.paths.serialLog, bytes: 64 << 10) ?? []))
        }
        guard follow else {
            let answer = try running.control.call(.console)
            return APIResponse(status: answer.status, contentType: "application/octet-stream", body: .bytes(answer.body))
        }
        let client = running.control
        return APIResponse(status: 200, contentType: "application/octet-stream", body: .stream { writer in
            let handle = StreamHandle()
            writer.onClose { handle.cancel() }
            let thread = Thread {
                _ = try? client.stream(ControlRoute.console.method, ControlRoute.console.path + "?follow=1", connection: handle) { bytes in
                    writer.write(bytes)
                    return true
                }
                writer.finish()
            }
            thread.name = "vireo-console-\(name)"
            thread.start()
        })
    }

    private func eventStream() -> APIResponse {
        let events = self.events
        return APIResponse(status: 200, contentType: "text/event-stream", body: .stream { writer in
            writer.write(Array(": vireo lifecycle events\n\n".utf8))
            let id = events.subscribe { event in writer.write(EventBus.serverSentEvent(event)) }
            writer.onClose { events.unsubscribe(id) }
        })
    }
}

/// A request path in an error message: bounded and without control characters.
func sanitizedPath(_ path: String) -> String { sanitized(String(path.prefix(256))) }
