import CSandbox
#if canImport(Glibc)
import Glibc
#endif

/// What a filter does with a system call it matches.
public enum SeccompAction: Equatable, Sendable {
    case allow
    /// Fail the call with this errno instead of running it (clone3 gets ENOSYS so glibc falls back
    /// to clone, whose flags a filter can see).
    case fail(errno: Int32)
    /// Stop the process through the SIGSYS violation report (the default for anything unlisted).
    case trap
    /// Make the call and have the kernel log it with the thread's name (deriving a policy).
    case log

    var returnValue: UInt32 {
        switch self {
        case .allow: SECCOMP_RET_ALLOW
        case .fail(let errno): SECCOMP_RET_ERRNO | (UInt32(errno) & SECCOMP_RET_DATA)
        case .trap: SECCOMP_RET_TRAP
        case .log: SECCOMP_RET_LOG
        }
    }
}

/// A condition on one argument: `(argument & mask) == value`, on its low 32 bits — the width of
/// every argument filtered here (ioctl requests, clone flags, socket families, fcntl commands), so
/// the high half cannot smuggle a different meaning past it.
public struct ArgumentCondition: Equatable, Sendable {
    public let index: Int
    public let mask: UInt32
    public let value: UInt32

    public static func equals(_ index: Int, _ value: UInt32) -> ArgumentCondition {
        ArgumentCondition(index: index, mask: 0xFFFF_FFFF, value: value)
    }

    public static func masked(_ index: Int, mask: UInt32, equals value: UInt32) -> ArgumentCondition {
        ArgumentCondition(index: index, mask: mask, value: value & mask)
    }
}

/// One line of a thread kind's policy: a system call (by its x86-64 name), why the thread needs
/// it, and optionally the argument values it may use (any one of them).
public struct SyscallRule: Equatable, Sendable {
    public let name: String
    public let reason: String
    /// Empty: any arguments. Otherwise the call is allowed when one condition holds.
    public let conditions: [ArgumentCondition]
    public let action: SeccompAction

    public init(_ name: String, _ reason: String, when conditions: [ArgumentCondition] = [], action: SeccompAction = .allow) {
        self.name = name
        self.reason = reason
        self.conditions = conditions
        self.action = action
    }

    /// The number of `name` on x86-64, nil for a name the kernel headers do not define.
    public var number: Int32? {
        let number = csandbox_syscall_number(name)
        return number < 0 ? nil : number
    }
}

public enum SeccompError: Error, CustomStringConvertible, Equatable {
    case unknownSyscall(String)
    case tooLong(instructions: Int)
    case install(kind: String, errno: Int32)
    case threadsNotSynchronized(kind: String, thread: Int)
    case privileges(String, errno: Int32)

    public var description: String {
        switch self {
        case .unknownSyscall(let name): "seccomp policy names an unknown system call '\(name)'"
        case .tooLong(let count): "seccomp filter has \(count) instructions, over the kernel's 4096"
        case .install(let kind, let errno): "cannot install the \(kind) seccomp filter: \(String(cString: strerror(errno)))"
        case .threadsNotSynchronized(let kind, let thread): "cannot apply the \(kind) seccomp filter to thread \(thread), which has a filter of its own"
        case .privileges(let what, let errno): "cannot \(what): \(String(cString: strerror(errno)))"
        }
    }
}

/// A classic-BPF seccomp program compiled from rules: the architecture checked first (a 32-bit or
/// x32 call would reach other system calls under the same numbers), then each rule in order,
/// then the default action. Rules are a linear chain — a few hundred instructions at most — so
/// the most frequent calls go first.
public struct SeccompProgram: Sendable {
    public let instructions: [sock_filter]

    // Offsets into struct seccomp_data.
    static let numberOffset: UInt32 = 0
    static let archOffset: UInt32 = 4
    static func argumentOffset(_ index: Int) -> UInt32 { 16 + 8 * UInt32(index) }

    public init(rules: [SyscallRule], defaultAction: SeccompAction = .trap) throws {
        var code: [sock_filter] = []
        func statement(_ op: Int32, _ k: UInt32) -> sock_filter {
            sock_filter(code: UInt16(op), jt: 0, jf: 0, k: k)
        }
        func jump(_ op: Int32, _ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> sock_filter {
            sock_filter(code: UInt16(op), jt: jt, jf: jf, k: k)
        }
        let loadWord = BPF_LD | BPF_W | BPF_ABS
        let jumpIfEqual = BPF_JMP | BPF_JEQ | BPF_K
        let returnConstant = BPF_RET | BPF_K
        // Another architecture's calls: kill outright (no handler can name them correctly).
        code.append(statement(loadWord, Self.archOffset))
        code.append(jump(jumpIfEqual, CSANDBOX_AUDIT_ARCH_X86_64, 1, 0))
        code.append(statement(returnConstant, SECCOMP_RET_KILL_PROCESS))
        // x32 calls set bit 30 of the number.
        code.append(statement(loadWord, Self.numberOffset))
        code.append(jump(BPF_JMP | BPF_JGE | BPF_K, 0x4000_0000, 0, 1))
        code.append(statement(returnConstant, SECCOMP_RET_KILL_PROCESS))
        for rule in rules {
            guard let number = rule.number else { throw SeccompError.unknownSyscall(rule.name) }
            let action = statement(returnConstant, rule.action.returnValue)
            if rule.conditions.isEmpty {
                code.append(statement(loadWord, Self.numberOffset))
                code.append(jump(jumpIfEqual, UInt32(number), 0, 1))
                code.append(action)
                continue
            }
            // One block per allowed value: load the number, skip the block unless it matches,
            // load the argument, mask, compare, return the action; a mismatch falls through to the
            // next block or rule.
            for condition in rule.conditions {
                var block: [sock_filter] = [statement(loadWord, Self.argumentOffset(condition.index))]
                if condition.mask != 0xFFFF_FFFF { block.append(statement(BPF_ALU | BPF_AND | BPF_K, condition.mask)) }
                block.append(jump(jumpIfEqual, condition.value, 0, 1))
                block.append(action)
                code.append(statement(loadWord, Self.numberOffset))
                code.append(jump(jumpIfEqual, UInt32(number), 0, UInt8(block.count)))
                code += block
            }
        }
        code.append(statement(returnConstant, defaultAction.returnValue))
        guard code.count <= 4096 else { throw SeccompError.tooLong(instructions: code.count) }
        instructions = code
    }
}
