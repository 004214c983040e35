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
#include "virtio.h"

const char *guest_prefix = "virtio";

enum { BLK_IN = 0, BLK_OUT = 1, BLK_FLUSH = 4, BLK_GET_ID = 8 };

struct blk_header { u32 type; u32 reserved; u64 sector; };

static struct virtio_dev dev;
static struct virtq queue;
static struct blk_header header;
static u8 data[4096] __attribute__((aligned(16)));
static volatile u8 status_byte;

static int blk_request(u32 type, u64 sector, u32 data_len, int device_writes_data) {
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status_byte = 0xFF;
    queue.desc[0] = (struct virtq_desc){ (uptr)&header, sizeof header, VIRTQ_NEXT, 1 };
    u16 status_index = 1;
    if (data_len) {
        queue.desc[1] = (struct virtq_desc){ (uptr)data, data_len, (u16)(VIRTQ_NEXT | (device_writes_data ? VIRTQ_WRITE : 0)), 2 };
        status_index = 2;
    } else {
        queue.desc[0].next = 1;
    }
    queue.desc[status_index] = (struct virtq_desc){ (uptr)&status_byte, 1, VIRTQ_WRITE, 0 };
    if (!virtq_submit_and_wait(&dev, &queue, 0)) {
        kprintf("virtio: request %u got no completion (status 0x%x)\n", type, virtio_status(&dev));
        return -1;
    }
    return status_byte;
}

static u32 run_hostile(void) {
    /* Descriptor 0 chains to itself: the device must stop at the queue size and flag the error. */
    queue.desc[0] = (struct virtq_desc){ (uptr)&header, sizeof header, VIRTQ_NEXT, 0 };
    virtq_submit_and_wait(&dev, &queue, 0);
    u8 status = virtio_status(&dev);
    kprintf("virtio: after a looping chain, device status 0x%x\n", status);
    return (status & VIRTIO_NEEDS_RESET) ? 0 : 0x22;
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
    u32 slot = virtio_find(0x1042);
    if (!slot) {
        kprintf("virtio: no virtio-blk on bus 0\n");
        return 0x20;
    }
    kprintf("virtio: virtio-blk at 00:%x.0\n", slot);
    if (!virtio_init(&dev, slot) || !virtio_setup_queue(&dev, 0, &queue))
        return 0x21;
    virtio_driver_ok(&dev);
    if (cmdline_has(cmdline, "hostile"))
        return run_hostile();

    u32 capacity_low = *(volatile u32 *)dev.device_cfg, capacity_high = *(volatile u32 *)(dev.device_cfg + 4);
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
