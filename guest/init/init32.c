/*
 * /init of Vireo's Linux test guest.
 *
 * A 32-bit, freestanding, static program that makes every system call with `int $0x80`
 * (the i386 ABI, served by a 64-bit kernel through IA32_EMULATION). On hosts whose KVM runs
 * guest kernel mode in an instruction emulator, the 64-bit `syscall` instruction from guest
 * user mode does not reach the kernel, so a normal (64-bit, libc) init dies at its first
 * system call; this program is how the end-to-end test finds out whether `int $0x80` does.
 *
 * It prints, on the console:
 *   VIREO-INIT: started
 *   VIREO-INIT: nproc=<CPUs in its affinity mask>
 *   VIREO-INIT: date=<YYYY-MM-DD HH:MM:SS> UTC
 * then, if the kernel command line holds `vireo.shell`, mounts devtmpfs/proc/sysfs and execs
 * /bin/sh (busybox, 64-bit: only useful where `syscall` works); otherwise it prints
 * "VIREO-INIT: powering off" and powers off, or "VIREO-INIT: rebooting" and restarts when the
 * command line holds `vireo.reboot` (a VMM without ACPI cannot be powered off: Linux then
 * halts forever, so such a VMM ends the guest through the i8042 reset a reboot performs).
 *
 * With the undotted word `vireokernelonly` on the command line it makes no system call at all
 * and spins in user mode (see init_main).
 *
 * Dotted parameters such as `vireo.shell` are never handed to init as argv/envp (the kernel
 * treats them as module parameters), so the command line is read from /proc/cmdline.
 *
 * Build: cc -m32 -static -nostdlib -ffreestanding -fno-pic -no-pie -O2 ... -lgcc
 * (libgcc for the 64-bit divisions of the date arithmetic). Never run it on a host: as pid 1
 * it powers the machine off, so it refuses to do anything unless it is pid 1.
 */

#include "init32.h"

/* The i386 ABI: number in eax, arguments in ebx, ecx, edx, esi, edi; -errno back in eax. */
s32 syscall5(s32 nr, u32 a, u32 b, u32 c, u32 d, u32 e)
{
    s32 ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "0"(nr), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                     : "memory", "cc");
    return ret;
}

s32 syscall3(s32 nr, u32 a, u32 b, u32 c)
{
    return syscall5(nr, a, b, c, 0, 0);
}

/* GCC may emit calls to these even in freestanding code (struct copies, zeroing). */
void *memset(void *dst, int value, u32 len)
{
    unsigned char *p = dst;
    while (len--)
        *p++ = (unsigned char)value;
    return dst;
}

void *memcpy(void *dst, const void *src, u32 len)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (len--)
        *d++ = *s++;
    return dst;
}

u32 str_len(const char *s)
{
    u32 n = 0;
    while (s[n])
        n++;
    return n;
}

static s32 console_fd = 1;

static void write_all(const char *buf, u32 len)
{
    while (len > 0) {
        s32 n = syscall3(NR_write, (u32)console_fd, (u32)buf, len);
        if (n <= 0)
            return; /* nowhere else to report it */
        buf += n;
        len -= (u32)n;
    }
}


void put_str(struct line *l, const char *s)
{
    while (*s && l->len < sizeof(l->buf) - 1)
        l->buf[l->len++] = *s++;
}

void put_uint(struct line *l, u64 value, u32 min_digits)
{
    char digits[24];
    u32 n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0 && n < sizeof(digits));
    while (n < min_digits && n < sizeof(digits))
        digits[n++] = '0';
    while (n > 0 && l->len < sizeof(l->buf) - 1)
        l->buf[l->len++] = digits[--n];
}

static void put_int(struct line *l, s64 value)
{
    if (value < 0) {
        put_str(l, "-");
        put_uint(l, (u64)(-(value + 1)) + 1, 1);
    } else {
        put_uint(l, (u64)value, 1);
    }
}

void emit(struct line *l)
{
    l->buf[l->len++] = '\n';
    write_all(l->buf, l->len);
    l->len = 0;
}

void say(const char *text)
{
    struct line l = { .len = 0 };
    put_str(&l, "VIREO-INIT: ");
    put_str(&l, text);
    emit(&l);
}

