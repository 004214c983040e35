/* mb-user: runs its work at CPL3 in 64-bit mode (native speed on hosts that emulate guest kernel
   mode, where 32-bit user code is emulated too): a PIO exit benchmark loop, one PIO read, one MMIO
   write/read, or "ticks" for pause/resume tests. Built as a 64-bit blob behind mb64_shim.S. */
#include "lib.h"
#include "multiboot.h"
#include "cpu64.h"
#include "spray.h"

const char *guest_prefix = "user";

#define TEST_PORT 0xE0
#define TEST_MMIO 0xE8000000u  /* unclaimed: above the PCI window and ECAM, below the IOAPIC */
#define DEFAULT_ITERS 100000u
/* ~50 ms of dec/jnz at native speed on an idle development host (100M iterations took 26 ms);
   several times longer on a loaded one. spin=N overrides it. */
#define DEFAULT_TICK_SPIN 200000000u

static u8 user_stack[16384] __attribute__((aligned(16)));

/* Parsed at CPL0, read at CPL3 (the shim maps all of the low 4 GiB user-accessible). */
static u32 iters, ticks, tick_spin, fault, fill_mib, churn_mib, spray_ops, spray_seed;

/* fill=N: N MiB from 16 MiB up hold a pattern that depends only on the address; each tick then
   re-checks one MiB of it, so a snapshot restore that loses or moves guest RAM is caught. */
#define FILL_BASE 0x1000000ul

static u64 fill_value(u64 *p) { return (u64)(uptr)p * 0x9E3779B97F4A7C15ull; }

static void fill_memory(void) {
    u64 *end = (u64 *)(FILL_BASE + ((uptr)fill_mib << 20));
    for (u64 *p = (u64 *)FILL_BASE; p < end; p++)
        *p = fill_value(p);
}

/* Address of the first wrong word in MiB `mib` of the fill, or 0. */
static uptr check_fill(u32 mib) {
    u64 *start = (u64 *)(FILL_BASE + ((uptr)mib << 20));
    for (u64 *p = start; p < start + (1u << 17); p++)
        if (*p != fill_value(p))
            return (uptr)p;
    return 0;
}

/* churn=N: N MiB right above the fill are rewritten at every tick, two words per page whose
   values depend on the tick number; each tick first checks that every page still holds the
   previous tick's values. A live migration that misses a page the guest dirtied is caught. */
static u64 churn_value(u64 *p, u32 k) { return ((u64)(uptr)p * 0x9E3779B97F4A7C15ull) ^ ((u64)k << 32 | k); }

static uptr churn(u32 k) {
    u64 *start = (u64 *)(FILL_BASE + ((uptr)fill_mib << 20));
    u64 *end = start + ((uptr)churn_mib << 17);
    for (u64 *page = start; page < end; page += 512) {
        if (k > 1 && (page[0] != churn_value(page, k - 1) || page[511] != churn_value(page + 511, k - 1)))
            return (uptr)page;
        page[0] = churn_value(page, k);
        page[511] = churn_value(page + 511, k);
    }
    return 0;
}

static u32 current_cpl(void) {
    u16 cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    return cs & 3;
}

static void spin(u32 n) {
    __asm__ volatile("1: dec %0; jnz 1b" : "+r"(n) : : "cc");
}

