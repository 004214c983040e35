#define _GNU_SOURCE
#include "csandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

const uint32_t CSANDBOX_AUDIT_ARCH_X86_64 = AUDIT_ARCH_X86_64;
const uint32_t CSANDBOX_TUNSETOFFLOAD = TUNSETOFFLOAD, CSANDBOX_TUNSETVNETHDRSZ = TUNSETVNETHDRSZ,
    CSANDBOX_TUNGETFEATURES = TUNGETFEATURES;
const uint32_t CSANDBOX_TCGETS = TCGETS, CSANDBOX_TCSETS = TCSETS, CSANDBOX_TCSETSW = TCSETSW, CSANDBOX_TCSETSF = TCSETSF,
    CSANDBOX_TIOCGWINSZ = TIOCGWINSZ;
const uint32_t CSANDBOX_FIONBIO = FIONBIO, CSANDBOX_FIONREAD = FIONREAD;
const uint32_t CSANDBOX_KVM_IRQ_LINE = KVM_IRQ_LINE;
const uint32_t CSANDBOX_CLONE_THREAD = CLONE_THREAD;

// --- system call names ---------------------------------------------------------------------

struct syscall_entry { const char *name; int number; };

static const struct syscall_entry syscall_table[] = {
#define SYSCALL(name) { #name, __NR_##name },
#include "syscall_table.h"
#undef SYSCALL
};

static const int syscall_table_count = (int)(sizeof(syscall_table) / sizeof(syscall_table[0]));

int csandbox_syscall_number(const char *name) {
    for (int index = 0; index < syscall_table_count; index++) {
        if (strcmp(syscall_table[index].name, name) == 0) return syscall_table[index].number;
    }
    return -1;
}

const char *csandbox_syscall_name(int number) {
    for (int index = 0; index < syscall_table_count; index++) {
        if (syscall_table[index].number == number) return syscall_table[index].name;
    }
    return NULL;
}

// --- filters -------------------------------------------------------------------------------

// What the violation handler reports about the thread: its filter and its name, both captured
// when the filter is installed (the handler may not be allowed prctl by then).
static __thread char thread_filter_kind[16];
static __thread char thread_name[16];

static void copy_label(char destination[16], const char *source) {
    size_t length = source ? strlen(source) : 0;
    if (length > 15) length = 15;
    if (length) memcpy(destination, source, length);
    destination[length] = 0;
}

long csandbox_install_filter(const struct sock_filter *program, unsigned short length, int all_threads,
                             const char *kind) {
    struct sock_fprog fprog = { .len = length, .filter = (struct sock_filter *)program };
    char name[16] = { 0 };
    prctl(PR_GET_NAME, name, 0, 0, 0);
    long result = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, all_threads ? SECCOMP_FILTER_FLAG_TSYNC : 0, &fprog);
    if (result < 0) return -errno;
    if (result > 0) return result;
    copy_label(thread_filter_kind, kind);
    copy_label(thread_name, name);
    return 0;
}

int csandbox_set_no_new_privs(void) {
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

// Capabilities belong to each thread, not to the process: this empties the calling thread's.
// Only async-signal-safe calls: the other threads run it from a signal handler.
static int drop_own_capabilities(void) {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the last step removes.
    for (int capability = 0; capability <= 63; capability++) {
        if (prctl(PR_CAPBSET_READ, capability, 0, 0, 0) < 0) break;  // past the kernel's last
        if (prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) < 0 && errno != EPERM) return -errno;
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) return -errno;
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    return syscall(SYS_capset, &header, data) == 0 ? 0 : -errno;
}

static _Atomic int drop_acknowledged;
static _Atomic int drop_failure;

static void on_drop_request(int signal) {
    (void)signal;
    int saved = errno;
    int result = drop_own_capabilities();
    if (result != 0) atomic_store(&drop_failure, result);
    atomic_fetch_add(&drop_acknowledged, 1);
    errno = saved;
}

// The ids of this process's threads other than the caller (at most `capacity`); -1 on error.
static int other_threads(pid_t *tids, int capacity) {
    int directory = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) return -1;
    pid_t self = (pid_t)syscall(SYS_gettid);
    int count = 0;
    char buffer[4096];
    long length;
    while ((length = syscall(SYS_getdents64, directory, buffer, sizeof(buffer))) > 0) {
        for (long offset = 0; offset < length;) {
            struct linux_dirent64 { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; };
            struct linux_dirent64 *entry = (struct linux_dirent64 *)(buffer + offset);
            offset += entry->reclen;
            pid_t tid = 0;
            for (const char *digit = entry->name; *digit >= '0' && *digit <= '9'; digit++) tid = tid * 10 + (*digit - '0');
            if (tid > 0 && tid != self && count < capacity) tids[count++] = tid;
        }
    }
    close(directory);
    return count;
}

int csandbox_prepare(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 3);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL) == 0 ? 0 : -errno;
}

