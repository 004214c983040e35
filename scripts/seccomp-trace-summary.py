#!/usr/bin/env python3
"""Reads `strace -f -qq -o FILE` output of a command that ran `vireo run`s with their filters in
log mode, and lists, per thread kind, each system call a confined thread made (after its filter
went on) that the policy (`vireo seccomp-policy`) does not list, with the arguments that matter
(ioctl requests, PROT_EXEC, clone flags, socket families). Used by scripts/seccomp-derive.sh."""
import re
import subprocess
import sys
from collections import defaultdict

trace_file, vireo = sys.argv[1], sys.argv[2]

# The policy: kind -> {name: [condition text, ...] or None (any arguments)}.
policy = {}
kind = None
for line in subprocess.run([vireo, "seccomp-policy"], capture_output=True, text=True, check=True).stdout.splitlines():
    header = re.match(r"^(\w+): \d+ system calls", line)
    if header:
        kind = header.group(1)
        policy[kind] = {}
        continue
    rule = re.match(r"^  (\w+)( \(([^)]*)\))?", line)
    if rule and kind:
        name, conditions = rule.group(1), rule.group(3)
        if " -> errno" in line:
            continue
        if conditions is None:
            policy[kind][name] = None
        elif policy[kind].get(name, []) is not None:
            policy[kind].setdefault(name, []).append(conditions)

line_re = re.compile(r"^(\d+) +(\w+)\((.*)")
members = set()        # tids of vireo run processes
process_of = {}        # tid -> pid (thread group leader)
confined = set()       # pids whose process-wide filter is on
own_filter = set()     # tids with a filter of their own
names = {}
findings = defaultdict(lambda: defaultdict(set))
used = defaultdict(set)    # kind -> calls made after the filters went on
unfinished = {}


def kind_of(name):
    if re.match(r"^vcpu\d+$", name):
        return "vcpu"
    if re.match(r"^(vblk\d+|vnet\d+|vcon|vrng)$", name):
        return "io"
    return "control"


def detail(call, args):
    if call == "ioctl":
        parts = args.split(", ")
        return parts[1] if len(parts) > 1 else args
    if call in ("mmap", "mprotect") and "PROT_EXEC" in args:
        return "PROT_EXEC"
    if call == "clone":
        return "thread" if "CLONE_THREAD" in args else "process"
    if call == "socket":
        return args.split(",")[0]
    return ""


def allowed(kind, call, args):
    rules = policy.get(kind, {})
    if call not in rules:
        return False
    if rules[call] is None:
        return True
    if call in ("mmap", "mprotect"):
        return "PROT_EXEC" not in args
    if call == "clone":
        return "CLONE_THREAD" in args
    if call == "socket":
        return any(family in args.split(",")[0] for family in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_LOCAL"))
    if call == "setpriority":
        return args.startswith("PRIO_PROCESS")
    if call == "ioctl":
        request = detail(call, args)
        # The policy's request lists by strace's names (KVM_*: the type-byte rule of vcpu and control).
        known = {
            "vcpu": ("TUNSETOFFLOAD", "TUNSETVNETHDRSZ", "TCSETS"),
            "io": ("TUNSETOFFLOAD", "KVM_IRQ_LINE"),
            "control": ("TCGETS", "TCSETS", "TCSETSW", "TCSETSF", "TIOCGWINSZ", "FIONBIO", "FIONREAD", "TUNGETFEATURES",
                        "TUNSETOFFLOAD", "TUNSETVNETHDRSZ"),
        }
        if request.startswith("KVM_") and kind in ("vcpu", "control"):
            return True
        if request.startswith("UFFDIO_") and kind == "control":
            return True
        if request in known.get(kind, ()):
            return True
        return None  # an ioctl the table does not know: listed for a person to check
    return None


with open(trace_file, errors="replace") as trace:
    for raw in trace:
        raw = raw.rstrip("\n")
        match = re.match(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)", raw)
        if match:
            tid = match.group(1)
            if tid in unfinished:
                call, head = unfinished.pop(tid)
                raw = f"{tid} {call}({head}{match.group(3)}"
            else:
                continue
        elif raw.endswith("<unfinished ...>"):
            found = line_re.match(raw)
            if found:
                unfinished[found.group(1)] = (found.group(2), found.group(3).replace("<unfinished ...>", ""))
            continue
        found = line_re.match(raw)
        if not found:
            continue
        tid, call, args = found.groups()
        if call == "execve":
            if re.search(r'\["[^"]*vireo", "run"', args) and not re.search(r"= -1", args):
                members.add(tid)
                process_of[tid] = tid
                names[tid] = "vireo"
            else:
                members.discard(tid)
            continue
        result = re.search(r"\) += (\d+)", args)
        if call in ("clone", "clone3") and tid in members and result and "CLONE_THREAD" in args:
            child = result.group(1)
            members.add(child)
            process_of[child] = process_of[tid]
            names[child] = names.get(tid, "vireo")
        if tid not in members:
            continue
        if call == "prctl" and "PR_SET_NAME" in args:
            name = re.search(r'PR_SET_NAME, "([^"]*)"', args)
            if name:
                names[tid] = name.group(1)
        if call == "clone3":
            continue  # answered ENOSYS by every filter, by design (glibc then uses clone)
        if call == "seccomp" and "SECCOMP_SET_MODE_FILTER" in args:
            if "TSYNC" in args:
                confined.add(process_of[tid])
            else:
                own_filter.add(tid)
            continue
        if process_of.get(tid) not in confined:
            continue
        kind = kind_of(names.get(tid, "vireo"))
        if kind != "control" and tid not in own_filter:
            kind = "control"   # not narrowed yet
        used[kind].add(call)
        verdict = allowed(kind, call, args)
        if verdict is False or (verdict is None and call == "ioctl"):
            findings[(kind, call, detail(call, args), verdict is None)][names.get(tid, "?")].add(tid)

print("== calls made by confined threads, per kind (of those the policy allows) ==")
for kind in ("vcpu", "io", "control"):
    calls = sorted(used[kind])
    print(f"{kind} ({len(calls)} of {len([n for n in policy.get(kind, {})])}): {' '.join(calls)}")
print("== outside the policy (kind, call, detail: threads) ==")
for (kind, call, extra, check), threads in sorted(findings.items()):
    if check:
        continue
    print(f"{kind} {call} {extra}: {' '.join(sorted(threads))}")
print("== ioctl requests made, to check against the policy's request lists (kind, request: threads) ==")
for (kind, call, extra, check), threads in sorted(findings.items()):
    if check:
        print(f"{kind} {extra}: {' '.join(sorted(threads))}")
