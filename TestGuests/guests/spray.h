/* mb-user's spray mode (spray.c): random, hostile accesses to everything the VMM emulates. */
#ifndef TG_SPRAY_H
#define TG_SPRAY_H

#include "types.h"

struct spray_counts {
    u32 port_writes, port_reads, mmio_writes, mmio_reads, dma, virtio, config_writes;
    u32 virtio_devices, bars;  /* found at the start */
};

/* Runs `operations` operations from `seed`; returns how many were made (skipped ones excluded). */
u32 spray(u32 operations, u32 seed, struct spray_counts *counts);

#endif
