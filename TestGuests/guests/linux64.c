/* linux64-probe: reports what a Linux 64-bit boot protocol loader put in boot_params. */
#include "lib.h"

const char *guest_prefix = "probe";

/* boot_params offsets (Documentation/arch/x86/zero-page.rst, boot.rst) */
enum {
    BP_EXT_RAMDISK_IMAGE = 0x0C0, BP_EXT_RAMDISK_SIZE = 0x0C4, BP_EXT_CMD_LINE_PTR = 0x0C8,
    BP_E820_ENTRIES = 0x1E8, BP_RAMDISK_IMAGE = 0x218, BP_RAMDISK_SIZE = 0x21C,
    BP_CMD_LINE_PTR = 0x228, BP_SETUP_DATA = 0x250, BP_E820_TABLE = 0x2D0,
};
#define E820_MAX 128           /* the table in boot_params has room for 128 entries */
#define SETUP_DATA_MAX 64      /* a looping list must not hang the probe */
#define SETUP_RNG_SEED 9
#define FIRST_LINE_MAX 60
#define FOUR_GIB 0x100000000ull

/* The loader only has to map the kernel, boot_params and the command line; the initrd and
   setup_data may lie elsewhere below 4 GiB. Our own 4 GiB identity map (2 MiB pages) covers all. */
static u64 pml4[512] __attribute__((aligned(4096)));
static u64 pdpt[512] __attribute__((aligned(4096)));
static u64 pd[4][512] __attribute__((aligned(4096)));

static void map_low_4gib(void) {
    for (u32 i = 0; i < 512; i++)  /* not relying on the loader having zeroed .bss */
        pml4[i] = pdpt[i] = 0;
    for (u64 g = 0; g < 4; g++) {
        for (u64 i = 0; i < 512; i++)
            pd[g][i] = ((g << 30) | (i << 21)) | 0x83;  /* present, writable, 2 MiB page */
        pdpt[g] = (u64)(uptr)pd[g] | 0x3;
    }
    pml4[0] = (u64)(uptr)pdpt | 0x3;
    __asm__ volatile("mov %0, %%cr3" : : "r"((u64)(uptr)pml4) : "memory");
}

static void print_first_line(u64 addr, u64 size) {
    u32 n = size < FIRST_LINE_MAX ? (u32)size : FIRST_LINE_MAX;
    print_line_of((const char *)(uptr)addr, n);
}

u32 probe_main(uptr bp);
u32 probe_main(uptr bp) {
    serial_init();
    kprintf("probe: linux64\n");
    map_low_4gib();

    u64 cmd = phys_read32(bp + BP_CMD_LINE_PTR) | ((u64)phys_read32(bp + BP_EXT_CMD_LINE_PTR) << 32);
    const char *cmdline = cmd && cmd < FOUR_GIB ? (const char *)(uptr)cmd : "";
    kprintf("probe: cmdline=");
    print_line_of(cmdline, 4096);
    kprintf("\n");

    u32 entries = phys_read8(bp + BP_E820_ENTRIES);
    u64 ram = 0;
    for (u32 i = 0; i < entries && i < E820_MAX; i++) {
        uptr e = bp + BP_E820_TABLE + i * 20;  /* packed {u64 addr, u64 size, u32 type} */
        if (phys_read32(e + 16) == 1)
            ram += phys_read64(e + 8);
    }
    kprintf("probe: e820 entries=%u ram=%u\n", entries, (u32)(ram >> 20));

    u32 seed_bytes = 0, setup_entries = 0;
    u64 sd = phys_read64(bp + BP_SETUP_DATA);
    while (sd && setup_entries < SETUP_DATA_MAX) {
        if (sd > FOUR_GIB - 16) {
            kprintf("probe: setup_data at 0x%x%08x is out of reach\n", (u32)(sd >> 32), (u32)sd);
            break;
        }
        setup_entries++;
        u32 type = phys_read32((uptr)sd + 8), len = phys_read32((uptr)sd + 12);
        if (type == SETUP_RNG_SEED && !seed_bytes)
            seed_bytes = len;
        sd = phys_read64((uptr)sd);
    }
    kprintf("probe: setup_data entries=%u\n", setup_entries);
    kprintf("probe: rng seed bytes=%u\n", seed_bytes);

    u64 rd = phys_read32(bp + BP_RAMDISK_IMAGE) | ((u64)phys_read32(bp + BP_EXT_RAMDISK_IMAGE) << 32);
    u64 rd_size = phys_read32(bp + BP_RAMDISK_SIZE) | ((u64)phys_read32(bp + BP_EXT_RAMDISK_SIZE) << 32);
    kprintf("probe: initrd=%u first=", (u32)rd_size);
    if (rd && rd_size && rd + rd_size <= FOUR_GIB)
        print_first_line(rd, rd_size);
    kprintf("\n");

    u32 v = cmdline_u32(cmdline, "exit", 0);
    kprintf("probe: exit=%u\n", v);
    return v;
}
