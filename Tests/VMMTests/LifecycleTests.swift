import Foundation
import Testing
@testable import VMM

/// Every suite that boots guests runs inside this one, one test at a time, so that process-wide
/// counts (KVM descriptors, vCPU threads) are attributable and the 2-core host is not oversubscribed.
@Suite(.serialized) struct KVMGuestSuites {}

extension KVMGuestSuites {
    /// vCPU threads and KVM file descriptors must not outlive the machine.
    @Suite struct LifecycleTests {
        /// Descriptors for KVM VMs and vCPUs (anon inodes "kvm-vm", "kvm-vcpu:N").
        static func kvmDescriptors() -> Int {
            let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
            return fds.filter { fd in
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? ""
                return target.hasPrefix("anon_inode:kvm-")
            }.count
        }

        /// Threads named by VCPURunner ("vcpu0", "vcpu1", ...).
        static func vcpuThreads() -> Int {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.filter { task in
                let name = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
                return name.hasPrefix("vcpu")
            }.count
        }

        @Test func machinesReleaseThreadsAndDescriptors() throws {
            #expect(Self.kvmDescriptors() == 0)
            #expect(Self.vcpuThreads() == 0)
            for _ in 0..<3 {
                // A guest that keeps running (APs waiting for SIPI, BSP ticking): the accounting
                // must see one VM fd, four vCPU fds and four named threads...
                let guest = try BootedGuest("mb-user.elf", cmdline: "ticks=100000", cpus: 4)
                #expect(guest.serial.waitFor("tick 1"))
                #expect(Self.kvmDescriptors() == 5)
                #expect(Self.vcpuThreads() == 4)
                guest.machine.requestStop()
                #expect(guest.finish(timeoutSeconds: 10) == .stopped)
                // ...and none of them once the machine is gone.
                #expect(Self.vcpuThreads() == 0)
            }
            for _ in 0..<3 {
                #expect(try BootedGuest("mb-smp.elf", cpus: 4).finish() == .debugExit(value: 0))
            }
            #expect(Self.vcpuThreads() == 0)
            #expect(Self.kvmDescriptors() == 0)
        }

        @Test func hostStopEndsARunningGuest() throws {
            let guest = try BootedGuest("mb-user.elf", cmdline: "ticks=1000")
            #expect(guest.serial.waitFor("tick 1"))
            guest.machine.requestStop()
            #expect(guest.finish(timeoutSeconds: 10) == .stopped)
            #expect(Self.vcpuThreads() == 0)
        }
    }
}
