import ArgumentParser
import Sandbox

extension ThreadKind: ExpressibleByArgument {}

/// Prints the system calls each kind of VMM thread may make and why (Firecracker publishes its
/// filters the same way): what an operator audits, and what `--seccomp enforce` installs.
struct SeccompPolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seccomp-policy",
        abstract: "List the system calls each kind of VMM thread may make (vcpu, io, control), with the reason for each.",
        discussion: "vireo run confines itself with these filters (--seccomp); a call outside its thread's list stops the VM with a report naming it. The control list is the process-wide filter every thread starts from; vcpu and io threads add theirs on top."
    )

    @Argument(help: "Only this kind: vcpu, io or control.")
    var kind: ThreadKind?

    func run() throws {
        for kind in kind.map({ [$0] }) ?? ThreadKind.allCases {
            let rules = SyscallPolicy.rules(for: kind)
            let allowed = SyscallPolicy.allowedNames(for: kind)
            print("\(kind.rawValue): \(allowed.count) system calls")
            for rule in rules {
                var name = rule.name
                if !rule.conditions.isEmpty { name += " (" + rule.conditions.map(Self.describe).joined(separator: " or ") + ")" }
                if case .fail(let errno) = rule.action { name += " -> errno \(errno)" }
                print("  " + name.padding(to: 44) + " " + rule.reason)
            }
        }
    }

    static func describe(_ condition: ArgumentCondition) -> String {
        let value = "0x" + String(condition.value, radix: 16)
        if condition.mask == 0xFFFF_FFFF { return "arg\(condition.index) == \(value)" }
        return "arg\(condition.index) & 0x\(String(condition.mask, radix: 16)) == \(value)"
    }
}
