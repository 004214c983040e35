/* mb-smp: counts CPUs in the MP table, starts every AP with INIT/SIPI/SIPI through the LAPIC and
   waits (bounded) until all of them have checked in. */
#include "lib.h"
#include "multiboot.h"
#include "apic.h"

const char *guest_prefix = "smp";

#define TRAMPOLINE_ADDR 0x8000u  /* SIPI vector 0x08; multiboot info below 1 MiB is read before */
#define MAX_CPUS 64

/* Generous for ~1.3 us per emulated instruction; the wait ends only when both have elapsed, so a
   host that runs CPL0 natively (loop count passes in ms) still waits the TSC time. */
#define WAIT_MIN_SPINS 3000000u
#define WAIT_MIN_TSC 10000000000ull

static volatile u32 print_lock;
static volatile u32 ap_count;
static u32 lapic_base = LAPIC_DEFAULT_BASE;

static void lock(void) {
    while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
        cpu_relax();
}
static void unlock(void) { __atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE); }

void ap_main(void);
void ap_main(void) {
    u32 id = lapic_id(lapic_base);
    lock();
    kprintf("smp: cpu %u up\n", id);
    unlock();
    __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);  /* after printing: "all up" comes last */
}

static u8 checksum(uptr p, u32 len) {
    u8 sum = 0;
    for (u32 i = 0; i < len; i++)
        sum = (u8)(sum + phys_read8(p + i));
    return sum;
}

/* MP floating pointer: "_MP_", 16 bytes, on a 16-byte boundary, bytes summing to 0. */
static uptr scan_mpf(uptr start, u32 len) {
    for (uptr p = start; p + 16 <= start + len; p += 16)
        if (phys_read32(p) == 0x5F504D5F && phys_read8(p + 8) == 1 && checksum(p, 16) == 0)
            return p;
    return 0;
}

/* Same places Linux searches: EBDA, the last KiB of base memory, 0x9FC00, the BIOS ROM area. */
static uptr find_mpf(void) {
    uptr ebda = (uptr)phys_read16(0x40E) << 4;
    uptr basemem = (uptr)phys_read16(0x413) * 1024;
    uptr p = 0;
    if (ebda >= 0x80000 && ebda < 0xA0000)
        p = scan_mpf(ebda, 1024);
    if (!p && basemem >= 0x80000 + 1024 && basemem <= 0xA0000)
        p = scan_mpf(basemem - 1024, 1024);
    if (!p)
        p = scan_mpf(0x9FC00, 1024);
    if (!p)
        p = scan_mpf(0xF0000, 0x10000);
    return p;
}

struct cpu_list {
    u32 count;
    u8 apic_id[MAX_CPUS];
};

/* Walks the base configuration table; returns 0 when it is missing or malformed. */
static int read_mp_config(uptr mpf, struct cpu_list *cpus) {
    uptr cfg = phys_read32(mpf + 4);
    if (!cfg || cfg >= 0x100000000ull - 44 || phys_read32(cfg) != 0x504D4350) {  /* "PCMP" */
        kprintf("smp: no mp configuration table (pointer 0x%08x)\n", (u32)cfg);
        return 0;
    }
    u32 len = phys_read16(cfg + 4), entries = phys_read16(cfg + 34);
    if (len < 44 || checksum(cfg, len) != 0) {
        kprintf("smp: mp configuration table has bad length or checksum\n");
        return 0;
    }
    if (phys_read32(cfg + 36))
        lapic_base = phys_read32(cfg + 36);
    cpus->count = 0;
    u32 off = 44;
    for (u32 i = 0; i < entries && off < len; i++) {
        u8 type = phys_read8(cfg + off);
        u32 size = type == 0 ? 20 : 8;
        if (type > 4 || off + size > len)
            break;
        if (type == 0 && (phys_read8(cfg + off + 3) & 1) && cpus->count < MAX_CPUS)
            cpus->apic_id[cpus->count++] = phys_read8(cfg + off + 1);
        off += size;
    }
    return 1;
}

static void short_delay(u32 spins) {
    for (volatile u32 i = 0; i < spins; i++)
        cpu_relax();
}

static void send_ipi(u32 apic_id, u32 low) {
    lapic_write(lapic_base, LAPIC_ICR_HI, apic_id << 24);
    lapic_write(lapic_base, LAPIC_ICR_LO, low);
    for (u32 i = 0; i < 100000 && (lapic_read(lapic_base, LAPIC_ICR_LO) & (1u << 12)); i++)
        cpu_relax();  /* delivery status: pending */
}

u32 guest_main(u32 magic, const struct mb_info *mbi);
u32 guest_main(u32 magic, const struct mb_info *mbi) {
    (void)magic, (void)mbi;
    serial_init();
    uptr mpf = find_mpf();
    if (!mpf) {
        kprintf("smp: no mp table\n");
        return 2;
    }
    struct cpu_list cpus;
    if (!read_mp_config(mpf, &cpus))
        return 2;
    u32 n = cpus.count;
    kprintf("smp: mp table at 0x%08x\n", (u32)mpf);
    kprintf("smp: mp table says %u cpus\n", n);

    extern const u8 tramp_start[], tramp_end[];
    memcpy((void *)TRAMPOLINE_ADDR, tramp_start, (uptr)(tramp_end - tramp_start));
    lapic_write(lapic_base, LAPIC_SVR, 0x1FF);  /* software-enable the BSP's LAPIC */
    u32 self = lapic_id(lapic_base);
    kprintf("smp: bsp lapic id %u\n", self);

    u32 expected = 0;
    for (u32 i = 0; i < n; i++) {
        if (cpus.apic_id[i] == self)
            continue;
        expected++;
        send_ipi(cpus.apic_id[i], 0x4500);  /* INIT, level assert */
        short_delay(10000);
        for (int sipi = 0; sipi < 2; sipi++) {
            send_ipi(cpus.apic_id[i], 0x4600 | (TRAMPOLINE_ADDR >> 12));  /* STARTUP */
            short_delay(1000);
        }
    }

    u64 start = rdtsc();
    for (u32 spins = 0; __atomic_load_n(&ap_count, __ATOMIC_SEQ_CST) < expected; spins++) {
        if (spins >= WAIT_MIN_SPINS && rdtsc() - start >= WAIT_MIN_TSC) {
            lock();
            kprintf("smp: timeout, %u of %u\n", __atomic_load_n(&ap_count, __ATOMIC_SEQ_CST) + 1, n);
            unlock();
            return 1;
        }
        cpu_relax();
    }
    lock();
    kprintf("smp: all %u cpus up\n", n);
    unlock();
    return 0;
}
