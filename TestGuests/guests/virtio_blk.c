/* mb-virtio: a minimal virtio 1.x PCI driver for virtio-blk, as a Linux driver would do it:
   finds 1af4:1042 through the 0xCF8/0xCFC configuration ports, walks the vendor capabilities to
   the common/notify/device regions in the BAR, negotiates VERSION_1, sets up queue 0 (size 8,
   no MSI-X vector: it polls the used ring), then reads the serial (GET_ID), the capacity and
   sector 0, writes sector 1 and flushes. Every notification goes through the notify address,
   which the VMM backs with an ioeventfd.
   "hostile" on the command line instead publishes a descriptor chain that loops onto itself and
   expects the device to report DEVICE_NEEDS_RESET (and the VMM to survive).
   "bench=N [rand] [write]" issues N 4 KiB requests (sequential or pseudo-random, reads or
   writes) one at a time, for benchmarks/virtio: the host measures its device thread's CPU time. */
#include "lib.h"
#include "multiboot.h"

const char *guest_prefix = "virtio";

#define PCI_ADDR 0xCF8
#define PCI_DATA 0xCFC
#define QUEUE_SIZE 8
#define POLL_SPINS 20000000u

/* Common configuration offsets (VIRTIO 1.2 §4.1.4.3). */
enum {
    DEVICE_FEATURE_SELECT = 0, DEVICE_FEATURE = 4, DRIVER_FEATURE_SELECT = 8, DRIVER_FEATURE = 12,
    NUM_QUEUES = 18, DEVICE_STATUS = 20, QUEUE_SELECT = 22, QUEUE_SIZE_REG = 24, QUEUE_MSIX = 26,
    QUEUE_ENABLE = 28, QUEUE_NOTIFY_OFF = 30, QUEUE_DESC = 32, QUEUE_DRIVER = 40, QUEUE_DEVICE = 48,
};
enum { ACK = 1, DRIVER = 2, DRIVER_OK = 4, FEATURES_OK = 8, NEEDS_RESET = 64 };
enum { VIRTQ_NEXT = 1, VIRTQ_WRITE = 2 };
enum { BLK_IN = 0, BLK_OUT = 1, BLK_FLUSH = 4, BLK_GET_ID = 8 };

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct blk_header { u32 type; u32 reserved; u64 sector; };

static struct desc ring_desc[QUEUE_SIZE] __attribute__((aligned(16)));
static volatile u16 ring_avail[3 + QUEUE_SIZE] __attribute__((aligned(2)));
static volatile u32 ring_used[1 + 2 * QUEUE_SIZE + 1] __attribute__((aligned(4)));
static struct blk_header header;
static u8 data[4096] __attribute__((aligned(16)));
static volatile u8 status_byte;

static uptr common, notify_base, device_cfg;
static u32 notify_multiplier;
static u16 queue_notify_off, used_seen;

static u32 pci_read32(u32 dev, u32 reg) { outl(PCI_ADDR, 0x80000000u | (dev << 11) | (reg & 0xFC)); return inl(PCI_DATA); }
static void pci_write32(u32 dev, u32 reg, u32 v) { outl(PCI_ADDR, 0x80000000u | (dev << 11) | (reg & 0xFC)); outl(PCI_DATA, v); }
static u8 cfg8(uptr off) { return *(volatile u8 *)(common + off); }
static u16 cfg16(uptr off) { return *(volatile u16 *)(common + off); }
static u32 cfg32(uptr off) { return *(volatile u32 *)(common + off); }
static void set8(uptr off, u8 v) { *(volatile u8 *)(common + off) = v; }
static void set16(uptr off, u16 v) { *(volatile u16 *)(common + off) = v; }
static void set32(uptr off, u32 v) { *(volatile u32 *)(common + off) = v; }
static void set64(uptr off, u64 v) { set32(off, (u32)v); set32(off + 4, (u32)(v >> 32)); }

static uptr bar_address(u32 dev, u32 bar) {
    u32 low = pci_read32(dev, 0x10 + 4 * bar);
    if (low & 1)
        return 0;  /* an I/O BAR: not what virtio-pci modern uses */
    if (((low >> 1) & 3) == 2 && pci_read32(dev, 0x14 + 4 * bar) != 0)
        return 0;  /* above 4 GiB: out of reach of this 32-bit guest */
    return low & ~0xFu;
}

