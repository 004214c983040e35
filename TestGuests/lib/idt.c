/* 32-bit IDT shared by the guests that take interrupts or drop to ring 3. */
#include "idt.h"
#include "gdt.h"
#include "lib.h"

struct idt_gate {
    u16 offset_lo, selector;
    u8 zero, type_attr;
    u16 offset_hi;
} __attribute__((packed));

static struct idt_gate idt[256];
extern void (*const exception_stubs[32])(void);

void idt_set_gate(u8 vector, void (*handler)(void), u8 dpl) {
    u32 a = (u32)(uptr)handler;
    idt[vector].offset_lo = (u16)a;
    idt[vector].selector = GDT_KCODE;
    idt[vector].zero = 0;
    idt[vector].type_attr = (u8)(0x8E | ((dpl & 3) << 5));  /* present, 32-bit interrupt gate */
    idt[vector].offset_hi = (u16)(a >> 16);
}

void idt_init(void) {
    for (u32 v = 0; v < 32; v++)
        idt_set_gate((u8)v, exception_stubs[v], 0);
    struct { u16 limit; u32 base; } __attribute__((packed)) desc = { sizeof idt - 1, (u32)(uptr)idt };
    __asm__ volatile("lidt %0" : : "m"(desc));
}

void exception_report(const struct trap_frame *f);
void exception_report(const struct trap_frame *f) {
    kprintf("%s: exception %u err=0x%x eip=0x%08x cs=0x%x\n", guest_prefix, f->vector, f->error,
            f->eip, f->cs);
    guest_exit(EXIT_ON_EXCEPTION);
}
