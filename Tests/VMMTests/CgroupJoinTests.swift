import Foundation
import Testing
@testable import VMM

/// `vireo run`'s first act under the daemon: join the VM's cgroup, or refuse to run.
@Suite struct CgroupJoinTests {
    @Test func writesItsOwnPidMarkerToEachFile() throws {
        let directory = "/tmp/vcj-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let files = [directory + "/memory.procs", directory + "/cpu.procs"]
        for file in files { #expect(FileManager.default.createFile(atPath: file, contents: nil)) }
        try joinCgroups(files)
        for file in files { #expect(try String(contentsOfFile: file, encoding: .utf8) == "0\n", "0: the writer itself") }
    }

    @Test func nothingToJoinIsNotAnError() throws {
        try joinCgroups(nil)
        try joinCgroups([])
    }

    @Test func aGroupItCannotJoinStopsItWithTheReason() {
        #expect(throws: CgroupJoinError(path: "/nonexistent/cgroup.procs", reason: "No such file or directory")) {
            try joinCgroups(["/nonexistent/cgroup.procs"])
        }
        #expect(CgroupJoinError(path: "/x/cgroup.procs", reason: "Permission denied").description
                == "cannot join cgroup /x/cgroup.procs: Permission denied (the VM's resource limits would not apply; not running it)")
    }
}
