import Foundation
import Testing
@testable import Manager

/// The REST API against a real daemon (in this process) over real sockets, without VMs.
@Suite struct DaemonAPITests {
    @Test func defineListGetAndUndefine() throws {
        let server = try InProcessDaemon()
        let created = try server.unix.request("POST", "/v1/vms", body: minimalYAML("vm1"))
        #expect(created.status == 201)
        let result = try decodeJSON(DefineResult.self, created)
        #expect(result.vm.name == "vm1" && result.vm.state == "shutoff" && result.vm.id == nil)
        #expect(result.vm.memoryBytes == 32 << 20)

        let list = try decodeJSON([VMSummary].self, try server.unix.request("GET", "/v1/vms"))
        #expect(list.map(\.name) == ["vm1"])
        let state = try decodeJSON(VMStateBody.self, try server.unix.request("GET", "/v1/vms/vm1/state"))
        #expect(state == VMStateBody(state: "shutoff", reason: "unknown"))

        let xml = try server.unix.request("GET", "/v1/vms/vm1/definition?format=xml")
        #expect(xml.status == 200 && xml.text.contains("<name>vm1</name>"))
        // The XML a user gets back defines the same VM again (round trip through the API).
        let again = try server.unix.request("POST", "/v1/vms", body: xml.body)
        #expect(again.status == 200)
        #expect(try decodeJSON(DefineResult.self, again).vm.uuid == result.vm.uuid)

        #expect(try server.unix.request("DELETE", "/v1/vms/vm1").status == 200)
        let gone = try server.unix.request("GET", "/v1/vms/vm1")
        #expect(gone.status == 404)
        #expect(gone.errorMessage == "no VM named 'vm1'")
    }

    @Test func malformedYAMLIsRejectedNamingTheField() throws {
        let server = try InProcessDaemon()
        let badSize = try server.unix.request("POST", "/v1/vms", body: Array("name: a\nmemory: 12X\nos: {kernel: /k}\n".utf8))
        #expect(badSize.status == 400)
        let body = try decodeJSON(APIErrorBody.self, badSize)
        #expect(body.field == "memory")
        #expect(body.error.hasPrefix("memory:"))

        let typo = try server.unix.request("POST", "/v1/vms", body: Array("name: a\nmemory: 32M\nos: {kernel: /k, initrdd: /i}\n".utf8))
        #expect(try decodeJSON(APIErrorBody.self, typo).field == "os.initrdd")

        let notYAML = try server.unix.request("POST", "/v1/vms", body: Array("name: [unclosed\n".utf8))
        #expect(notYAML.status == 400)
        #expect(try decodeJSON(APIErrorBody.self, notYAML).error.hasPrefix("definition:"))
        #expect(try decodeJSON([VMSummary].self, try server.unix.request("GET", "/v1/vms")).isEmpty)
    }

    @Test func malformedXMLIsRejectedNamingTheElement() throws {
        let server = try InProcessDaemon()
        let xml = """
            <domain type='kvm'><name>x1</name><memory unit='MiB'>64</memory><vcpu>zero</vcpu>
            <os><type>hvm</type><kernel>/k</kernel></os></domain>
            """
        let response = try server.unix.request("POST", "/v1/vms?format=xml", body: Array(xml.utf8))
        #expect(response.status == 400)
        let body = try decodeJSON(APIErrorBody.self, response)
        #expect(body.field == "vcpu")
        let broken = try server.unix.request("POST", "/v1/vms", body: Array("<domain><name>x</name>".utf8))
        #expect(broken.status == 400)
    }

    @Test func replacingADefinitionKeepsItsName() throws {
        let server = try InProcessDaemon()
        _ = try server.unix.request("POST", "/v1/vms", body: minimalYAML("keep"))
        let renamed = try server.unix.request("PUT", "/v1/vms/keep/definition", body: minimalYAML("other"))
        #expect(renamed.status == 400)
        #expect(try decodeJSON(APIErrorBody.self, renamed).field == "name")
        let yaml = try server.unix.request("GET", "/v1/vms/keep/definition").text
        let bigger = yaml.replacingOccurrences(of: "memory: 32MiB", with: "memory: 64MiB")
        #expect(bigger != yaml)
        #expect(try server.unix.request("PUT", "/v1/vms/keep/definition", body: Array(bigger.utf8)).status == 200)
        #expect(try decodeJSON(VMSummary.self, try server.unix.request("GET", "/v1/vms/keep")).memoryBytes == 64 << 20)
    }

