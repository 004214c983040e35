/* Multiboot v1 information block (the parts the guests read). */
#ifndef TG_MULTIBOOT_H
#define TG_MULTIBOOT_H
#include "types.h"

#define MB_BOOT_MAGIC 0x2BADB002
#define MB_INFO_MEM (1u << 0)
#define MB_INFO_CMDLINE (1u << 2)
#define MB_INFO_MODS (1u << 3)
#define MB_INFO_MMAP (1u << 6)

struct mb_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr;
};

struct mb_module {
    u32 mod_start, mod_end, string, reserved;
};

/* The command line, or "" when the loader gave none. */
static inline const char *mb_cmdline(const struct mb_info *mbi) {
    return (mbi && (mbi->flags & MB_INFO_CMDLINE) && mbi->cmdline) ? (const char *)(uptr)mbi->cmdline : "";
}
#endif
