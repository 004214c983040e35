/* mb-hello: reports what the multiboot loader handed over, then exits with exit=N. */
#include "lib.h"
#include "multiboot.h"

const char *guest_prefix = "hello";

#define MMAP_MAX_ENTRIES 1024  /* a loader's length field is not trusted to end the walk */
#define FIRST_LINE_MAX 60

static u32 count_mmap(const struct mb_info *mbi) {
    u32 n = 0, off = 0;
    while (off + 4 <= mbi->mmap_length && n < MMAP_MAX_ENTRIES) {
        u32 size = phys_read32(mbi->mmap_addr + off);  /* size excludes the size field itself */
        if (size < 20 || size > mbi->mmap_length - off - 4)  /* no u32 overflow: off + 4 <= length */
            break;
        off += size + 4;
        n++;
    }
    return n;
}

/* QEMU-compatible fw_cfg: select a key at 0x510, read its bytes one at a time from 0x511. */
static void fw_cfg_select(u16 key) { outw(0x510, key); }

static void print_fw_cfg(void) {
    char sig[5];
    fw_cfg_select(0x0000);  /* FW_CFG_SIGNATURE */
    for (int i = 0; i < 4; i++) {
        u8 c = inb(0x511);
        sig[i] = (char)(c >= 0x20 && c < 0x7F ? c : '.');
    }
    sig[4] = 0;
    if (memcmp(sig, "QEMU", 4) != 0) {
        kprintf("hello: fw_cfg none (signature %s)\n", sig);
        return;
    }
    fw_cfg_select(0x0005);  /* FW_CFG_NB_CPUS, u16 LE */
    u32 cpus = inb(0x511);
    cpus |= (u32)inb(0x511) << 8;
    kprintf("hello: fw_cfg signature=QEMU cpus=%u\n", cpus);
}

u32 guest_main(u32 magic, const struct mb_info *mbi);
u32 guest_main(u32 magic, const struct mb_info *mbi) {
    serial_init();
    kprintf("hello: vireo test guest\n");
    if (magic != MB_BOOT_MAGIC) {
        kprintf("hello: bad magic 0x%08x\n", magic);
        return 0x7E;
    }
    const char *cmdline = mb_cmdline(mbi);
    kprintf("hello: cmdline=");
    print_line_of(cmdline, 4096);
    kprintf("\n");
    if (mbi->flags & MB_INFO_MEM)
        kprintf("hello: mem_upper=%u KiB\n", mbi->mem_upper);
    else
        kprintf("hello: mem_upper=none\n");
    kprintf("hello: mmap entries=%u\n", (mbi->flags & MB_INFO_MMAP) ? count_mmap(mbi) : 0);
    u32 mods = (mbi->flags & MB_INFO_MODS) ? mbi->mods_count : 0;
    kprintf("hello: modules=%u\n", mods);
    if (mods) {
        const struct mb_module *m = (const struct mb_module *)(uptr)mbi->mods_addr;
        u32 size = m->mod_end > m->mod_start ? m->mod_end - m->mod_start : 0;
        kprintf("hello: module0 size=%u first=", size);
        print_line_of((const char *)(uptr)m->mod_start, size < FIRST_LINE_MAX ? size : FIRST_LINE_MAX);
        kprintf("\n");
    }
    print_fw_cfg();
    u32 v = cmdline_u32(cmdline, "exit", 0);
    kprintf("hello: exit=%u\n", v);
    return v;
}