void say_errno(const char *what, s32 err)
{
    struct line l = { .len = 0 };
    put_str(&l, "VIREO-INIT: error: ");
    put_str(&l, what);
    put_str(&l, " failed, errno ");
    put_int(&l, -(s64)err);
    emit(&l);
}

static void report_nproc(void)
{
    /* The compat call wants a multiple of 4 bytes covering nr_cpu_ids bits: 1024 CPUs here. */
    u32 mask[32];
    s32 got = syscall3(NR_sched_getaffinity, 0, sizeof(mask), (u32)mask);
    if (got < 0) {
        say_errno("sched_getaffinity", got);
        return;
    }
    u32 count = 0;
    for (u32 i = 0; i < (u32)got / 4 && i < 32; i++)
        for (u32 bits = mask[i]; bits != 0; bits &= bits - 1)
            count++;
    struct line l = { .len = 0 };
    put_str(&l, "VIREO-INIT: nproc=");
    put_uint(&l, count, 1);
    emit(&l);
}

/* Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days). */
static void civil_from_days(s64 days, s64 *year, u32 *month, u32 *day)
{
    days += 719468;
    s64 era = (days >= 0 ? days : days - 146096) / 146097;
    u32 doe = (u32)(days - era * 146097);
    u32 yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    u32 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    u32 mp = (5 * doy + 2) / 153;
    *day = doy - (153 * mp + 2) / 5 + 1;
    *month = mp < 10 ? mp + 3 : mp - 9;
    *year = (s64)yoe + era * 400 + (*month <= 2);
}

static void report_date(void)
{
    struct { s64 sec; s64 nsec; } ts = { 0, 0 };
    s64 now;
    s32 rc = syscall3(NR_clock_gettime64, CLOCK_REALTIME, (u32)&ts, 0);
    if (rc == 0) {
        now = ts.sec;
    } else {
        /* Kernels before 5.1 lack clock_gettime64; time() needs COMPAT_32BIT_TIME. */
        s32 t = syscall3(NR_time, 0, 0, 0);
        if (t < 0 && t > -4096) {
            say_errno("clock_gettime64 and time", t);
            return;
        }
        now = (s64)(u32)t;
    }
    s64 days = now / 86400, rem = now % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    s64 year;
    u32 month, day;
    civil_from_days(days, &year, &month, &day);
    struct line l = { .len = 0 };
    put_str(&l, "VIREO-INIT: date=");
    put_int(&l, year);
    put_str(&l, "-");
    put_uint(&l, month, 2);
    put_str(&l, "-");
    put_uint(&l, day, 2);
    put_str(&l, " ");
    put_uint(&l, (u64)(rem / 3600), 2);
    put_str(&l, ":");
    put_uint(&l, (u64)(rem / 60 % 60), 2);
    put_str(&l, ":");
    put_uint(&l, (u64)(rem % 60), 2);
    put_str(&l, " UTC");
    emit(&l);
}

s32 mount_fs(const char *source, const char *target, const char *type)
{
    s32 rc = syscall5(NR_mount, (u32)source, (u32)target, (u32)type, 0, 0);
    if (rc < 0 && rc != -16 /* EBUSY: already mounted */) {
        struct line l = { .len = 0 };
        put_str(&l, "mount ");
        put_str(&l, target);
        l.buf[l.len] = 0;
        say_errno(l.buf, rc);
    }
    return rc;
}

/* Whether the whitespace-separated kernel command line holds `word` as a whole token. */
int cmdline_has(const char *cmdline, const char *word)
{
    u32 wlen = str_len(word);
    const char *p = cmdline;
    while (*p) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\n' && *p != '\t')
            p++;
        u32 len = (u32)(p - start);
        if (len == wlen) {
            u32 i = 0;
            while (i < len && start[i] == word[i])
                i++;
            if (i == len)
                return 1;
        }
    }
    return 0;
}

const char *cmdline_value(const char *cmdline, const char *key)
{
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ')
            continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k)
            return q;
    }
    return 0;
}

static void read_cmdline(char *buf, u32 size)
{
    buf[0] = 0;
    mount_fs("proc", "/proc", "proc"); /* on failure, /proc may still be mounted already */
    s32 fd = syscall3(NR_open, (u32)"/proc/cmdline", O_RDONLY, 0);
    if (fd < 0) {
        say_errno("open /proc/cmdline", fd);
        return;
    }
    u32 used = 0;
    while (used < size - 1) {
        s32 n = syscall3(NR_read, (u32)fd, (u32)(buf + used), size - 1 - used);
        if (n <= 0)
            break;
        used += (u32)n;
    }
    buf[used] = 0;
    syscall3(NR_close, (u32)fd, 0, 0);
}

