/*
 * The user-space half of Vireo's device end-to-end test, run by init32 when the kernel command
 * line holds `vireo.devices` (hosts where guest user space can make system calls). It prints:
 *   VIREO-INIT: disk: wrote /vireo/from-guest.txt        (on the ext4 root, fsynced)
 *   VIREO-INIT: hwrng: read 16 bytes from /dev/hwrng
 *   VIREO-INIT: tcp: host replied: <first line the host sent>   (vireo.peer=A.B.C.D:PORT)
 *   VIREO-INIT: tcp: listening on port PORT                     (vireo.listen=PORT)
 *   VIREO-INIT: tcp: a host connection sent: <its first line>  (after the guest sent its own)
 *   VIREO-INIT: waiting for the power button
 * and then blocks on the ACPI power button's input device until it reports KEY_POWER, as acpid
 * or systemd-logind would, so the caller can check that the button starts an orderly shutdown.
 */
#include "init32.h"

enum { AF_INET = 2, SOCK_STREAM = 1, EV_KEY = 1, KEY_POWER = 116, POLLIN = 1 };

struct sockaddr_in32 { unsigned short family, port; u32 address; unsigned char zero[8]; };

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

/* Reads up to one line (at most size - 1 bytes) from fd; the count read. */
static u32 read_line(s32 fd, char *buf, u32 size)
{
    u32 got = 0;
    while (got < size - 1) {
        s32 n = syscall3(NR_read, (u32)fd, (u32)(buf + got), size - 1 - got);
        if (n <= 0) break;
        got += (u32)n;
        if (buf[got - 1] == '\n') break;
    }
    buf[got] = 0;
    return got;
}

static void talk_tcp(const char *cmdline)
{
    const char *peer = cmdline_value(cmdline, "vireo.peer=");
    struct sockaddr_in32 sin = { AF_INET, 0, 0, { 0 } };
    if (!peer || !parse_peer(peer, &sin.address, &sin.port)) { say("tcp: no vireo.peer=A.B.C.D:PORT, skipped"); return; }
    s32 fd = syscall3(NR_socket, AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { say_errno("tcp: socket", fd); return; }
    s32 rc = syscall3(NR_connect, (u32)fd, (u32)&sin, sizeof(sin));
    if (rc < 0) { say_errno("tcp: connect", rc); syscall3(NR_close, (u32)fd, 0, 0); return; }
    static const char hello[] = "hello from guest user space\n";
    syscall3(NR_write, (u32)fd, (u32)hello, sizeof(hello) - 1);
    char reply[96];
    u32 got = read_line(fd, reply, sizeof(reply));
    syscall3(NR_close, (u32)fd, 0, 0);
    say_with("tcp: host replied: ", reply, got);
}

/* With vireo.listen=PORT: a guest TCP service the host reaches (across the TAP, or through a
 * user-networking port forward). Accepts one connection within five minutes, sends a line first,
 * then reports the line the host sent. */
static void serve_tcp(const char *cmdline)
{
    const char *p = cmdline_value(cmdline, "vireo.listen=");
    if (!p) return;
    u32 port = 0;
    while (*p >= '0' && *p <= '9' && port <= 65535) port = port * 10 + (u32)(*p++ - '0');
    if (port == 0 || port > 65535) { say("error: tcp: vireo.listen= wants a port number"); return; }
    struct sockaddr_in32 sin = { AF_INET, (unsigned short)((port >> 8) | (port & 0xFF) << 8), 0, { 0 } };
    s32 fd = syscall3(NR_socket, AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { say_errno("tcp: socket", fd); return; }
    s32 rc = syscall3(NR_bind, (u32)fd, (u32)&sin, sizeof(sin));
    if (rc >= 0) rc = syscall3(NR_listen, (u32)fd, 1, 0);
    if (rc < 0) { say_errno("tcp: bind/listen", rc); syscall3(NR_close, (u32)fd, 0, 0); return; }
    struct line l = { .len = 0 };
    put_str(&l, "VIREO-INIT: tcp: listening on port ");
    put_uint(&l, port, 1);
    emit(&l);
    struct { s32 fd; short events, revents; } waiting = { fd, POLLIN, 0 };
    rc = syscall3(NR_poll, (u32)&waiting, 1, 300000);
    if (rc <= 0) {
        if (rc == 0) say("error: tcp: no connection to the listening port within 300 s");
        else say_errno("tcp: poll", rc);
        syscall3(NR_close, (u32)fd, 0, 0);
        return;
    }
    s32 conn = syscall5(NR_accept4, (u32)fd, 0, 0, 0, 0);
    syscall3(NR_close, (u32)fd, 0, 0);
    if (conn < 0) { say_errno("tcp: accept", conn); return; }
    static const char hello[] = "hello from the guest's TCP service\n";
    syscall3(NR_write, (u32)conn, (u32)hello, sizeof(hello) - 1);
    char line[96];
    u32 got = read_line(conn, line, sizeof(line));
    syscall3(NR_close, (u32)conn, 0, 0);
    say_with("tcp: a host connection sent: ", line, got);
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
    serve_tcp(cmdline);
    wait_for_power_button();
}
