/* Long-mode descriptor tables shared by 64-bit guests (see cpu64.h). */
#include "cpu64.h"
#include "lib.h"

struct tss64 {
    u32 reserved0;
    u64 rsp[3];
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3, iomap_base;
    u8 iomap[8192 + 1];  /* all ports allowed (zero bits); the last byte must be 0xFF */
} __attribute__((packed));

struct idt_gate64 {
    u16 offset_lo, selector;
    u8 ist, type_attr;
    u16 offset_mid;
    u32 offset_hi, reserved;
} __attribute__((packed));

static u64 gdt64[7] __attribute__((aligned(16))) = {
    0,
    0x00AF9B000000FFFFull,  /* 0x08 64-bit kernel code */
    0x00CF93000000FFFFull,  /* 0x10 kernel data */
    0x00CFF3000000FFFFull,  /* 0x18 user data, DPL3 */
    0x00AFFB000000FFFFull,  /* 0x20 64-bit user code, DPL3 */
    0, 0,                   /* 0x28 TSS (16 bytes) */
};
static struct tss64 tss;
static struct idt_gate64 idt64[32];
extern void (*const exception_stubs64[32])(void);

struct exc64_frame {
    u64 vector, error, rip, cs, rflags, rsp, ss;
};

void exception_report64(const struct exc64_frame *f);
void exception_report64(const struct exc64_frame *f) {
    kprintf("%s: exception %u err=0x%x rip=0x%08x cs=0x%x\n", guest_prefix, (u32)f->vector,
            (u32)f->error, (u32)f->rip, (u32)f->cs);
    guest_exit(EXIT_ON_EXCEPTION);
}

void cpu64_init(uptr kernel_stack_top) {
    tss.rsp[0] = kernel_stack_top;
    /* IOPL=3 should suffice, but on hosts whose KVM emulates kernel mode user-mode port access
       was refused until the TSS carried a permission bitmap granting every port (measured). */
    tss.iomap_base = (u16)((uptr)tss.iomap - (uptr)&tss);
    for (u32 i = 0; i < sizeof tss.iomap - 1; i++)
        tss.iomap[i] = 0;
    tss.iomap[sizeof tss.iomap - 1] = 0xFF;
    u64 base = (uptr)&tss, limit = sizeof tss - 1;
    gdt64[5] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89ull << 40) |
               (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56);
    gdt64[6] = base >> 32;
    struct { u16 limit; u64 base; } __attribute__((packed)) gd = { sizeof gdt64 - 1, (uptr)gdt64 };
    __asm__ volatile("lgdt %0" : : "m"(gd));
    __asm__ volatile("ltr %w0" : : "r"(GDT64_TSS));
    for (u32 v = 0; v < 32; v++) {
        uptr a = (uptr)exception_stubs64[v];
        idt64[v] = (struct idt_gate64){ (u16)a, GDT64_KCODE, 0, 0x8E, (u16)(a >> 16), (u32)(a >> 32), 0 };
    }
    struct { u16 limit; u64 base; } __attribute__((packed)) id = { sizeof idt64 - 1, (uptr)idt64 };
    __asm__ volatile("lidt %0" : : "m"(id));
}

void cpu64_set_gate(u32 vector, void (*handler)(void)) {
    if (vector >= 32)
        return;
    uptr a = (uptr)handler;
    idt64[vector] = (struct idt_gate64){ (u16)a, GDT64_KCODE, 0, 0x8E, (u16)(a >> 16), (u32)(a >> 32), 0 };
}
