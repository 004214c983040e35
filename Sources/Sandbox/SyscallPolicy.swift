import CSandbox
#if canImport(Glibc)
import Glibc
#endif

/// The system calls each thread kind may make, each with the reason it needs it. Derived by
/// running the VMM's workloads with `VIREO_SECCOMP=log` (the kernel logs every call a filter does
/// not list, with the thread's name: scripts/seccomp-derive.sh) and reading why each one happens;
/// anything not listed stops the VM with a report naming the call.
///
/// The control filter is the process-wide one: every thread starts from it, so it lists what any
/// kind needs. vCPU and I/O threads add their own, narrower filter on top.
public enum SyscallPolicy {
    /// A kind's rules in filter order, without repeats: a call another list already allows with
    /// any arguments is not listed again.
    public static func rules(for kind: ThreadKind) -> [SyscallRule] {
        let lists: [SyscallRule] = switch kind {
        case .vcpu: vcpu + common
        case .io: io + common
        case .control: vcpu + io + common + control
        }
        let unconditional = Set(lists.filter(\.conditions.isEmpty).map(\.name))
        var seen = Set<String>()
        return lists.filter { rule in
            if rule.conditions.isEmpty { return seen.insert(rule.name).inserted }
            return !unconditional.contains(rule.name) && seen.insert(rule.name + "\(rule.conditions)").inserted
        }
    }

    /// The names a kind may call (with or without argument conditions).
    public static func allowedNames(for kind: ThreadKind) -> Set<String> {
        Set(rules(for: kind).filter { $0.action == .allow }.map(\.name))
    }

    /// The compiled filter of `kind`.
    static func program(for kind: ThreadKind, outsidePolicy: SeccompAction = .trap) throws -> SeccompProgram {
        try SeccompProgram(rules: rules(for: kind), defaultAction: outsidePolicy)
    }

    private static func ioctl(_ reason: String, _ requests: [UInt32]) -> SyscallRule {
        SyscallRule("ioctl", reason, when: requests.map { .equals(1, $0) })
    }

    /// ioctls of one type byte (bits 8-15 of the request): all of KVM's (0xAE), userfaultfd's (0xAA).
    private static func ioctlType(_ type: UInt32, _ reason: String) -> SyscallRule {
        SyscallRule("ioctl", reason, when: [.masked(1, mask: 0xFF00, equals: type << 8)])
    }

    static let kvmIoctls = ioctlType(0xAE, "KVM's ioctls (KVM_RUN, register and state access, IRQ lines, memory slots)")

    /// What every thread does as a Swift program: allocate, lock, end.
    static let common: [SyscallRule] = [
        SyscallRule("futex", "Mutex, condition variables and thread joins (glibc's pthread)"),
        SyscallRule("read", "eventfds and notifications; disks and sockets on other threads"),
        SyscallRule("write", "eventfds (irqfd, wake-ups), the serial console and logs, the violation report"),
        SyscallRule("mmap", "the allocator's arenas and large blocks; never executable (no code is loaded after start)",
                    when: [.masked(2, mask: UInt32(PROT_EXEC), equals: 0)]),
        SyscallRule("munmap", "the allocator returning large blocks; a thread's stack at its end"),
        SyscallRule("mprotect", "the allocator growing an arena; never making memory executable (W^X)",
                    when: [.masked(2, mask: UInt32(PROT_EXEC), equals: 0)]),
        SyscallRule("madvise", "the allocator and glibc releasing freed pages (MADV_DONTNEED)"),
        SyscallRule("brk", "the allocator's main heap"),
        SyscallRule("rt_sigprocmask", "glibc blocks signals around thread exit and in pthread calls"),
        SyscallRule("rt_sigreturn", "return from the vCPU kick signal's handler"),
        SyscallRule("sched_yield", "spin-then-yield in the Swift runtime and atomics loops"),
        SyscallRule("clock_gettime", "time stamps (vDSO fallback): RTC, timers, statistics"),
        SyscallRule("gettid", "thread ids for signals and logs"),
        SyscallRule("getpid", "the process id for tgkill"),
        SyscallRule("tgkill", "kicking a vCPU thread out of KVM_RUN (pause, stop, snapshot)"),
        SyscallRule("close", "closing fds a device or request is done with"),
        SyscallRule("exit", "a thread's end"),
        SyscallRule("exit_group", "the process's end (also the violation report's)"),
        SyscallRule("restart_syscall", "a call interrupted by the kick signal resumes"),
        SyscallRule("getrandom", "the Swift runtime's hashing seed; the virtio-rng device's entropy"),
        SyscallRule("nanosleep", "short back-off sleeps"),
        SyscallRule("clock_nanosleep", "short back-off sleeps"),
    ]