/* Returns the slot of the first virtio-blk function, or 0 when there is none. */
static u32 find_virtio_blk(void) {
    for (u32 dev = 1; dev < 32; dev++)
        if (pci_read32(dev, 0) == 0x10421AF4u)
            return dev;
    return 0;
}

static int map_capabilities(u32 dev) {
    u32 pointer = pci_read32(dev, 0x34) & 0xFC;
    for (u32 hops = 0; pointer && hops < 48; hops++) {
        u32 word0 = pci_read32(dev, pointer);
        if ((word0 & 0xFF) == 0x09) {  /* vendor-specific: a virtio capability */
            u32 type = (word0 >> 24) & 0xFF;
            u32 bar = pci_read32(dev, pointer + 4) & 0xFF;
            uptr where = bar_address(dev, bar) + pci_read32(dev, pointer + 8);
            if (type == 1) common = where;
            if (type == 2) { notify_base = where; notify_multiplier = pci_read32(dev, pointer + 16); }
            if (type == 4) device_cfg = where;
        }
        pointer = (word0 >> 8) & 0xFC;
    }
    return common && notify_base && device_cfg;
}

static void notify_queue0(void) {
    *(volatile u16 *)(notify_base + (uptr)queue_notify_off * notify_multiplier) = 0;
}

/* Publishes the chain starting at descriptor 0 and polls the used ring for its completion. */
static int submit_and_wait(void) {
    u16 idx = ring_avail[1];
    ring_avail[2 + idx % QUEUE_SIZE] = 0;
    __asm__ volatile("" ::: "memory");
    ring_avail[1] = (u16)(idx + 1);
    notify_queue0();
    for (u32 spins = 0; spins < POLL_SPINS; spins++) {
        if ((u16)(ring_used[0] >> 16) != used_seen) {
            used_seen = (u16)(ring_used[0] >> 16);
            return 1;
        }
        if (cfg8(DEVICE_STATUS) & NEEDS_RESET)
            return 0;
        cpu_relax();
    }
    return 0;
}

static int blk_request(u32 type, u64 sector, u32 data_len, int device_writes_data) {
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status_byte = 0xFF;
    ring_desc[0] = (struct desc){ (uptr)&header, sizeof header, VIRTQ_NEXT, 1 };
    u16 status_index = 1;
    if (data_len) {
        ring_desc[1] = (struct desc){ (uptr)data, data_len, (u16)(VIRTQ_NEXT | (device_writes_data ? VIRTQ_WRITE : 0)), 2 };
        status_index = 2;
    } else {
        ring_desc[0].next = 1;
    }
    ring_desc[status_index] = (struct desc){ (uptr)&status_byte, 1, VIRTQ_WRITE, 0 };
    if (!submit_and_wait()) {
        kprintf("virtio: request %u got no completion (status 0x%x)\n", type, cfg8(DEVICE_STATUS));
        return -1;
    }
    return status_byte;
}