static void run_shell(void)
{
    mount_fs("devtmpfs", "/dev", "devtmpfs");
    mount_fs("sysfs", "/sys", "sysfs");
    say("starting /bin/sh");
    /* A session of its own, then busybox's cttyhack opens the console's real tty (ttyS0, from
     * sysfs) as the shell's controlling terminal: job control, and Ctrl-C interrupts a command. */
    syscall3(NR_setsid, 0, 0, 0);
    static const char *const argv[] = { "cttyhack", "/bin/sh", 0 };
    static const char *const envp[] = { "HOME=/", "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
                                        "TERM=linux", 0 };
    s32 rc = syscall3(NR_execve, (u32)"/bin/busybox", (u32)argv, (u32)envp);
    say_errno("execve /bin/busybox cttyhack /bin/sh", rc);
}

/* True when the kernel handed init the word `word` as an argument (undotted command-line words
 * without '=' become init's argv; reading them needs no system call). */
static int argv_has(const u32 *initial_stack, const char *word)
{
    u32 argc = initial_stack[0];
    for (u32 i = 1; i <= argc && i < 64; i++) {
        const char *arg = (const char *)initial_stack[i];
        const char *w = word;
        while (*arg && *arg == *w) { arg++; w++; }
        if (*arg == 0 && *w == 0)
            return 1;
    }
    return 0;
}

__attribute__((noreturn, used)) void init_main(u32 *initial_stack)
{
    /* `vireokernelonly`: the host cannot take system calls from guest user space, so the first
     * one would kill pid 1 and panic the kernel. Stay alive without any (user-mode spin, native
     * speed) so the VMM can drive the kernel-only checks and power off through ACPI (sysrq o). */
    if (argv_has(initial_stack, "vireokernelonly"))
        for (;;)
            __asm__ volatile("pause");
    if (syscall3(NR_getpid, 0, 0, 0) != 1) {
        static const char refuse[] = "init32: not pid 1; this program powers the machine off, "
                                     "so it only runs as a guest's /init\n";
        syscall3(NR_write, 2, (u32)refuse, sizeof(refuse) - 1);
        syscall3(NR_exit, 1, 0, 0);
    }
    s32 fd = syscall3(NR_open, (u32)"/dev/console", O_WRONLY | O_NOCTTY, 0);
    if (fd >= 0)
        console_fd = fd; /* else keep fd 1, which the kernel opened on the console if it could */

    say("started");
    report_nproc();
    report_date();

    static char cmdline[4096];
    read_cmdline(cmdline, sizeof(cmdline));
    if (cmdline_has(cmdline, "vireo.shell"))
        run_shell(); /* returns only if execve failed: fall through to shutting down */
    if (cmdline_has(cmdline, "vireo.devices"))
        run_device_checks(cmdline); /* then waits for the ACPI power button */
    run_sequence(cmdline); /* with vireo.sequence=N: counts while the host saves and restores the VM */

    u32 cmd = REBOOT_CMD_POWER_OFF;
    if (cmdline_has(cmdline, "vireo.reboot")) {
        say("rebooting");
        cmd = REBOOT_CMD_RESTART;
    } else {
        say("powering off");
    }
    s32 rc = syscall5(NR_reboot, REBOOT_MAGIC1, REBOOT_MAGIC2, cmd, 0, 0);
    say_errno("reboot", rc);
    /* pid 1 must not exit (the kernel would panic); wait to be killed by the VMM. */
    for (;;)
        syscall3(NR_pause, 0, 0, 0);
}

/* Entry: the kernel jumps here with argc/argv/envp on the stack and no return address. */
__asm__(".text\n"
        ".globl _start\n"
        ".type _start, @function\n"
        "_start:\n"
        "    xorl %ebp, %ebp\n"
        "    movl %esp, %eax\n"
        "    andl $-16, %esp\n"
        "    subl $12, %esp\n"
        "    pushl %eax\n"
        "    call init_main\n"
        "1:  jmp 1b\n");