void user_main(void);
void user_main(void) {
    u32 cpl = current_cpl();
    if (spray_ops) {
        struct spray_counts counts = {0};
        kprintf("user: spray start ops=%u seed=%u cpl=%u\n", spray_ops, spray_seed, cpl);
        u32 done = spray(spray_ops, spray_seed, &counts);
        /* The guest survived its own spray; so must the VMM: one more round trip to the test's
           port device proves the exit path still works. */
        kprintf("user: spray done ops=%u port_writes=%u port_reads=%u mmio_writes=%u mmio_reads=%u dma=%u virtio=%u config_writes=%u\n",
                done, counts.port_writes, counts.port_reads, counts.mmio_writes, counts.mmio_reads, counts.dma,
                counts.virtio, counts.config_writes);
        kprintf("user: spray found virtio_devices=%u bars=%u\n", counts.virtio_devices, counts.bars);
        kprintf("user: pio read 0x%08x\n", inl(TEST_PORT));
        guest_exit(0);
    }
    if (fault) {
        kprintf("user: executing hlt at cpl%u\n", cpl);
        __asm__ volatile("hlt");  /* privileged: #GP(0) at CPL3, reported by the IDT and exit 0x7F */
    }
    if (ticks) {
        if (fill_mib) {
            fill_memory();
            kprintf("user: filled %u MiB\n", fill_mib);
        }
        for (u32 k = 1; k <= ticks; k++) {
            spin(tick_spin);
            if (fill_mib) {
                uptr bad = check_fill(k % fill_mib);
                if (bad) {
                    kprintf("user: memory corrupt at 0x%x\n", (u32)bad);
                    guest_exit(0x31);
                }
            }
            if (churn_mib) {
                uptr bad = churn(k);
                if (bad) {
                    kprintf("user: churned page corrupt at 0x%x (tick %u)\n", (u32)bad, k);
                    guest_exit(0x32);
                }
            }
            kprintf("user: tick %u\n", k);
        }
        guest_exit(0);
    }
    kprintf("user: pio loop start iters=%u cpl=%u\n", iters, cpl);
    for (u32 i = 0; i < iters; i++)
        outb(TEST_PORT, (u8)i);
    kprintf("user: pio loop end\n");
    kprintf("user: pio read 0x%08x\n", inl(TEST_PORT));
    mmio_write32(TEST_MMIO, 0x11223344);
    kprintf("user: mmio read 0x%08x\n", mmio_read32(TEST_MMIO + 4));
    kprintf("user: done %u iterations at cpl%u\n", iters, cpl);
    guest_exit(0);
}

void guest_main(u32 magic, uptr info);
void guest_main(u32 magic, uptr info) {
    serial_init();
    const struct mb_info *mbi = (const struct mb_info *)info;
    const char *cmdline = magic == MB_BOOT_MAGIC ? mb_cmdline(mbi) : "";
    iters = cmdline_u32(cmdline, "iters", DEFAULT_ITERS);
    ticks = cmdline_u32(cmdline, "ticks", 0);
    tick_spin = cmdline_u32(cmdline, "spin", DEFAULT_TICK_SPIN);
    fault = (u32)cmdline_has(cmdline, "fault");
    fill_mib = cmdline_u32(cmdline, "fill", 0);
    churn_mib = cmdline_u32(cmdline, "churn", 0);
    spray_ops = cmdline_u32(cmdline, "spray", 0);
    spray_seed = cmdline_u32(cmdline, "seed", 1);
    if (!tick_spin)
        tick_spin = 1;
    extern u8 kernel_stack_top[];
    cpu64_init((uptr)kernel_stack_top);
    if (cmdline_has(cmdline, "breakpoint")) {
        /* int3 and fwait at CPL0: native on real hardware; on a KVM that emulates kernel mode the
           VMM must inject #BP / step over fwait (its host profile) for these lines to appear. */
        extern void bp_handler64(void);
        extern volatile u64 bp_count, bp_rip;
        extern const u8 after_int3[];
        cpu64_set_gate(3, bp_handler64);
        __asm__ volatile("int3\n\t.globl after_int3\nafter_int3:" ::: "memory");
        kprintf("user: breakpoint handled count=%u return %s\n", (u32)bp_count,
                bp_rip == (u64)(uptr)after_int3 ? "after int3" : "WRONG");
        __asm__ volatile("fwait" ::: "memory");
        kprintf("user: fwait ok\n");
        guest_exit(0);
    }
    if (cmdline_has(cmdline, "cpl0")) {  /* same work without the ring switch, for comparison */
        kprintf("user: staying at cpl0\n");
        user_main();
    }
    kprintf("user: entering cpl3\n");
    extern void enter_user_mode(uptr user_stack_top) __attribute__((noreturn));
    enter_user_mode((uptr)(user_stack + sizeof user_stack));
}
