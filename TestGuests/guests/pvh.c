/* pvh-probe: reports the hvm_start_info a PVH loader passed in EBX. */
#include "lib.h"

const char *guest_prefix = "pvh";

#define HVM_START_MAGIC 0x336EC578
#define MAX_ENTRIES 1024  /* the loader's counts are not trusted to bound a walk */
#define FIRST_LINE_MAX 60

/* struct hvm_start_info offsets (xen/include/public/arch-x86/hvm/start_info.h) */
enum { SI_MAGIC = 0, SI_VERSION = 4, SI_FLAGS = 8, SI_NR_MODULES = 12, SI_MODLIST = 16,
       SI_CMDLINE = 24, SI_RSDP = 32, SI_MEMMAP = 40, SI_MEMMAP_ENTRIES = 48 };

/* Addresses above 4 GiB are unreachable with paging off: report them instead of reading. */
static int low32(u64 a) { return a != 0 && a < 0x100000000ull; }

u32 guest_main(u32 eax, u32 si);
u32 guest_main(u32 eax, u32 si) {
    (void)eax;
    serial_init();
    if (!si || phys_read32(si + SI_MAGIC) != HVM_START_MAGIC) {
        kprintf("pvh: bad magic at 0x%08x\n", si);
        return 0x7E;
    }
    u32 version = phys_read32(si + SI_VERSION);
    kprintf("pvh: magic ok\n");
    kprintf("pvh: version=%u\n", version);
    u64 cmdline = phys_read64(si + SI_CMDLINE);
    const char *cl = low32(cmdline) ? (const char *)(uptr)cmdline : "";
    kprintf("pvh: cmdline=");
    print_line_of(cl, 4096);
    kprintf("\n");
    u32 entries = 0;
    u32 ram_mib = 0;
    if (version >= 1) {  /* memmap fields exist from version 1 on */
        u64 memmap = phys_read64(si + SI_MEMMAP);
        entries = phys_read32(si + SI_MEMMAP_ENTRIES);
        if (low32(memmap) && entries <= MAX_ENTRIES) {
            u64 ram = 0;
            for (u32 i = 0; i < entries; i++) {
                uptr e = (uptr)memmap + i * 24;  /* {u64 addr, u64 size, u32 type, u32 reserved} */
                if (phys_read32(e + 16) == 1)
                    ram += phys_read64(e + 8);
            }
            ram_mib = (u32)(ram >> 20);
        }
    }
    kprintf("pvh: memmap entries=%u ram=%u\n", entries, ram_mib);
    u32 mods = phys_read32(si + SI_NR_MODULES);
    kprintf("pvh: modules=%u\n", mods);
    u64 modlist = phys_read64(si + SI_MODLIST);
    if (mods && low32(modlist)) {  /* {u64 paddr, u64 size, u64 cmdline_paddr, u64 reserved} */
        u64 paddr = phys_read64((uptr)modlist), size = phys_read64((uptr)modlist + 8);
        if (low32(paddr)) {
            u32 n = size < FIRST_LINE_MAX ? (u32)size : FIRST_LINE_MAX;
            kprintf("pvh: module0 size=%u first=", (u32)size);
            print_line_of((const char *)(uptr)paddr, n);
            kprintf("\n");
        }
    }
    kprintf("pvh: rsdp=0x%08x\n", (u32)phys_read64(si + SI_RSDP));
    return cmdline_u32(cl, "exit", 0);
}