int csandbox_drop_capabilities(void) {
    int signal = SIGRTMIN + 3;
    // Every other thread drops its own from a handler of SIGRTMIN+3 (used for nothing else) (libpsx's approach: there is no
    // process-wide capset), and the caller waits for each; then the caller drops its own, last, so
    // no thread it might start meanwhile inherits any. Threads that end before the signal lands
    // need nothing.
    struct sigaction action, previous;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_drop_request;
    action.sa_flags = SA_RESTART;
    sigfillset(&action.sa_mask);
    if (sigaction(signal, &action, &previous) != 0) return -errno;
    atomic_store(&drop_failure, 0);
    pid_t done[256];
    int doneCount = 0;
    int result = 0;
    for (int round = 0; round < 8 && result == 0; round++) {
        pid_t tids[256];
        int count = other_threads(tids, 256);
        if (count < 0) { result = -errno; break; }
        int sent = 0;
        atomic_store(&drop_acknowledged, 0);
        for (int index = 0; index < count; index++) {
            int seen = 0;
            for (int d = 0; d < doneCount; d++) if (done[d] == tids[index]) seen = 1;
            if (seen || doneCount >= 256) continue;
            if (syscall(SYS_tgkill, getpid(), tids[index], signal) == 0) sent++;
            done[doneCount++] = tids[index];
        }
        if (sent == 0) break;
        // Up to 2 s for the threads to run their handler (a thread in KVM_RUN leaves it for a signal).
        for (int wait = 0; wait < 2000 && atomic_load(&drop_acknowledged) < sent; wait++) {
            struct timespec millisecond = { 0, 1000000 };
            nanosleep(&millisecond, NULL);
        }
        if (atomic_load(&drop_acknowledged) < sent) result = -ETIMEDOUT;
    }
    sigaction(signal, &previous, NULL);
    if (result == 0) result = atomic_load(&drop_failure);
    if (result == 0) result = drop_own_capabilities();
    return result;
}

uint64_t csandbox_effective_capabilities(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &header, data) != 0) return UINT64_MAX;
    return ((uint64_t)data[1].effective << 32) | data[0].effective;
}

// --- the violation report ------------------------------------------------------------------

static int violation_exit_status = 159;
static int terminal_fd = -1;
static struct termios terminal_settings;

void csandbox_set_terminal_restore(int fd, const void *termios_bytes, unsigned long length) {
    if (length != sizeof(terminal_settings)) return;
    memcpy(&terminal_settings, termios_bytes, sizeof(terminal_settings));
    terminal_fd = fd;
}

// Only async-signal-safe work from here on: no stdio, no allocation.
static size_t append(char *buffer, size_t used, size_t capacity, const char *text) {
    while (*text && used + 1 < capacity) buffer[used++] = *text++;
    return used;
}

static size_t append_number(char *buffer, size_t used, size_t capacity, long value) {
    char digits[24];
    int count = 0;
    unsigned long magnitude = value < 0 ? (unsigned long)(-value) : (unsigned long)value;
    do { digits[count++] = (char)('0' + magnitude % 10); magnitude /= 10; } while (magnitude && count < 23);
    if (value < 0 && used + 1 < capacity) buffer[used++] = '-';
    while (count > 0 && used + 1 < capacity) buffer[used++] = digits[--count];
    return used;
}

static void on_violation(int signal, siginfo_t *info, void *context) {
    (void)signal; (void)context;
    char line[256];
    size_t used = 0;
    const char *name = csandbox_syscall_name(info->si_syscall);
    // Threads that only inherited the process-wide filter (started after it, or synchronized to
    // it) never installed one themselves: the control filter is theirs, and lets prctl through.
    if (!thread_name[0]) prctl(PR_GET_NAME, thread_name, 0, 0, 0);
    used = append(line, used, sizeof(line), "vireo: error: seccomp: thread '");
    used = append(line, used, sizeof(line), thread_name[0] ? thread_name : "?");
    used = append(line, used, sizeof(line), "' (");
    used = append(line, used, sizeof(line), thread_filter_kind[0] ? thread_filter_kind : "control");
    used = append(line, used, sizeof(line), " filter) made system call ");
    used = append(line, used, sizeof(line), name ? name : "unknown");
    used = append(line, used, sizeof(line), " (");
    used = append_number(line, used, sizeof(line), info->si_syscall);
    used = append(line, used, sizeof(line), "), which its filter does not allow: the VM is stopped\n");
    if (terminal_fd >= 0) tcsetattr(terminal_fd, TCSANOW, &terminal_settings);
    ssize_t ignored = write(2, line, used);
    (void)ignored;
    syscall(SYS_exit_group, violation_exit_status);
}

int csandbox_install_violation_handler(int exit_status) {
    violation_exit_status = exit_status;
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = on_violation;
    action.sa_flags = SA_SIGINFO;
    sigfillset(&action.sa_mask);
    return sigaction(SIGSYS, &action, NULL) == 0 ? 0 : -errno;
}

int csandbox_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0) == 0 ? 0 : -errno;
}
