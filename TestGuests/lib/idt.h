/* 32-bit IDT: every exception prints a report line and exits; guests add their own vectors. */
#ifndef TG_IDT_H
#define TG_IDT_H
#include "types.h"

struct trap_frame {  /* as pushed by isr32.S: pusha, then vector, error code, CPU frame */
    u32 edi, esi, ebp, esp_dummy, ebx, edx, ecx, eax;
    u32 vector, error;
    u32 eip, cs, eflags;
};

void idt_init(void);                                   /* exceptions 0-31, then lidt */
void idt_set_gate(u8 vector, void (*handler)(void), u8 dpl);
#endif
