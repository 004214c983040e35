/* See virtio.h. Register offsets: VIRTIO 1.2 §4.1.4.3 (common configuration). */
#include "lib.h"
#include "virtio.h"

#define PCI_ADDR 0xCF8
#define PCI_DATA 0xCFC
#define POLL_SPINS 20000000u

enum {
    DEVICE_FEATURE_SELECT = 0, DEVICE_FEATURE = 4, DRIVER_FEATURE_SELECT = 8, DRIVER_FEATURE = 12,
    NUM_QUEUES = 18, DEVICE_STATUS = 20, QUEUE_SELECT = 22, QUEUE_SIZE = 24, QUEUE_MSIX = 26,
    QUEUE_ENABLE = 28, QUEUE_NOTIFY_OFF = 30, QUEUE_DESC = 32, QUEUE_DRIVER = 40, QUEUE_DEVICE = 48,
};

static u32 pci_read32(u32 slot, u32 reg) { outl(PCI_ADDR, 0x80000000u | (slot << 11) | (reg & 0xFC)); return inl(PCI_DATA); }
static void pci_write32(u32 slot, u32 reg, u32 v) { outl(PCI_ADDR, 0x80000000u | (slot << 11) | (reg & 0xFC)); outl(PCI_DATA, v); }
static u8 cfg8(struct virtio_dev *d, uptr off) { return *(volatile u8 *)(d->common + off); }
static u16 cfg16(struct virtio_dev *d, uptr off) { return *(volatile u16 *)(d->common + off); }
static u32 cfg32(struct virtio_dev *d, uptr off) { return *(volatile u32 *)(d->common + off); }
static void set8(struct virtio_dev *d, uptr off, u8 v) { *(volatile u8 *)(d->common + off) = v; }
static void set16(struct virtio_dev *d, uptr off, u16 v) { *(volatile u16 *)(d->common + off) = v; }
static void set32(struct virtio_dev *d, uptr off, u32 v) { *(volatile u32 *)(d->common + off) = v; }
static void set64(struct virtio_dev *d, uptr off, u64 v) { set32(d, off, (u32)v); set32(d, off + 4, (u32)(v >> 32)); }

static uptr bar_address(u32 slot, u32 bar) {
    u32 low = pci_read32(slot, 0x10 + 4 * bar);
    if (low & 1)
        return 0;  /* an I/O BAR: not what virtio-pci modern uses */
    if (((low >> 1) & 3) == 2 && pci_read32(slot, 0x14 + 4 * bar) != 0)
        return 0;  /* above 4 GiB: out of reach of a 32-bit guest */
    return low & ~0xFu;
}

u32 virtio_find(u16 device_id) {
    for (u32 slot = 1; slot < 32; slot++)
        if (pci_read32(slot, 0) == (((u32)device_id << 16) | 0x1AF4u))
            return slot;
    return 0;
}

static int map_capabilities(struct virtio_dev *d) {
    u32 pointer = pci_read32(d->slot, 0x34) & 0xFC;
    for (u32 hops = 0; pointer && hops < 48; hops++) {
        u32 word0 = pci_read32(d->slot, pointer);
        if ((word0 & 0xFF) == 0x09) {  /* vendor-specific: a virtio capability */
            u32 type = (word0 >> 24) & 0xFF;
            u32 bar = pci_read32(d->slot, pointer + 4) & 0xFF;
            uptr where = bar_address(d->slot, bar) + pci_read32(d->slot, pointer + 8);
            if (type == 1) d->common = where;
            if (type == 2) { d->notify_base = where; d->notify_multiplier = pci_read32(d->slot, pointer + 16); }
            if (type == 4) d->device_cfg = where;
        }
        pointer = (word0 >> 8) & 0xFC;
    }
    return d->common && d->notify_base && d->device_cfg;
}

u8 virtio_status(struct virtio_dev *d) { return cfg8(d, DEVICE_STATUS); }