    @Test func lifecycleCallsOnAStoppedVMAreRefusedLikeVirsh() throws {
        let server = try InProcessDaemon()
        _ = try server.unix.request("POST", "/v1/vms", body: minimalYAML("idle"))
        for action in ["destroy", "shutdown", "suspend", "resume", "reboot"] {
            let response = try server.unix.request("POST", "/v1/vms/idle/\(action)")
            #expect(response.status == 409, "\(action)")
            #expect(response.errorMessage == "domain 'idle' is not running", "\(action)")
        }
        #expect(try server.unix.request("POST", "/v1/vms/nope/start").status == 404)
        // The executable does not exist: start fails with a clear error, state stays shut off.
        let start = try server.unix.request("POST", "/v1/vms/idle/start")
        #expect(start.status == 500)
        #expect(start.errorMessage.contains("failed to start domain 'idle'"))
        #expect(try decodeJSON(VMStateBody.self, try server.unix.request("GET", "/v1/vms/idle/state")).state == "shutoff")
    }

    @Test func unknownPathsAndMethodsGet404And405() throws {
        let server = try InProcessDaemon()
        #expect(try server.unix.request("GET", "/v2/vms").status == 404)
        let wrong = try server.unix.request("PATCH", "/v1/vms")
        #expect(wrong.status == 405)
        #expect(wrong.errorMessage.contains("GET, POST"))
        #expect(try server.unix.request("PUT", "/v1/vms/a/autostart", body: Array("{}".utf8)).status == 400)
    }

    @Test func autostartIsStoredAndShownInMetrics() throws {
        let server = try InProcessDaemon()
        _ = try server.unix.request("POST", "/v1/vms", body: minimalYAML("auto"))
        let on = try server.unix.request("PUT", "/v1/vms/auto/autostart", body: Array(#"{"enabled": true}"#.utf8))
        #expect(on.status == 200)
        #expect(try decodeJSON(VMSummary.self, try server.unix.request("GET", "/v1/vms/auto")).autostart)
        let metrics = try server.unix.request("GET", "/metrics")
        #expect(metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(metrics.text.contains("vireo_vms_defined 1\n"))
        #expect(metrics.text.contains(#"vireo_vm_autostart{name="auto",uuid="#))
        #expect(metrics.text.contains(#"vireo_vm_state{name="auto""#) && metrics.text.contains("} 5\n"))
        #expect(metrics.text.contains("# TYPE vireo_vm_cpu_user_seconds_total counter"))
    }

    @Test func eventsStreamDefinedAndUndefined() throws {
        let server = try InProcessDaemon()
        let handle = StreamHandle()
        let received = LockedEvents()
        let client = server.unix
        let reader = Thread {
            _ = try? client.stream("GET", "/v1/events", connection: handle) { bytes in
                received.append(String(decoding: bytes, as: UTF8.self))
                return !received.text.contains("event: undefined")
            }
        }
        reader.start()
        // The subscription exists once the stream's preamble arrived.
        for _ in 0..<100 where !received.text.contains(": vireo") { usleep(20_000) }
        _ = try server.unix.request("POST", "/v1/vms", body: minimalYAML("ev"))
        _ = try server.unix.request("DELETE", "/v1/vms/ev")
        for _ in 0..<200 where !received.text.contains("event: undefined") { usleep(20_000) }
        handle.cancel()
        let text = received.text
        #expect(text.contains("event: defined\ndata: {"))
        #expect(text.contains(#""name":"ev""#))
        #expect(text.contains("event: undefined"))
    }
}

final class LockedEvents: @unchecked Sendable {
    private let lock = NSLock()
    private var storage = ""
    func append(_ text: String) { lock.lock(); storage += text; lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return storage }
}
