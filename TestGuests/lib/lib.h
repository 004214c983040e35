/* Console, formatting, command-line and exit helpers shared by every test guest. */
#ifndef TG_LIB_H
#define TG_LIB_H

#include "types.h"

#define COM1 0x3F8
#define DEBUG_EXIT_PORT 0xF4
#define EXIT_ON_EXCEPTION 0x7F  /* VMM status (0x7F << 1) | 1 = 255: "the guest faulted" */

/* Set by each guest: every line it prints starts with "<guest_prefix>: ". */
extern const char *guest_prefix;

void serial_init(void);
void serial_putc(char c);
int serial_has_byte(void);
u8 serial_getc(void);  /* blocks (polling LSR.DR) */

/* printf subset: %s %c %u %d %x %08x %%; %s prints NULL as "(null)". */
void kprintf(const char *fmt, ...);
/* Prints the bytes of s up to NUL, '\n' or max, replacing unprintable bytes with '.'. */
void print_line_of(const char *s, u32 max);

/* Writes V to the debug-exit port (VMM exits with (V << 1) | 1); halts if nothing listens. */
__attribute__((noreturn)) void guest_exit(u32 v);

/* Command-line tokens are separated by spaces. Returns the text after "key=" of the first
   token that starts with it, or NULL. */
const char *cmdline_value(const char *cmdline, const char *key);
/* Whether a token equals word exactly. */
int cmdline_has(const char *cmdline, const char *word);
/* Parses a decimal or 0x-hex number ending at NUL/space; returns 0 on junk or overflow. */
int parse_u32(const char *s, u32 *out);
/* cmdline_value + parse_u32 with a default for an absent or malformed value. */
u32 cmdline_u32(const char *cmdline, const char *key, u32 def);

u32 str_len(const char *s, u32 max);
int str_ncmp(const char *a, const char *b, u32 n);

void *memcpy(void *d, const void *s, uptr n);
void *memset(void *d, int c, uptr n);
int memcmp(const void *a, const void *b, uptr n);

#endif
