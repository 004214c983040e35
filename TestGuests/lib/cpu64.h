/* Long-mode GDT, TSS and IDT for 64-bit guests that drop to ring 3. */
#ifndef TG_CPU64_H
#define TG_CPU64_H

#define GDT64_KCODE 0x08
#define GDT64_KDATA 0x10
#define GDT64_UDATA 0x1B  /* 0x18 | RPL3 */
#define GDT64_UCODE 0x23  /* 0x20 | RPL3 */
#define GDT64_TSS 0x28

#ifndef __ASSEMBLER__
#include "types.h"
/* Loads the GDT (kernel selectors match mb64_shim.S, so CS needs no reload), the TSS with
   kernel_stack_top as RSP0, and an IDT whose exceptions print a report line and exit. */
void cpu64_init(uptr kernel_stack_top);
/* Points IDT vector `vector` (< 32) at `handler` (a ring-0 interrupt gate). */
void cpu64_set_gate(u32 vector, void (*handler)(void));
#endif
#endif