    /// A vCPU thread: KVM_RUN and the emulation of what it exits for (port and MMIO devices,
    /// virtio notifications that are not ioeventfds, the flash of a UEFI variable store).
    static let vcpu: [SyscallRule] = [
        kvmIoctls,
        ioctl("virtio-net feature negotiation sets the TAP's offloads and header size",
              [CSANDBOX_TUNSETOFFLOAD, CSANDBOX_TUNSETVNETHDRSZ]),
        ioctl("the violation report restores the terminal", [CSANDBOX_TCSETS]),
        SyscallRule("pwrite64", "a UEFI variable store's flash writes reach its file"),
        SyscallRule("fdatasync", "a UEFI variable store's flash writes are made durable"),
        SyscallRule("writev", "console output"),
        SyscallRule("eventfd2", "an MSI-X vector the guest programs gets its irqfd (KVM_IRQFD) then"),
    ]

    /// A virtio device's I/O thread: poll its eventfds and backend, move requests to and from the
    /// disk image, TAP or passt socket.
    static let io: [SyscallRule] = [
        SyscallRule("poll", "the I/O thread's wait on its eventfds and backend fds"),
        SyscallRule("ppoll", "the I/O thread's wait on its eventfds and backend fds"),
        SyscallRule("pread64", "disk reads (raw and qcow2 data, qcow2 tables)"),
        SyscallRule("pwrite64", "disk writes"),
        SyscallRule("preadv", "disk reads into several buffers"),
        SyscallRule("pwritev", "disk writes from several buffers"),
        SyscallRule("readv", "TAP frames into several buffers"),
        SyscallRule("writev", "TAP frames from several buffers"),
        SyscallRule("fdatasync", "virtio-blk FLUSH"),
        SyscallRule("fsync", "virtio-blk FLUSH on images that need metadata synced"),
        SyscallRule("fallocate", "virtio-blk DISCARD and WRITE_ZEROES punch holes"),
        SyscallRule("ftruncate", "a qcow2 image grows"),
        SyscallRule("lseek", "SEEK_DATA/SEEK_HOLE when a raw image maps its extents"),
        SyscallRule("fstat", "an image's size"),
        ioctl("virtio-net's reset withdraws the TAP's offloads; a device without MSI-X raises its INTx line (KVM_IRQ_LINE)",
              [CSANDBOX_TUNSETOFFLOAD, CSANDBOX_KVM_IRQ_LINE]),
        SyscallRule("sendto", "frames to passt (its Unix socket)"),
        SyscallRule("recvfrom", "frames from passt"),
        SyscallRule("sendmsg", "frames to passt"),
        SyscallRule("recvmsg", "frames from passt"),
    ]