static int setup_device(u32 dev) {
    pci_write32(dev, 0x04, pci_read32(dev, 0x04) | 0x6);  /* memory space + bus master */
    if (!map_capabilities(dev)) {
        kprintf("virtio: capabilities incomplete (common 0x%x notify 0x%x device 0x%x)\n", common, notify_base, device_cfg);
        return 0;
    }
    set8(DEVICE_STATUS, 0);
    while (cfg8(DEVICE_STATUS) != 0)
        cpu_relax();
    set8(DEVICE_STATUS, ACK);
    set8(DEVICE_STATUS, ACK | DRIVER);
    set32(DEVICE_FEATURE_SELECT, 1);
    if (!(cfg32(DEVICE_FEATURE) & 1)) {
        kprintf("virtio: device lacks VIRTIO_F_VERSION_1\n");
        return 0;
    }
    set32(DRIVER_FEATURE_SELECT, 0);
    set32(DRIVER_FEATURE, 0);
    set32(DRIVER_FEATURE_SELECT, 1);
    set32(DRIVER_FEATURE, 1);
    set8(DEVICE_STATUS, ACK | DRIVER | FEATURES_OK);
    if (!(cfg8(DEVICE_STATUS) & FEATURES_OK)) {
        kprintf("virtio: FEATURES_OK refused\n");
        return 0;
    }
    set16(QUEUE_SELECT, 0);
    u16 max = cfg16(QUEUE_SIZE_REG);
    kprintf("virtio: num_queues=%u queue0 max size %u\n", cfg16(NUM_QUEUES), max);
    if (max < QUEUE_SIZE)
        return 0;
    set16(QUEUE_SIZE_REG, QUEUE_SIZE);
    set16(QUEUE_MSIX, 0xFFFF);
    set64(QUEUE_DESC, (uptr)ring_desc);
    set64(QUEUE_DRIVER, (uptr)ring_avail);
    set64(QUEUE_DEVICE, (uptr)ring_used);
    queue_notify_off = cfg16(QUEUE_NOTIFY_OFF);
    set16(QUEUE_ENABLE, 1);
    set8(DEVICE_STATUS, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    return 1;
}

static u32 run_hostile(void) {
    /* Descriptor 0 chains to itself: the device must stop at the queue size and flag the error. */
    ring_desc[0] = (struct desc){ (uptr)&header, sizeof header, VIRTQ_NEXT, 0 };
    submit_and_wait();
    u8 status = cfg8(DEVICE_STATUS);
    kprintf("virtio: after a looping chain, device status 0x%x\n", status);
    return (status & NEEDS_RESET) ? 0 : 0x22;
}

static u32 run_bench(u32 count, int random, int write, u64 capacity) {
    /* 4 KiB blocks, at most 2^29 of them (2 TiB): 32-bit arithmetic, no libgcc division. */
    u32 blocks = capacity >= (1ull << 32) ? (1u << 29) : (u32)(capacity >> 3);
    if (blocks == 0)
        return 0x28;
    u32 state = 12345;
    for (u32 i = 0; i < count; i++) {
        u32 block = i % blocks;
        if (random) {
            state = state * 1103515245u + 12345u;  /* an LCG is plenty to defeat read-ahead */
            block = state % blocks;
        }
        if (blk_request(write ? BLK_OUT : BLK_IN, (u64)block * 8, sizeof data, !write) != 0) {
            kprintf("virtio: bench request %u failed\n", i);
            return 0x29;
        }
    }
    kprintf("virtio: bench done n=%u %s %s\n", count, random ? "random" : "sequential", write ? "write" : "read");
    return 0;
}

u32 guest_main(u32 magic, const struct mb_info *mbi);
u32 guest_main(u32 magic, const struct mb_info *mbi) {
    serial_init();
    const char *cmdline = magic == MB_BOOT_MAGIC ? mb_cmdline(mbi) : "";
    u32 dev = find_virtio_blk();
    if (!dev) {
        kprintf("virtio: no virtio-blk on bus 0\n");
        return 0x20;
    }
    kprintf("virtio: virtio-blk at 00:%x.0\n", dev);
    if (!setup_device(dev))
        return 0x21;
    if (cmdline_has(cmdline, "hostile"))
        return run_hostile();

    u32 capacity_low = *(volatile u32 *)device_cfg, capacity_high = *(volatile u32 *)(device_cfg + 4);
    kprintf("virtio: capacity %u sectors (high %u)\n", capacity_low, capacity_high);
    u32 bench = cmdline_u32(cmdline, "bench", 0);
    if (bench)
        return run_bench(bench, cmdline_has(cmdline, "rand"), cmdline_has(cmdline, "write"),
                         (u64)capacity_low | ((u64)capacity_high << 32));
    memset(data, 0, sizeof data);
    if (blk_request(BLK_GET_ID, 0, 20, 1) != 0)
        return 0x23;
    kprintf("virtio: serial ");
    print_line_of((const char *)data, 20);
    kprintf("\n");
    if (blk_request(BLK_IN, 0, 512, 1) != 0)
        return 0x24;
    kprintf("virtio: sector 0 ");
    print_line_of((const char *)data, 32);
    kprintf("\n");
    memset(data, 0, sizeof data);
    const char *message = "written by the guest through virtio-blk";
    memcpy(data, message, str_len(message, 64));
    if (blk_request(BLK_OUT, 1, 512, 0) != 0)
        return 0x25;
    if (blk_request(BLK_FLUSH, 0, 0, 0) != 0)
        return 0x26;
    int beyond = blk_request(BLK_IN, (u64)capacity_low | ((u64)capacity_high << 32), 512, 1);
    kprintf("virtio: read past the end -> status %d\n", beyond);
    if (beyond != 1)  /* VIRTIO_BLK_S_IOERR */
        return 0x27;
    kprintf("virtio: done\n");
    return 0;
}
