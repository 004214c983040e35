/*
 * The guest side of Vireo's snapshot end-to-end test, run by init32 when the kernel command line
 * holds `vireo.sequence=N`: a process that counts from 1 to N, a step every 100 ms, and for each
 * step prints "VIREO-INIT: seq K" on the console and appends "K\n" to /vireo/seq.txt on the ext4
 * root with an fsync. The host saves and restores the VM while it counts; afterwards both the
 * console transcript and the file must hold 1..N exactly once each. At the end the root is
 * remounted read-only (so e2fsck finds it clean) and init powers off.
 */
#include "init32.h"

enum { O_APPEND = 02000, MS_RDONLY = 1, MS_REMOUNT = 32 };

struct timespec32 { s32 sec, nsec; };

static u32 parse_count(const char *cmdline)
{
    static const char key[] = "vireo.sequence=";
    for (const char *p = cmdline; *p; p++) {
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (*k)
            continue;
        u32 n = 0;
        while (*q >= '0' && *q <= '9' && n < 1000000)
            n = n * 10 + (u32)(*q++ - '0');
        return n;
    }
    return 0;
}

void run_sequence(const char *cmdline)
{
    u32 count = parse_count(cmdline);
    if (count == 0)
        return;
    s32 fd = syscall3(NR_open, (u32)"/vireo/seq.txt", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) { say_errno("seq: open /vireo/seq.txt", fd); return; }
    for (u32 k = 1; k <= count; k++) {
        struct line l = { .len = 0 };
        put_str(&l, "VIREO-INIT: seq ");
        put_uint(&l, k, 1);
        emit(&l);
        char digits[12];
        u32 len = 0;
        for (u32 v = k; v; v /= 10) digits[len++] = (char)('0' + v % 10);
        char text[13];
        for (u32 i = 0; i < len; i++) text[i] = digits[len - 1 - i];
        text[len] = '\n';
        s32 n = syscall3(NR_write, (u32)fd, (u32)text, len + 1);
        s32 synced = syscall3(NR_fsync, (u32)fd, 0, 0);
        if (n != (s32)(len + 1) || synced < 0) { say_errno("seq: write", n < 0 ? n : synced); break; }
        struct timespec32 pause = { 0, 100 * 1000 * 1000 };
        syscall3(NR_nanosleep, (u32)&pause, 0, 0);
    }
    syscall3(NR_close, (u32)fd, 0, 0);
    s32 rc = syscall5(NR_mount, 0, (u32)"/", 0, MS_REMOUNT | MS_RDONLY, 0);
    if (rc < 0) say_errno("seq: remount / read-only", rc);
    say("seq: done");
}
