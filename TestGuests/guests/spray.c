/* mb-user's "spray" mode: a hostile guest for the VMM, run at CPL3 (native speed on hosts that
   emulate kernel mode). A seeded xorshift generator drives N operations against everything the
   VMM emulates: port reads and writes (the devices' ports and random ones), MMIO in the PCI
   ECAM, in the BARs the devices have (moved about by the spray itself) and anywhere in the
   32-bit hole, PCI configuration writes through 0xCF8/0xCFC (BARs onto RAM and onto each other,
   command bits, MSI-X enable and table churn), fw_cfg DMA requests with random control words and
   huge lengths, and a hostile virtio driver (rings of random bytes, random features, sizes and
   MSI-X vectors, then DRIVER_OK and a kick). Left alone, so that the spray runs its whole length and its report
   stays readable: writes that end the machine by design (i8042 commands, the 0xCF9 reset
   register, ACPI PM1 control's SLP_EN, the debug-exit port) and COM1. The LAPIC is left alone
   too: it is KVM's, not the VMM's, and an INIT IPI to itself would end the guest, not test the
   VMM. The guest may still die of what it does (a virtqueue set to an address in its own code
   makes a device write there): the VMM must survive that as well. */
#include "lib.h"
#include "spray.h"

#define ECAM_BASE 0xE0000000ul
#define ECAM_SIZE 0x100000ul
#define HOLE_START 0xC0000000ul
#define HOLE_END 0xFEC00000ul       /* the IOAPIC and LAPIC above are KVM's */
#define SCRATCH 0x2000000ul         /* 32 MiB: fw_cfg DMA descriptors and targets */
#define MAX_BARS 64

static u64 state;
static u64 next(void) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static uptr bars[MAX_BARS];
static u32 bar_count;

/* Virtio-pci devices as their capabilities place them now: common configuration and notify. */
#define MAX_VIRTIO 16
static struct { uptr common, notify; u32 multiplier; } virtio[MAX_VIRTIO];
static u32 virtio_count;

static u8 ecam_read8(uptr config, u32 offset) { return *(volatile u8 *)(config + offset); }

static uptr bar_address(uptr config, u32 bar) {
    if (bar > 5)
        return 0;
    u32 value = mmio_read32(config + 0x10 + 4 * bar);
    return (value & 1) ? 0 : (uptr)(value & ~0xFu);
}

/* Walks a virtio device's capability list for its common and notify structures. */
static void find_virtio(uptr config) {
    if (virtio_count >= MAX_VIRTIO || !(mmio_read32(config + 4) & (1u << 20)))
        return;  /* no capability list */
    uptr common = 0, notify = 0;
    u32 multiplier = 0;
    u8 at = ecam_read8(config, 0x34) & 0xFC;
    for (u32 hops = 0; at >= 0x40 && hops < 48; hops++) {
        if (ecam_read8(config, at) == 0x09) {  /* vendor-specific: a virtio structure */
            u8 type = ecam_read8(config, at + 3);
            uptr base = bar_address(config, ecam_read8(config, at + 4));
            uptr where = base ? base + mmio_read32(config + at + 8) : 0;
            if (type == 1) common = where;
            if (type == 2) { notify = where; multiplier = mmio_read32(config + at + 16); }
        }
        at = ecam_read8(config, at + 1) & 0xFC;
    }
    if (common >= HOLE_START && common < HOLE_END && notify >= HOLE_START && notify < HOLE_END) {
        virtio[virtio_count].common = common;
        virtio[virtio_count].notify = notify;
        virtio[virtio_count].multiplier = multiplier;
        virtio_count++;
    }
}

/* The memory BARs (and virtio structures) the devices on bus 0 have now, read through the ECAM. */
static void find_bars(void) {
    bar_count = 0;
    virtio_count = 0;
    for (u32 dev = 0; dev < 32; dev++) {
        uptr config = ECAM_BASE + ((uptr)dev << 15);
        u32 id = mmio_read32(config);
        if ((id & 0xFFFF) == 0xFFFF)
            continue;
        if ((id & 0xFFFF) == 0x1AF4)
            find_virtio(config);
        for (u32 bar = 0; bar < 6 && bar_count < MAX_BARS; bar++) {
            u32 value = mmio_read32(config + 0x10 + 4 * bar);
            if (value & 1)
                continue;  /* I/O BAR */
            uptr base = value & ~0xFul;
            if (base >= HOLE_START && base < HOLE_END)
                bars[bar_count++] = base;
        }
    }
}

static const u16 excluded_writes[][2] = {
    {0x3F8, 0x3FF},  /* COM1: the report */
    {0xF4, 0xF7},    /* debug exit */
    {0x64, 0x64},    /* i8042 command: 0xFE pulses reset, 0xD1 then a write to 0x60 sets it */
    {0xCF9, 0xCF9},  /* reset control */
    {0x604, 0x605},  /* PM1a control: SLP_EN powers off */
};

