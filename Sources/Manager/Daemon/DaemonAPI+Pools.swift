import Foundation

// Storage pools and volumes over the REST API (routes under /v1/pools, virsh's pool-* and vol-*
// verbs). Every pool operation runs on one queue (`poolQueue`): two clients starting, stopping
// or filling pools at once see them one after the other, as libvirt's pool lock gives.
extension Daemon {
    func answerPools(_ route: Route, _ parameters: [String: String], request: APIRequest) throws -> APIResponse {
        let name = parameters["name"] ?? ""
        return try poolQueue.sync { () throws -> APIResponse in
            switch (route.method, route.template) {
            case ("GET", "/v1/pools"):
                return .json(200, try store.pools().map(poolSummary))
            case ("POST", "/v1/pools"):
                let definition: StoragePoolDefinition
                do { definition = try JSONDecoder().decode(StoragePoolDefinition.self, from: Data(request.body)) } catch {
                    throw APIError(400, "body must be a storage pool: {\"name\": ..., \"type\": \"dir\"|\"logical\", \"target\": ... | \"source_name\": ...}")
                }
                try definition.validate()
                try store.definePool(definition)
                return .json(201, poolSummary(try store.pool(named: definition.name)))
            case ("GET", "/v1/pools/{name}"):
                return .json(200, poolSummary(try store.pool(named: name)))
            case ("DELETE", "/v1/pools/{name}"):
                try store.undefinePool(name: name)
                return .json(200, ["message": "Pool \(name) has been undefined"])
            case ("POST", "/v1/pools/{name}/build"):
                try PoolHost(pool: try store.pool(named: name).definition).build()
                return .json(200, ["message": "Pool \(name) built"])
            case ("POST", "/v1/pools/{name}/start"):
                let record = try store.pool(named: name)
                guard !record.active else { throw StoragePoolError.wrongState(name: name, "storage pool \(quoted(name)) is already active") }
                try PoolHost(pool: record.definition).start()
                try store.setPoolActive(name: name, true)
                return .json(200, ["message": "Pool \(name) started"])
            case ("POST", "/v1/pools/{name}/destroy"):
                let record = try store.pool(named: name)
                guard record.active else { throw StoragePoolError.wrongState(name: name, "storage pool \(quoted(name)) is not active") }
                if let user = try runningUser(of: record.definition) {
                    throw StoragePoolError.inUse("storage pool \(quoted(name)) is in use: domain \(quoted(user.vm)) is running with \(user.path)")
                }
                try PoolHost(pool: record.definition).stop()
                try store.setPoolActive(name: name, false)
                return .json(200, ["message": "Pool \(name) destroyed"])
            case ("PUT", "/v1/pools/{name}/autostart"):
                guard let body = try? JSONDecoder().decode(AutostartBody.self, from: Data(request.body)) else {
                    throw APIError(400, "body must be {\"enabled\": true|false}", field: "enabled")
                }
                try store.setPoolAutostart(name: name, body.enabled)
                return .json(200, ["message": body.enabled ? "Pool \(name) marked as autostarted" : "Pool \(name) unmarked as autostarted"])
            case ("GET", "/v1/pools/{name}/volumes"):
                return .json(200, try PoolHost(pool: try activePool(name)).volumes())
            case ("POST", "/v1/pools/{name}/volumes"):
                let volume: StorageVolumeRequest
                do { volume = try JSONDecoder().decode(StorageVolumeRequest.self, from: Data(request.body)) } catch {
                    throw APIError(400, "body must be a volume: {\"name\": ..., \"capacity\": BYTES, \"format\": \"raw\"|\"qcow2\"}")
                }
                return .json(201, try PoolHost(pool: try activePool(name)).createVolume(volume))
            case ("DELETE", "/v1/pools/{name}/volumes/{volume}"):
                let pool = try activePool(name)
                let volume = parameters["volume"] ?? ""
                let path = PoolHost(pool: pool).volumePath(volume)
                if let user = try definedUser(of: path) {
                    throw StoragePoolError.inUse("volume \(quoted(volume)) is a disk of domain \(quoted(user)); remove it from the definition first")
                }
                try PoolHost(pool: pool).deleteVolume(volume)
                return .json(200, ["message": "Vol \(volume) deleted"])
            default:
                throw APIError(500, "route \(route) has no handler")
            }
        }
    }

    /// Starts the pools marked autostart (at daemon start, before any VM that may need them).
    func autostartPools() {
        poolQueue.sync {
            for record in (try? store.pools()) ?? [] where record.autostart && !record.active {
                do {
                    try PoolHost(pool: record.definition).start()
                    try store.setPoolActive(name: record.definition.name, true)
                    environment.log("autostart: pool \(record.definition.name) started")
                } catch {
                    environment.log("autostart: pool \(record.definition.name) failed to start: \(error)")
                }
            }
        }
    }

    private func activePool(_ name: String) throws -> StoragePoolDefinition {
        let record = try store.pool(named: name)
        guard record.active else {
            throw StoragePoolError.wrongState(name: name, "storage pool \(quoted(name)) is not active (pool-start it first)")
        }
        return record.definition
    }

    private func poolSummary(_ record: StoragePoolRecord) -> StoragePoolSummary {
        let space = record.active ? PoolHost(pool: record.definition).space() : nil
        return StoragePoolSummary(name: record.definition.name, type: record.definition.type.rawValue, target: record.definition.target,
                                  sourceName: record.definition.type == .logical ? record.definition.volumeGroup : nil,
                                  state: record.active ? "active" : "inactive", autostart: record.autostart,
                                  capacity: space?.0, allocation: space?.1, available: space?.2)
    }

    /// A defined VM with a disk at `path`, if any.
    private func definedUser(of path: String) throws -> String? {
        try store.all().first { $0.definition.disks.contains { $0.source == path } }?.definition.name
    }

    /// A VM with a process whose disk lies in `pool`, if any.
    private func runningUser(of pool: StoragePoolDefinition) throws -> (vm: String, path: String)? {
        let active = Set(try store.allStates().filter { $0.state.isActive }.map(\.name))
        for record in try store.all() where active.contains(record.definition.name) {
            if let disk = record.definition.disks.first(where: { $0.source.hasPrefix(pool.target + "/") }) {
                return (record.definition.name, disk.source)
            }
        }
        return nil
    }
}
