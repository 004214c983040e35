/* Local APIC and IOAPIC registers (xAPIC MMIO, paging off so physical addresses work). */
#ifndef TG_APIC_H
#define TG_APIC_H
#include "types.h"

#define LAPIC_DEFAULT_BASE 0xFEE00000u
#define IOAPIC_BASE 0xFEC00000u

enum {
    LAPIC_ID = 0x20, LAPIC_TPR = 0x80, LAPIC_EOI = 0xB0, LAPIC_SVR = 0xF0,
    LAPIC_ICR_LO = 0x300, LAPIC_ICR_HI = 0x310,
};

static inline u32 lapic_read(u32 base, u32 reg) { return mmio_read32(base + reg); }
static inline void lapic_write(u32 base, u32 reg, u32 v) { mmio_write32(base + reg, v); }
static inline u32 lapic_id(u32 base) { return lapic_read(base, LAPIC_ID) >> 24; }

static inline void ioapic_write(u32 reg, u32 v) {
    mmio_write32(IOAPIC_BASE, reg);         /* IOREGSEL */
    mmio_write32(IOAPIC_BASE + 0x10, v);    /* IOWIN */
}
static inline u32 ioapic_read(u32 reg) {
    mmio_write32(IOAPIC_BASE, reg);
    return mmio_read32(IOAPIC_BASE + 0x10);
}
#endif
