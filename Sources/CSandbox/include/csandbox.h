// C shim for the Sandbox module: seccomp(2), capabilities and the SIGSYS report, which need
// kernel structs and an async-signal-safe handler that Swift cannot provide.
#ifndef CSANDBOX_H
#define CSANDBOX_H

#include <stdint.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

// The audit architecture word a filter compares seccomp_data.arch against (an expression macro).
extern const uint32_t CSANDBOX_AUDIT_ARCH_X86_64;

// Installs `program` as a seccomp filter on the calling thread, or on every thread of the process
// with `all_threads` (SECCOMP_FILTER_FLAG_TSYNC). `kind` names the filter in a violation report
// (kept per thread, at most 15 bytes). Returns 0, -errno, or with TSYNC the id (> 0) of a thread
// that could not be synchronized.
long csandbox_install_filter(const struct sock_filter *program, unsigned short length, int all_threads,
                             const char *kind);

// PR_SET_NO_NEW_PRIVS: required for seccomp without CAP_SYS_ADMIN, and no exec may gain privileges.
int csandbox_set_no_new_privs(void);
// Unblocks the signal csandbox_drop_capabilities sends, in the calling thread and so in every
// thread it starts later (a process may be started with signals blocked). Call before any thread.
int csandbox_prepare(void);
// Empties the bounding and ambient sets and the effective, permitted and inheritable sets of
// every thread of the process (each thread drops its own from a handler of SIGRTMIN+3, which
// nothing else uses), the caller's last. Returns 0 or -errno.
int csandbox_drop_capabilities(void);
// The calling thread's effective capability set (the two 32-bit words as one value).
uint64_t csandbox_effective_capabilities(void);

// A SIGSYS handler for filters whose default action is SECCOMP_RET_TRAP: it writes one line to
// stderr naming the thread, its filter and the system call, restores the terminal when one was
// registered, and ends the process with `exit_status`.
int csandbox_install_violation_handler(int exit_status);
// Registers the terminal settings the violation handler puts back (a raw-mode console).
void csandbox_set_terminal_restore(int fd, const void *termios_bytes, unsigned long length);

// x86-64 system call names (from <asm/unistd_64.h>): number for a name (-1 when unknown), name
// for a number (NULL when unknown).
int csandbox_syscall_number(const char *name);
const char *csandbox_syscall_name(int number);

// PR_SET_NAME for the calling thread (what the violation report calls it).
int csandbox_set_thread_name(const char *name);

// ioctl requests the policies name (macros Swift cannot import).
extern const uint32_t CSANDBOX_TUNSETOFFLOAD, CSANDBOX_TUNSETVNETHDRSZ, CSANDBOX_TUNGETFEATURES;
extern const uint32_t CSANDBOX_TCGETS, CSANDBOX_TCSETS, CSANDBOX_TCSETSW, CSANDBOX_TCSETSF, CSANDBOX_TIOCGWINSZ;
extern const uint32_t CSANDBOX_FIONBIO, CSANDBOX_FIONREAD;
extern const uint32_t CSANDBOX_KVM_IRQ_LINE;
// Flags the policies test.
extern const uint32_t CSANDBOX_CLONE_THREAD;
#endif
