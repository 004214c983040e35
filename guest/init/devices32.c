/*
 * The user-space half of Vireo's device end-to-end test, run by init32 when the kernel command
 * line holds `vireo.devices` (hosts where guest user space can make system calls). It prints:
 *   VIREO-INIT: disk: wrote /vireo/from-guest.txt        (on the ext4 root, fsynced)
 *   VIREO-INIT: hwrng: read 16 bytes from /dev/hwrng
 *   VIREO-INIT: tcp: host replied: <first line the host sent>   (vireo.peer=A.B.C.D:PORT)
 *   VIREO-INIT: waiting for the power button
 * and then blocks on the ACPI power button's input device until it reports KEY_POWER, as acpid
 * or systemd-logind would, so the caller can check that the button starts an orderly shutdown.
 */
#include "init32.h"

enum { AF_INET = 2, SOCK_STREAM = 1, EV_KEY = 1, KEY_POWER = 116 };

/* struct input_event as a 32-bit process reads it: 32-bit seconds and microseconds. */
struct input_event32 { u32 sec, usec; unsigned short type, code; s32 value; };

static void say_with(const char *prefix, const char *text, u32 max)
{
    struct line l = { .len = 0 };
    put_str(&l, "VIREO-INIT: ");
    put_str(&l, prefix);
    for (u32 i = 0; i < max && text[i] && text[i] != '\n' && l.len < sizeof(l.buf) - 2; i++)
        l.buf[l.len++] = (text[i] >= 0x20 && text[i] < 0x7F) ? text[i] : '.';
    emit(&l);
}

static void write_file_on_root(void)
{
    static const char text[] = "written by a guest process through virtio-blk\n";
    s32 fd = syscall3(NR_open, (u32)"/vireo/from-guest.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { say_errno("disk: open /vireo/from-guest.txt", fd); return; }
    s32 n = syscall3(NR_write, (u32)fd, (u32)text, sizeof(text) - 1);
    s32 synced = syscall3(NR_fsync, (u32)fd, 0, 0);
    syscall3(NR_close, (u32)fd, 0, 0);
    if (n != (s32)(sizeof(text) - 1)) { say_errno("disk: write", n); return; }
    if (synced < 0) { say_errno("disk: fsync", synced); return; }
    say("disk: wrote /vireo/from-guest.txt");
}

static void read_hwrng(void)
{
    unsigned char bytes[16];
    s32 fd = syscall3(NR_open, (u32)"/dev/hwrng", O_RDONLY, 0);
    if (fd < 0) { say_errno("hwrng: open /dev/hwrng", fd); return; }
    s32 n = syscall3(NR_read, (u32)fd, (u32)bytes, sizeof(bytes));
    syscall3(NR_close, (u32)fd, 0, 0);
    if (n != (s32)sizeof(bytes)) { say_errno("hwrng: read", n); return; }
    say("hwrng: read 16 bytes from /dev/hwrng");
}

/* Parses "A.B.C.D:PORT" (the value of vireo.peer=); 0 on junk. */
static int parse_peer(const char *p, u32 *address, unsigned short *port)
{
    u32 parts[5] = { 0 }, n = 0;
    for (; *p && *p != ' ' && *p != '\n' && n < 5; p++) {
        if (*p == '.' || *p == ':') { n++; continue; }
        if (*p < '0' || *p > '9' || parts[n] > 65535) return 0;
        parts[n] = parts[n] * 10 + (u32)(*p - '0');
    }
    if (n != 4 || parts[0] > 255 || parts[1] > 255 || parts[2] > 255 || parts[3] > 255 || parts[4] > 65535) return 0;
    *address = parts[0] | parts[1] << 8 | parts[2] << 16 | parts[3] << 24;   /* network order */
    *port = (unsigned short)((parts[4] >> 8) | (parts[4] & 0xFF) << 8);
    return 1;
}

static void talk_tcp(const char *cmdline)
{
    const char *peer = 0;
    for (const char *p = cmdline; *p; p++)
        if ((p == cmdline || p[-1] == ' ') && p[0] == 'v' && p[1] == 'i' && p[2] == 'r' && p[3] == 'e' &&
            p[4] == 'o' && p[5] == '.' && p[6] == 'p' && p[7] == 'e' && p[8] == 'e' && p[9] == 'r' && p[10] == '=')
            peer = p + 11;
    struct { unsigned short family, port; u32 address; unsigned char zero[8]; } sin = { AF_INET, 0, 0, { 0 } };
    if (!peer || !parse_peer(peer, &sin.address, &sin.port)) { say("tcp: no vireo.peer=A.B.C.D:PORT, skipped"); return; }
    s32 fd = syscall3(NR_socket, AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { say_errno("tcp: socket", fd); return; }
    s32 rc = syscall3(NR_connect, (u32)fd, (u32)&sin, sizeof(sin));
    if (rc < 0) { say_errno("tcp: connect", rc); syscall3(NR_close, (u32)fd, 0, 0); return; }
    static const char hello[] = "hello from guest user space\n";
    syscall3(NR_write, (u32)fd, (u32)hello, sizeof(hello) - 1);
    char reply[96];
    u32 got = 0;
    while (got < sizeof(reply) - 1) {
        s32 n = syscall3(NR_read, (u32)fd, (u32)(reply + got), sizeof(reply) - 1 - got);
        if (n <= 0) break;
        got += (u32)n;
        if (reply[got - 1] == '\n') break;
    }
    reply[got] = 0;
    syscall3(NR_close, (u32)fd, 0, 0);
    say_with("tcp: host replied: ", reply, got);
}

/* Blocks until an input device reports KEY_POWER (the ACPI button driver's "Power Button"). */
static void wait_for_power_button(void)
{
    s32 fds[4];
    u32 count = 0;
    static const char *const devices[] = { "/dev/input/event0", "/dev/input/event1", "/dev/input/event2", "/dev/input/event3" };
    for (u32 i = 0; i < 4; i++) {
        s32 fd = syscall3(NR_open, (u32)devices[i], O_RDONLY, 0);
        if (fd >= 0) fds[count++] = fd;
    }
    if (count == 0) { say("power button: no input device; powering off now"); return; }
    say("waiting for the power button");
    /* Only one input device exists in this guest (the power button); read the first. */
    for (;;) {
        struct input_event32 event;
        s32 n = syscall3(NR_read, (u32)fds[0], (u32)&event, sizeof(event));
        if (n != (s32)sizeof(event)) { say_errno("power button: read", n); return; }
        if (event.type == EV_KEY && event.code == KEY_POWER && event.value == 1) {
            say("power button pressed: shutting down");
            return;
        }
    }
}

void run_device_checks(const char *cmdline)
{
    mount_fs("devtmpfs", "/dev", "devtmpfs");
    write_file_on_root();
    read_hwrng();
    talk_tcp(cmdline);
    wait_for_power_button();
}