static int port_allowed(u16 port, u32 size, int write) {
    u32 last = (u32)port + size - 1;
    if (last > 0xFFF7)
        return 0;  /* a multi-byte access at the top of the I/O space runs past the TSS's bitmap: #GP */
    for (u32 i = 0; i < sizeof excluded_writes / sizeof excluded_writes[0]; i++) {
        if (!write && excluded_writes[i][0] != 0x3F8 && excluded_writes[i][0] != 0xF4)
            continue;  /* reads are harmless, except that reading COM1 would eat the console */
        if (port <= excluded_writes[i][1] && last >= excluded_writes[i][0])
            return 0;
    }
    return 1;
}

static const u16 device_ports[] = {
    0x20, 0x21, 0xA0, 0xA1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x60, 0x70, 0x71, 0x80, 0x402,
    0x510, 0x511, 0x514, 0x518, 0x600, 0x601, 0x602, 0x603, 0x608, 0xCF8, 0xCFC, 0xCFD, 0xCFE, 0xCFF,
};

static u16 pick_port(u64 r) {
    if (r & 1)
        return device_ports[(r >> 1) % (sizeof device_ports / sizeof device_ports[0])];
    return (u16)(r >> 1);
}

static u32 pick_size(u64 r) { return 1u << (r % 3); }  /* 1, 2 or 4 bytes */

static void port_write(u16 port, u32 size, u32 value) {
    if (size == 1) outb(port, (u8)value);
    else if (size == 2) outw(port, (u16)value);
    else outl(port, value);
}

static u32 port_read(u16 port, u32 size) {
    if (size == 1) return inb(port);
    if (size == 2) return inw(port);
    return inl(port);
}

static uptr pick_mmio(u64 r, u32 size) {
    uptr address;
    switch (r % 10) {
    case 0: case 1: case 2: case 3: case 4:
        address = ECAM_BASE + (uptr)((r >> 8) % ECAM_SIZE);
        break;
    case 5: case 6: case 7: case 8:
        if (bar_count) {
            address = bars[(r >> 8) % bar_count] + (uptr)((r >> 16) % 0x4000);
            break;
        }
        /* fall through */
    default:
        address = HOLE_START + (uptr)((r >> 8) % (HOLE_END - HOLE_START));
    }
    address &= ~(uptr)(size - 1);
    if (address >= HOLE_END)
        address = HOLE_START;
    return address;
}

static void mmio_write(uptr address, u32 size, u64 value) {
    switch (size) {
    case 1: *(volatile u8 *)address = (u8)value; break;
    case 2: *(volatile u16 *)address = (u16)value; break;
    case 4: *(volatile u32 *)address = (u32)value; break;
    default: *(volatile u64 *)address = value;
    }
}

static u64 mmio_read(uptr address, u32 size) {
    switch (size) {
    case 1: return *(volatile u8 *)address;
    case 2: return *(volatile u16 *)address;
    case 4: return *(volatile u32 *)address;
    default: return *(volatile u64 *)address;
    }
}

static u32 bswap32(u32 v) { return __builtin_bswap32(v); }

/* A hostile virtio driver: resets a device, negotiates random features, points a random queue at
   rings full of random bytes (in the scratch area, or at a random address), enables it, sets
   DRIVER_OK and kicks it. The device then parses garbage descriptors, chains and lengths. */
