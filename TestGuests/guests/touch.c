/* mb-touch: writes to every 4 KiB page of RAM from 16 MiB up to the top the multiboot loader
   reports, so every page of guest RAM is backed (and charged to the VMM's cgroup) on the host.
   Prints progress every 16 MiB, then exits with exit=N (default 0). A memory limit below the
   guest's size ends the VMM before "touch: done". */
#include "lib.h"
#include "multiboot.h"

const char *guest_prefix = "touch";

#define START (16u << 20)
#define PAGE 4096u

u32 guest_main(u32 magic, const struct mb_info *mbi);
u32 guest_main(u32 magic, const struct mb_info *mbi) {
    serial_init();
    if (magic != MB_BOOT_MAGIC || !(mbi->flags & MB_INFO_MEM)) {
        kprintf("touch: no multiboot memory information\n");
        return 0x7E;
    }
    /* mem_upper: KiB above 1 MiB. Paging is off: physical addresses are used directly (the
       guest runs below 4 GiB, and the loader caps what it reports there). */
    u32 top = (1u << 20) + mbi->mem_upper * 1024u;
    kprintf("touch: writing pages from %u MiB to %u MiB\n", START >> 20, top >> 20);
    for (u32 address = START; address < top && address >= START; address += PAGE) {
        *(volatile u32 *)(uptr)address = address;
        if ((address & ((16u << 20) - 1)) == 0)
            kprintf("touch: %u MiB\n", address >> 20);
    }
    kprintf("touch: done\n");
    return cmdline_u32(mb_cmdline(mbi), "exit", 0);
}
