import CSandbox
import Glibc
import Testing
@testable import Sandbox

/// A classic-BPF interpreter for the subset seccomp programs use (absolute word loads, AND,
/// JEQ/JGE with constants, RET), so the compiled filters can be checked call by call without
/// installing them in the test process.
struct FilterRun {
    let program: [sock_filter]

    /// The filter's verdict for a call: the full 32-bit return value.
    func verdict(number: Int32, arguments: [UInt64] = [], arch: UInt32 = CSANDBOX_AUDIT_ARCH_X86_64) -> UInt32 {
        var data = [UInt32](repeating: 0, count: 16)  // struct seccomp_data as 32-bit words
        data[0] = UInt32(bitPattern: number)
        data[1] = arch
        for (index, argument) in arguments.enumerated() {
            data[4 + 2 * index] = UInt32(truncatingIfNeeded: argument)
            data[5 + 2 * index] = UInt32(truncatingIfNeeded: argument >> 32)
        }
        var accumulator: UInt32 = 0
        var pc = 0
        while pc < program.count {
            let instruction = program[pc]
            let code = Int32(instruction.code)
            switch code {
            case BPF_LD | BPF_W | BPF_ABS:
                precondition(instruction.k % 4 == 0 && instruction.k < 64, "load outside seccomp_data")
                accumulator = data[Int(instruction.k) / 4]
                pc += 1
            case BPF_ALU | BPF_AND | BPF_K:
                accumulator &= instruction.k
                pc += 1
            case BPF_JMP | BPF_JEQ | BPF_K:
                pc += 1 + Int(accumulator == instruction.k ? instruction.jt : instruction.jf)
            case BPF_JMP | BPF_JGE | BPF_K:
                pc += 1 + Int(accumulator >= instruction.k ? instruction.jt : instruction.jf)
            case BPF_RET | BPF_K:
                return instruction.k
            default:
                Issue.record("unexpected BPF instruction \(code)")
                return 0
            }
        }
        Issue.record("fell off the end of the program")
        return 0
    }

    func verdict(_ name: String, _ arguments: [UInt64] = []) -> UInt32 {
        verdict(number: csandbox_syscall_number(name), arguments: arguments)
    }
}

@Suite struct SeccompProgramTests {
    func run(_ kind: ThreadKind) throws -> FilterRun {
        FilterRun(program: try SyscallPolicy.program(for: kind).instructions)
    }

    @Test func syscallNamesComeFromTheKernelHeader() {
        #expect(csandbox_syscall_number("read") == 0)
        #expect(csandbox_syscall_number("execve") == 59)
        #expect(csandbox_syscall_number("no_such_call") == -1)
        #expect(String(cString: csandbox_syscall_name(41)) == "socket")
        #expect(csandbox_syscall_name(100_000) == nil)
    }