int virtio_init(struct virtio_dev *d, u32 slot) {
    d->slot = slot;
    pci_write32(slot, 0x04, pci_read32(slot, 0x04) | 0x6);  /* memory space + bus master */
    if (!map_capabilities(d)) {
        kprintf("virtio: capabilities incomplete (common 0x%x notify 0x%x device 0x%x)\n", d->common, d->notify_base, d->device_cfg);
        return 0;
    }
    set8(d, DEVICE_STATUS, 0);
    while (cfg8(d, DEVICE_STATUS) != 0)
        cpu_relax();
    set8(d, DEVICE_STATUS, VIRTIO_ACK);
    set8(d, DEVICE_STATUS, VIRTIO_ACK | VIRTIO_DRIVER);
    set32(d, DEVICE_FEATURE_SELECT, 1);
    if (!(cfg32(d, DEVICE_FEATURE) & 1)) {
        kprintf("virtio: device lacks VIRTIO_F_VERSION_1\n");
        return 0;
    }
    set32(d, DRIVER_FEATURE_SELECT, 0);
    set32(d, DRIVER_FEATURE, 0);
    set32(d, DRIVER_FEATURE_SELECT, 1);
    set32(d, DRIVER_FEATURE, 1);
    set8(d, DEVICE_STATUS, VIRTIO_ACK | VIRTIO_DRIVER | VIRTIO_FEATURES_OK);
    if (!(cfg8(d, DEVICE_STATUS) & VIRTIO_FEATURES_OK)) {
        kprintf("virtio: FEATURES_OK refused\n");
        return 0;
    }
    return 1;
}

int virtio_setup_queue(struct virtio_dev *d, u16 index, struct virtq *q) {
    set16(d, QUEUE_SELECT, index);
    u16 max = cfg16(d, QUEUE_SIZE);
    kprintf("virtio: num_queues=%u queue%u max size %u\n", cfg16(d, NUM_QUEUES), index, max);
    if (max < VIRTQ_SIZE)
        return 0;
    memset(q, 0, sizeof *q);
    q->index = index;
    set16(d, QUEUE_SIZE, VIRTQ_SIZE);
    set16(d, QUEUE_MSIX, 0xFFFF);
    set64(d, QUEUE_DESC, (uptr)q->desc);
    set64(d, QUEUE_DRIVER, (uptr)q->avail);
    set64(d, QUEUE_DEVICE, (uptr)q->used);
    q->notify_off = cfg16(d, QUEUE_NOTIFY_OFF);
    set16(d, QUEUE_ENABLE, 1);
    return 1;
}

void virtio_driver_ok(struct virtio_dev *d) {
    set8(d, DEVICE_STATUS, VIRTIO_ACK | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
}

void virtq_publish(struct virtio_dev *d, struct virtq *q, u16 head) {
    u16 idx = q->avail[1];
    q->avail[2 + idx % VIRTQ_SIZE] = head;
    __asm__ volatile("" ::: "memory");
    q->avail[1] = (u16)(idx + 1);
    /* Linux writes the 16-bit queue index to the queue's notify address. */
    *(volatile u16 *)(d->notify_base + (uptr)q->notify_off * d->notify_multiplier) = q->index;
}

int virtq_submit_and_wait(struct virtio_dev *d, struct virtq *q, u16 head) {
    virtq_publish(d, q, head);
    return virtq_wait_used(d, q, 0) >= 0;
}

int virtq_wait_used(struct virtio_dev *d, struct virtq *q, u32 *length) {
    for (u32 spins = 0; spins < POLL_SPINS; spins++) {
        if ((u16)(q->used[0] >> 16) != q->used_seen) {
            /* used ring element: u32 id, u32 len, after the 4-byte flags/idx header */
            u32 slot = 1 + 2 * (q->used_seen % VIRTQ_SIZE);
            if (length)
                *length = q->used[slot + 1];
            q->used_seen++;
            return (int)q->used[slot];
        }
        if (cfg8(d, DEVICE_STATUS) & VIRTIO_NEEDS_RESET)
            return -1;
        cpu_relax();
    }
    return -1;
}
