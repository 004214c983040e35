/* Shared by the two translation units of Vireo's test-guest init (init32.c, devices32.c). */
#ifndef VIREO_INIT32_H
#define VIREO_INIT32_H

typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;
typedef long long s64;

/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
enum {
    NR_exit = 1, NR_read = 3, NR_write = 4, NR_open = 5, NR_close = 6, NR_execve = 11,
    NR_time = 13, NR_getpid = 20, NR_mount = 21, NR_pause = 29, NR_setsid = 66, NR_reboot = 88,
    NR_fsync = 118, NR_nanosleep = 162, NR_poll = 168, NR_sched_getaffinity = 242, NR_socket = 359,
    NR_bind = 361, NR_connect = 362, NR_listen = 363, NR_accept4 = 364, NR_clock_gettime64 = 403,
};

enum { O_RDONLY = 0, O_WRONLY = 1, O_CREAT = 0100, O_TRUNC = 01000, O_NOCTTY = 0400 };
enum { CLOCK_REALTIME = 0 };

#define REBOOT_MAGIC1 0xfee1deadu
#define REBOOT_MAGIC2 672274793u
#define REBOOT_CMD_RESTART 0x01234567u
#define REBOOT_CMD_POWER_OFF 0x4321fedcu

/* A line is assembled in one buffer and written with one call, so lines never interleave
 * with kernel messages mid-line more than the console itself does. */
struct line {
    char buf[192];
    u32 len;
};

s32 syscall5(s32 nr, u32 a, u32 b, u32 c, u32 d, u32 e);
s32 syscall3(s32 nr, u32 a, u32 b, u32 c);
u32 str_len(const char *s);
void put_str(struct line *l, const char *s);
void put_uint(struct line *l, u64 value, u32 min_digits);
void say(const char *text);
void say_errno(const char *what, s32 err);
s32 mount_fs(const char *source, const char *target, const char *type);
int cmdline_has(const char *cmdline, const char *word);
/* The text after `key` (e.g. "vireo.peer=") on the command line, or 0. */
const char *cmdline_value(const char *cmdline, const char *key);
void emit(struct line *l);

/* devices32.c: the user-space half of the virtio/ACPI end-to-end test (vireo.devices). */
void run_device_checks(const char *cmdline);
/* sequence32.c: the guest side of the snapshot end-to-end test (vireo.sequence=N). */
void run_sequence(const char *cmdline);

#endif