    @Test func everyRuleNamesARealCallAndSaysWhy() throws {
        for kind in ThreadKind.allCases {
            for rule in SyscallPolicy.rules(for: kind) {
                #expect(rule.number != nil, "\(kind): \(rule.name)")
                #expect(rule.reason.count > 10, "\(kind): \(rule.name) has no reason")
            }
            #expect(try SyscallPolicy.program(for: kind).instructions.count < 1024)
        }
        #expect(throws: SeccompError.unknownSyscall("frobnicate")) {
            try SeccompProgram(rules: [SyscallRule("frobnicate", "no such call")])
        }
    }

    @Test func theProcessFilterAllowsWhatEveryThreadKindAllows() {
        let control = SyscallPolicy.allowedNames(for: .control)
        #expect(SyscallPolicy.allowedNames(for: .vcpu).isSubset(of: control))
        #expect(SyscallPolicy.allowedNames(for: .io).isSubset(of: control))
    }

    @Test func listedCallsPassAndOthersTrap() throws {
        let vcpu = try run(.vcpu)
        #expect(vcpu.verdict("write") == SECCOMP_RET_ALLOW)
        #expect(vcpu.verdict("futex") == SECCOMP_RET_ALLOW)
        // A vCPU thread opens nothing, makes no sockets, starts no programs.
        for name in ["openat", "socket", "execve", "connect", "ptrace", "mount", "unshare", "clone", "bpf"] {
            #expect(vcpu.verdict(name) == SECCOMP_RET_TRAP, "vcpu \(name)")
        }
        let io = try run(.io)
        #expect(io.verdict("ppoll") == SECCOMP_RET_ALLOW)
        #expect(io.verdict("pwritev") == SECCOMP_RET_ALLOW)
        #expect(io.verdict("openat") == SECCOMP_RET_TRAP)
        #expect(io.verdict("ioctl", [3, 0xAE80]) == SECCOMP_RET_TRAP)  // KVM_RUN is not the I/O thread's
        #expect(io.verdict("ioctl", [3, UInt64(CSANDBOX_KVM_IRQ_LINE)]) == SECCOMP_RET_ALLOW)  // INTx
        let control = try run(.control)
        for name in ["execve", "execveat", "ptrace", "mount", "unshare", "setns", "init_module", "kexec_load",
                     "bpf", "perf_event_open", "setuid", "chroot", "fork", "vfork", "process_vm_writev"] {
            #expect(control.verdict(name) == SECCOMP_RET_TRAP, "control \(name)")
        }
    }

    /// Memory is never made executable after start: shellcode cannot be mapped or mprotect'ed in.
    @Test func noExecutableMappings() throws {
        for kind in ThreadKind.allCases {
            let filter = try run(kind)
            #expect(filter.verdict("mmap", [0, 4096, UInt64(PROT_READ | PROT_WRITE), 0x22]) == SECCOMP_RET_ALLOW, "\(kind)")
            #expect(filter.verdict("mmap", [0, 4096, UInt64(PROT_READ | PROT_EXEC), 0x22]) == SECCOMP_RET_TRAP, "\(kind)")
            #expect(filter.verdict("mprotect", [0, 4096, UInt64(PROT_READ)]) == SECCOMP_RET_ALLOW, "\(kind)")
            #expect(filter.verdict("mprotect", [0, 4096, UInt64(PROT_READ | PROT_WRITE | PROT_EXEC)]) == SECCOMP_RET_TRAP, "\(kind)")
        }
    }

    @Test func ioctlsAreCheckedByRequest() throws {
        let vcpu = try run(.vcpu)
        #expect(vcpu.verdict("ioctl", [9, 0xAE80]) == SECCOMP_RET_ALLOW)  // KVM_RUN
        #expect(vcpu.verdict("ioctl", [9, 0xC008_AE67]) == SECCOMP_RET_ALLOW)  // KVM_GET_MSRS-style request
        #expect(vcpu.verdict("ioctl", [9, UInt64(CSANDBOX_TUNSETOFFLOAD)]) == SECCOMP_RET_ALLOW)
        #expect(vcpu.verdict("ioctl", [9, UInt64(CSANDBOX_TCGETS)]) == SECCOMP_RET_TRAP)
        #expect(vcpu.verdict("ioctl", [9, 0x8912]) == SECCOMP_RET_TRAP)  // SIOCGIFCONF
        // The request is an unsigned int in the kernel: high bits change nothing, either way.
        #expect(vcpu.verdict("ioctl", [9, 0xFFFF_FFFF_0000_AE80]) == SECCOMP_RET_ALLOW)
        let control = try run(.control)
        #expect(control.verdict("ioctl", [0, UInt64(CSANDBOX_TCGETS)]) == SECCOMP_RET_ALLOW)
        #expect(control.verdict("ioctl", [0, 0xC018_AA3F]) == SECCOMP_RET_ALLOW)  // UFFDIO_API
        #expect(control.verdict("ioctl", [0, 0x5412]) == SECCOMP_RET_TRAP)  // TIOCSTI: typing into a terminal
    }

    @Test func threadsOnlyNoProcessesAndClone3FallsBack() throws {
        let control = try run(.control)
        let threadFlags: UInt64 = 0x3D0F00  // glibc pthread_create: CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
        #expect(control.verdict("clone", [threadFlags]) == SECCOMP_RET_ALLOW)
        #expect(control.verdict("clone", [UInt64(SIGCHLD)]) == SECCOMP_RET_TRAP)  // fork
        #expect(control.verdict("clone3") == SECCOMP_RET_ERRNO | UInt32(ENOSYS))
    }

    @Test func socketsByFamily() throws {
        let control = try run(.control)
        #expect(control.verdict("socket", [UInt64(AF_UNIX), 1]) == SECCOMP_RET_ALLOW)
        #expect(control.verdict("socket", [UInt64(AF_INET6), 1]) == SECCOMP_RET_ALLOW)
        #expect(control.verdict("socket", [16, 3]) == SECCOMP_RET_TRAP)  // AF_NETLINK
        #expect(control.verdict("socket", [17, 3]) == SECCOMP_RET_TRAP)  // AF_PACKET
    }

    @Test func otherArchitecturesAndX32AreKilled() throws {
        let vcpu = try run(.vcpu)
        #expect(vcpu.verdict(number: 0, arch: 0x4000_0003) == SECCOMP_RET_KILL_PROCESS)  // i386's read
        #expect(vcpu.verdict(number: 0x4000_0000 | 1) == SECCOMP_RET_KILL_PROCESS)  // x32's write
    }
}
