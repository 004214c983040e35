/* A minimal virtio 1.x PCI driver for test guests (no interrupts: completions are polled). It
   does what Linux's virtio_pci does: finds the function through 0xCF8/0xCFC, walks the vendor
   capabilities to the common/notify/device regions, negotiates VERSION_1, and sets up queues
   whose notifications go through the notify address (an ioeventfd in Vireo). */
#ifndef TG_VIRTIO_H
#define TG_VIRTIO_H

#include "types.h"

#define VIRTQ_SIZE 8
enum { VIRTQ_NEXT = 1, VIRTQ_WRITE = 2 };
enum { VIRTIO_ACK = 1, VIRTIO_DRIVER = 2, VIRTIO_DRIVER_OK = 4, VIRTIO_FEATURES_OK = 8, VIRTIO_NEEDS_RESET = 64 };

struct virtq_desc { u64 addr; u32 len; u16 flags; u16 next; };

struct virtq {
    struct virtq_desc desc[VIRTQ_SIZE] __attribute__((aligned(16)));
    volatile u16 avail[3 + VIRTQ_SIZE] __attribute__((aligned(2)));
    volatile u32 used[2 + 2 * VIRTQ_SIZE] __attribute__((aligned(4)));
    u16 index, notify_off, used_seen;
};

struct virtio_dev {
    u32 slot;
    uptr common, notify_base, device_cfg;
    u32 notify_multiplier;
};

/* The bus-0 slot of the first function with PCI device id `device_id` (vendor 0x1af4), or 0. */
u32 virtio_find(u16 device_id);
/* Reset, ACKNOWLEDGE, DRIVER, accept only VERSION_1, FEATURES_OK. 0 on failure (printed). */
int virtio_init(struct virtio_dev *dev, u32 slot);
/* Queue `index` with VIRTQ_SIZE entries and no MSI-X vector. 0 on failure. */
int virtio_setup_queue(struct virtio_dev *dev, u16 index, struct virtq *q);
void virtio_driver_ok(struct virtio_dev *dev);
u8 virtio_status(struct virtio_dev *dev);
/* Puts the chain at `head` in the available ring and notifies the device. */
void virtq_publish(struct virtio_dev *dev, struct virtq *q, u16 head);
/* Polls for the next used element: its head (and written length), or -1 on timeout or when the
   device reported NEEDS_RESET. */
int virtq_wait_used(struct virtio_dev *dev, struct virtq *q, u32 *length);
/* virtq_publish + virtq_wait_used: 1 when the chain completed, 0 otherwise. */
int virtq_submit_and_wait(struct virtio_dev *dev, struct virtq *q, u16 head);

#endif
