/*
 * The guest side of Vireo's snapshot end-to-end test, run by init32 when the kernel command line
 * holds `vireo.sequence=N`: a process that counts from 1 to N, a step every 100 ms, and for each
 * step prints "VIREO-INIT: seq K" on the console and appends "K\n" to /vireo/seq.txt on the ext4
 * root with an fsync. The host saves and restores the VM while it counts; afterwards both the
 * console transcript and the file must hold 1..N exactly once each. At the end the root is
 * remounted read-only (so e2fsck finds it clean) and init powers off.
 *
 * With `vireo.seqpeer=A.B.C.D:PORT` as well (the live-migration test), it first connects to that
 * TCP peer and sends each number on that one connection too ("K\n"), waiting for the peer to echo
 * it before the next step; "done\n" ends the stream. A broken connection or a wrong echo is
 * reported ("VIREO-INIT: error: seq: tcp ...") and the count goes on without the peer.
 */
#include "init32.h"

enum { O_APPEND = 02000, MS_RDONLY = 1, MS_REMOUNT = 32, AF_INET = 2, SOCK_STREAM = 1 };

struct timespec32 { s32 sec, nsec; };

static u32 parse_count(const char *cmdline)
{
    const char *q = cmdline_value(cmdline, "vireo.sequence=");
    u32 n = 0;
    while (q && *q >= '0' && *q <= '9' && n < 1000000)
        n = n * 10 + (u32)(*q++ - '0');
    return n;
}

/* A TCP connection to `vireo.seqpeer=A.B.C.D:PORT`; -1 without one (or on failure, reported). */
static s32 connect_peer(const char *cmdline)
{
    const char *p = cmdline_value(cmdline, "vireo.seqpeer=");
    if (!p)
        return -1;
    u32 parts[5] = { 0 }, n = 0;
    for (; *p && *p != ' ' && *p != '\n' && n < 5; p++) {
        if (*p == '.' || *p == ':') { n++; continue; }
        if (*p < '0' || *p > '9' || parts[n] > 65535) { n = 9; break; }
        parts[n] = parts[n] * 10 + (u32)(*p - '0');
    }
    if (n != 4 || parts[0] > 255 || parts[1] > 255 || parts[2] > 255 || parts[3] > 255 || parts[4] > 65535) {
        say("error: seq: tcp: vireo.seqpeer= wants A.B.C.D:PORT");
        return -1;
    }
    struct { unsigned short family, port; u32 address; unsigned char zero[8]; } sin = {
        AF_INET, (unsigned short)((parts[4] >> 8) | (parts[4] & 0xFF) << 8),
        parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24, { 0 } };
    s32 fd = syscall3(NR_socket, AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { say_errno("seq: tcp: socket", fd); return -1; }
    s32 rc = syscall3(NR_connect, (u32)fd, (u32)&sin, sizeof(sin));
    if (rc < 0) { say_errno("seq: tcp: connect", rc); syscall3(NR_close, (u32)fd, 0, 0); return -1; }
    say("seq: tcp: connected to the peer");
    return fd;
}

/* Sends `len` bytes ending in '\n' on `fd` and reads the peer's echo; 0 (reported) on failure. */
static int echo(s32 fd, const char *text, u32 len)
{
    s32 n = syscall3(NR_write, (u32)fd, (u32)text, len);
    if (n != (s32)len) { say_errno("seq: tcp: send", n < 0 ? n : 0); return 0; }
    char back[16];
    u32 got = 0;
    while (got < sizeof(back) && (got == 0 || back[got - 1] != '\n')) {
        n = syscall3(NR_read, (u32)fd, (u32)(back + got), sizeof(back) - got);
        if (n < 0) { say_errno("seq: tcp: receive the echo", n); return 0; }
        if (n == 0) { say("error: seq: tcp: the peer closed the connection"); return 0; }
        got += (u32)n;
    }
    int same = got == len;
    for (u32 i = 0; same && i < len; i++)
        same = back[i] == text[i];
    if (!same) say("error: seq: tcp: the echo differs");
    return same;
}

void run_sequence(const char *cmdline)
{
    u32 count = parse_count(cmdline);
    if (count == 0)
        return;
    s32 fd = syscall3(NR_open, (u32)"/vireo/seq.txt", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) { say_errno("seq: open /vireo/seq.txt", fd); return; }
    s32 peer = connect_peer(cmdline);
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
        if (peer >= 0 && !echo(peer, text, len + 1)) { syscall3(NR_close, (u32)peer, 0, 0); peer = -1; }
        struct timespec32 pause = { 0, 100 * 1000 * 1000 };
        syscall3(NR_nanosleep, (u32)&pause, 0, 0);
    }
    syscall3(NR_close, (u32)fd, 0, 0);
    if (peer >= 0) {
        syscall3(NR_write, (u32)peer, (u32)"done\n", 5);
        syscall3(NR_close, (u32)peer, 0, 0);
        say("seq: tcp: the peer echoed every number");
    }
    s32 rc = syscall5(NR_mount, 0, (u32)"/", 0, MS_REMOUNT | MS_RDONLY, 0);
    if (rc < 0) say_errno("seq: remount / read-only", rc);
    say("seq: done");
}
