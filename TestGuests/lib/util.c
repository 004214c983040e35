/* String, memory and command-line helpers (no libc in a freestanding guest). */
#include "lib.h"

void *memcpy(void *d, const void *s, uptr n) {
    u8 *dp = d;
    const u8 *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memset(void *d, int c, uptr n) {
    u8 *dp = d;
    while (n--)
        *dp++ = (u8)c;
    return d;
}

int memcmp(const void *a, const void *b, uptr n) {
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

u32 str_len(const char *s, u32 max) {
    u32 n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

int str_ncmp(const char *a, const char *b, u32 n) {
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (u8)*a < (u8)*b ? -1 : 1;
        if (!*a)
            return 0;
    }
    return 0;
}

/* The boot loader's command line is bounded only by its NUL: cap the scan so junk cannot run on. */
#define CMDLINE_MAX 4096

const char *cmdline_value(const char *cmdline, const char *key) {
    if (!cmdline)
        return NULL;
    u32 klen = str_len(key, 64);
    for (u32 i = 0; i < CMDLINE_MAX && cmdline[i]; i++) {
        if (i > 0 && cmdline[i - 1] != ' ')
            continue;
        if (str_ncmp(cmdline + i, key, klen) == 0 && cmdline[i + klen] == '=')
            return cmdline + i + klen + 1;
    }
    return NULL;
}

int cmdline_has(const char *cmdline, const char *word) {
    if (!cmdline)
        return 0;
    u32 wlen = str_len(word, 64);
    for (u32 i = 0; i < CMDLINE_MAX && cmdline[i]; i++) {
        if (i > 0 && cmdline[i - 1] != ' ')
            continue;
        char end = cmdline[i + wlen];
        if (str_ncmp(cmdline + i, word, wlen) == 0 && (end == '\0' || end == ' '))
            return 1;
    }
    return 0;
}

int parse_u32(const char *s, u32 *out) {
    u32 base = 10, v = 0, digits = 0;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    for (; *s && *s != ' '; s++, digits++) {
        u32 d;
        if (*s >= '0' && *s <= '9')
            d = (u32)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (u32)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (u32)(*s - 'A' + 10);
        else
            return 0;
        if (v > (0xFFFFFFFFu - d) / base)
            return 0;
        v = v * base + d;
    }
    if (!digits)
        return 0;
    *out = v;
    return 1;
}

u32 cmdline_u32(const char *cmdline, const char *key, u32 def) {
    const char *v = cmdline_value(cmdline, key);
    u32 n;
    return v && parse_u32(v, &n) ? n : def;
}
