/* mb-reset: counts boots in CMOS NVRAM byte 0x50 (survives reset), resets through the i8042 on
   the first boot and exits with the boot number on later ones. With "triple" on the command
   line it resets by a triple fault instead: an empty IDT, then an invalid opcode (#UD, then #GP
   for the missing gate, then #DF, then shutdown). */
#include "lib.h"
#include "multiboot.h"

const char *guest_prefix = "reset";

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define BOOT_COUNTER 0x50  /* first byte of the general-purpose NVRAM area */

/* If the reset is ignored: give up after both have passed (emulated CPL0 runs the loop slowly,
   native CPL0 fast; the TSC bound is about a second either way). */
#define GIVE_UP_SPINS 1000000u
#define GIVE_UP_TSC 3000000000ull

static u8 cmos_read(u8 reg) {
    outb(CMOS_INDEX, reg);
    return inb(CMOS_DATA);
}

static void cmos_write(u8 reg, u8 v) {
    outb(CMOS_INDEX, reg);
    outb(CMOS_DATA, v);
}

u32 guest_main(u32 magic, void *info);
u32 guest_main(u32 magic, void *info) {
    const char *cmdline = magic == MB_BOOT_MAGIC ? mb_cmdline((const struct mb_info *)info) : "";
    serial_init();
    u8 k = (u8)(cmos_read(BOOT_COUNTER) + 1);
    cmos_write(BOOT_COUNTER, k);
    u8 check = cmos_read(BOOT_COUNTER);
    kprintf("reset: boot #%u\n", k);
    if (check != k) {
        kprintf("reset: nvram did not keep the counter (wrote %u, read %u)\n", k, check);
        return 0x7D;
    }
    if (k != 1)
        return k;
    if (cmdline_has(cmdline, "triple")) {
        struct { u16 limit; u32 base; } __attribute__((packed)) empty = { 0, 0 };
        kprintf("reset: resetting by a triple fault\n");
        __asm__ volatile("lidt %0; ud2" : : "m"(empty));
    } else {
        kprintf("reset: resetting through the i8042\n");
        outb(0x64, 0xFE);
    }
    u64 start = rdtsc();
    for (u32 spins = 0; spins < GIVE_UP_SPINS || rdtsc() - start < GIVE_UP_TSC; spins++)
        cpu_relax();
    kprintf("reset: still running after the reset request\n");
    return 0x7C;
}