    /// The main thread, the control API, the console, snapshots and migration: files, sockets and
    /// the machine's (re)construction.
    static let control: [SyscallRule] = [
        ioctlType(0xAA, "userfaultfd's ioctls: post-copy migration fills guest pages on demand"),
        ioctl("the console's terminal: raw mode, size, non-blocking sockets",
              [CSANDBOX_TCGETS, CSANDBOX_TCSETS, CSANDBOX_TCSETSW, CSANDBOX_TCSETSF, CSANDBOX_TIOCGWINSZ,
               CSANDBOX_FIONBIO, CSANDBOX_FIONREAD, CSANDBOX_TUNGETFEATURES]),
        SyscallRule("openat", "snapshot, log, status and migration files; /proc for statistics"),
        SyscallRule("open", "as openat (older glibc paths)"),
        SyscallRule("newfstatat", "file checks before opening (snapshots, sockets)"),
        SyscallRule("statx", "file sizes (Foundation)"),
        SyscallRule("fstatfs", "a restore checks the filesystem its snapshot is mapped from"),
        SyscallRule("statfs", "a restore checks the filesystem its snapshot is mapped from"),
        SyscallRule("readlink", "resolving /proc/self paths"),
        SyscallRule("getdents64", "reading /proc/self/task and directories"),
        SyscallRule("rename", "snapshot, status and log files are written beside and renamed; log rotation"),
        SyscallRule("renameat", "as rename, relative to a directory"),
        SyscallRule("unlink", "the control socket's old file; temporary files"),
        SyscallRule("unlinkat", "as unlink, relative to a directory"),
        SyscallRule("mkdir", "the kernel payload cache's directory"),
        SyscallRule("fchmod", "files written with their mode"),
        SyscallRule("utimensat", "the kernel payload cache marks an entry used (its eviction is oldest-first)"),
        SyscallRule("fcntl", "fd flags (non-blocking, close-on-exec) and the disk images' OFD locks"),
        SyscallRule("dup", "Foundation file handles"),
        SyscallRule("dup3", "Foundation file handles"),
        SyscallRule("pipe2", "wake-up pipes of the event loops"),
        SyscallRule("eventfd2", "the control API's event loop; device wake-ups made at reboot"),
        SyscallRule("epoll_create1", "the control API's event loop (SwiftNIO)"),
        SyscallRule("epoll_ctl", "the control API's event loop"),
        SyscallRule("epoll_wait", "the control API's event loop"),
        SyscallRule("epoll_pwait", "the control API's event loop"),
        SyscallRule("timerfd_create", "the control API's event loop timers"),
        SyscallRule("timerfd_settime", "the control API's event loop timers"),
        SyscallRule("socket", "the control socket, migration connections (Unix, IPv4, IPv6)",
                    when: [.equals(0, UInt32(AF_UNIX)), .equals(0, UInt32(AF_INET)), .equals(0, UInt32(AF_INET6))]),
        SyscallRule("socketpair", "SwiftNIO's and Foundation's internal wake-ups"),
        SyscallRule("bind", "the control socket; a migration's listening address"),
        SyscallRule("listen", "the control socket; a migration's listening address"),
        SyscallRule("accept4", "control API clients; an arriving migration"),
        SyscallRule("accept", "an arriving migration"),
        SyscallRule("connect", "a migration's destination"),
        SyscallRule("getsockname", "the port a tcp::0 migration listener got"),
        SyscallRule("getpeername", "the control API's peer"),
        SyscallRule("setsockopt", "socket options (TCP_NODELAY, SO_REUSEADDR, buffer sizes)"),
        SyscallRule("getsockopt", "socket errors after connect"),
        SyscallRule("shutdown", "ending a migration stream or API connection"),
        SyscallRule("sendfile", "a snapshot's RAM written from the guest mapping"),
        SyscallRule("fsync", "snapshot and status files are made durable before rename"),
        SyscallRule("pread64", "a snapshot's header and state"),
        SyscallRule("lseek", "reading files"),
        SyscallRule("fstat", "file sizes and types of open files"),
        SyscallRule("poll", "waits with timeouts (migration, console input)"),
        SyscallRule("ppoll", "waits with timeouts"),
        SyscallRule("clone", "new threads only (vCPUs at a reboot, I/O threads, migration)",
                    when: [.masked(0, mask: CSANDBOX_CLONE_THREAD, equals: CSANDBOX_CLONE_THREAD)]),
        SyscallRule("clone3", "glibc tries clone3 first; its flags are out of a filter's reach, so ENOSYS sends it to clone",
                    action: .fail(errno: ENOSYS)),
        SyscallRule("set_robust_list", "a new thread registers its robust futex list"),
        SyscallRule("rseq", "a new thread registers restartable sequences"),
        SyscallRule("sigaltstack", "the Swift runtime's alternate signal stack per thread"),
        SyscallRule("prctl", "naming threads (PR_SET_NAME, read back in the violation report)"),
        SyscallRule("seccomp", "vCPU and I/O threads narrow themselves to their own filter when they start"),
        SyscallRule("sched_getaffinity", "the number of CPUs (SwiftNIO's thread count, Foundation)"),
        SyscallRule("rt_sigaction", "the kick signal's handler on a rebuilt machine"),
        SyscallRule("rt_sigtimedwait", "the signal-watcher thread's sigwait for SIGTERM/SIGINT/SIGHUP"),
        SyscallRule("kill", "stopping the passt process when the VM ends"),
        SyscallRule("wait4", "reaping the passt process"),
        SyscallRule("userfaultfd", "post-copy migration's page-fault channel"),
        SyscallRule("mremap", "the allocator growing a large block in place"),
        SyscallRule("uname", "Foundation's host information"),
        SyscallRule("access", "Foundation's file existence checks"),
        SyscallRule("setpriority", "libdispatch's worker threads set their own priority (PRIO_PROCESS)",
                    when: [.equals(0, 0)]),
        SyscallRule("getuid", "Foundation's home directory lookup"),
        SyscallRule("geteuid", "Foundation's home directory lookup"),
        SyscallRule("getcwd", "resolving relative paths"),
        SyscallRule("sysinfo", "Foundation's physical memory figure"),
        SyscallRule("getrusage", "CPU time in the VM's statistics"),
        SyscallRule("times", "CPU time in the VM's statistics"),
    ]
}