static int virtio_abuse(u64 r) {
    if (!virtio_count)
        return 0;
    uptr common = virtio[(r >> 8) % virtio_count].common;
    uptr notify = virtio[(r >> 8) % virtio_count].notify;
    u32 multiplier = virtio[(r >> 8) % virtio_count].multiplier;
    volatile u64 *rings = (volatile u64 *)(SCRATCH + 0x40000 + ((r >> 12) % 16) * 0x4000);
    for (u32 i = 0; i < 0x4000 / 8; i++)
        rings[i] = next();
    if (r & 0x100) {
        /* Plausible rings instead of noise, so that the device gets past the ring header checks
           to the descriptors: 8 descriptors into the scratch area with random lengths (some
           huge), flags (NEXT, WRITE, INDIRECT) and next indexes; an avail ring that offers 1-4
           of them; a used ring at zero. */
        volatile u8 *table = (volatile u8 *)rings;
        for (u32 d = 0; d < 8; d++) {
            u64 word = next();
            *(volatile u64 *)(table + d * 16) = (word & 0x8000) ? word : SCRATCH + 0x100000 + (word >> 16) % 0x100000;
            *(volatile u32 *)(table + d * 16 + 8) = (word & 0x10000) ? (u32)next() : (u32)(word >> 40) % 4096;
            *(volatile u16 *)(table + d * 16 + 12) = (u16)((word >> 20) % 8);
            *(volatile u16 *)(table + d * 16 + 14) = (u16)((word >> 24) % 9);
        }
        volatile u16 *avail = (volatile u16 *)(table + 0x1000);
        avail[0] = 0;
        avail[1] = (u16)(1 + (r >> 9) % 4);
        for (u32 k = 0; k < 4; k++)
            avail[2 + k] = (u16)(next() % 9);
        for (u32 k = 0; k < 0x200; k++)
            *(volatile u64 *)(table + 0x2000 + k * 8) = 0;
    }
    *(volatile u8 *)(common + 0x14) = 0;                       /* reset */
    *(volatile u8 *)(common + 0x14) = 1 | 2;                   /* ACKNOWLEDGE | DRIVER */
    *(volatile u32 *)(common + 0x08) = (u32)(r >> 20) % 3;     /* driver_feature_select */
    *(volatile u32 *)(common + 0x0C) = (u32)next();            /* driver_feature */
    *(volatile u8 *)(common + 0x14) = 1 | 2 | 8;               /* FEATURES_OK */
    u16 queue = (u16)((r >> 24) % 4);
    *(volatile u16 *)(common + 0x16) = queue;                  /* queue_select */
    if (r & 0x10000)
        *(volatile u16 *)(common + 0x18) = (r & 0x100) ? 8 : (u16)next();  /* queue_size */
    u64 base = ((r & 0x20000) || (r & 0x100)) ? (u64)(uptr)rings : next();
    *(volatile u64 *)(common + 0x20) = base;                   /* descriptors */
    *(volatile u64 *)(common + 0x28) = (r & 0x40000) ? base + 0x1000 : next();  /* driver (avail) */
    *(volatile u64 *)(common + 0x30) = (r & 0x80000) ? base + 0x2000 : next();  /* device (used) */
    *(volatile u16 *)(common + 0x1A) = (u16)next();            /* queue_msix_vector */
    *(volatile u16 *)(common + 0x1C) = 1;                      /* queue_enable */
    *(volatile u8 *)(common + 0x14) = 1 | 2 | 8 | 4;           /* DRIVER_OK */
    u16 notify_off = *(volatile u16 *)(common + 0x1E);
    *(volatile u16 *)(notify + (uptr)notify_off * multiplier) = queue;
    return 1;
}

/* fw_cfg DMA (QEMU's interface): a big-endian {control, length, address} the VMM reads from guest
   memory at the address written to 0x514 (high) and 0x518 (low, which starts it). Random control
   bits (read, write, skip, select), often a huge length, a target in the scratch area or anywhere. */
static void fwcfg_dma(u64 r) {
    volatile u32 *descriptor = (volatile u32 *)(SCRATCH + ((r >> 8) % 64) * 16);
    u64 target = (r & 0x10) ? SCRATCH + 0x10000 + ((r >> 20) % 0x10000) : next();
    u32 length = (r & 0x20) ? 0xFFFFFFFFu - (u32)((r >> 24) % 4096) : (u32)((r >> 24) % 0x20000);
    descriptor[0] = bswap32((u32)next());
    descriptor[1] = bswap32(length);
    descriptor[2] = bswap32((u32)(target >> 32));
    descriptor[3] = bswap32((u32)target);
    u64 address = (r & 0x40) ? (u64)(uptr)descriptor : next();
    outl(0x514, bswap32((u32)(address >> 32)));
    outl(0x518, bswap32((u32)address));
}

u32 spray(u32 operations, u32 seed, struct spray_counts *counts) {
    state = 0x9E3779B97F4A7C15ull ^ ((u64)seed << 1 | 1);
    u32 done = 0;
    find_bars();
    counts->virtio_devices = virtio_count;
    counts->bars = bar_count;
    for (u32 i = 0; i < operations; i++) {
        if (i % 4096 == 0)
            find_bars();
        u64 r = next();
        u64 value = next();
        u32 kind = (u32)(r % 100);
        r >>= 8;
        if (kind < 25) {
            u16 port = pick_port(r);
            u32 size = pick_size(r >> 20);
            if (!port_allowed(port, size, 1))
                continue;
            port_write(port, size, (u32)value);
            counts->port_writes++;
        } else if (kind < 40) {
            u16 port = pick_port(r);
            u32 size = pick_size(r >> 20);
            if (!port_allowed(port, size, 0))
                continue;
            (void)port_read(port, size);
            counts->port_reads++;
        } else if (kind < 65) {
            u32 size = 1u << ((r >> 40) % 4);
            mmio_write(pick_mmio(r, size), size, value);
            counts->mmio_writes++;
        } else if (kind < 80) {
            u32 size = 1u << ((r >> 40) % 4);
            (void)mmio_read(pick_mmio(r, size), size);
            counts->mmio_reads++;
        } else if (kind < 85) {
            fwcfg_dma(r);
            counts->dma++;
        } else if (kind < 90) {
            if (virtio_abuse(r))
                counts->virtio++;
        } else {
            /* Legacy configuration access: a random register of a random bus-0 function. */
            u32 address = 0x80000000u | (u32)((r % 32) << 11) | (u32)(((r >> 5) % 8) << 8) | (u32)((r >> 8) & 0xFC);
            outl(0xCF8, address);
            outl(0xCFC, (u32)value);
            counts->config_writes++;
        }
        done++;
    }
    return done;
}
