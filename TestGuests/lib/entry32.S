/* 32-bit entry shared by the multiboot and PVH guests: both arrive in flat protected mode with
   paging off and the boot-info pointer in EBX (magic in EAX for multiboot). The loader's GDT may
   be gone already (the multiboot spec says so), so load our own before touching a segment. */
#include "gdt.h"

    .section .text
    .code32
    .globl _start
_start:
    cli
    cld
    movl $bsp_stack_top, %esp
    lgdt gdt_descriptor
    ljmp $GDT_KCODE, $1f
1:  movw $GDT_KDATA, %cx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %ss
    movw %cx, %fs
    movw %cx, %gs
    movl %eax, %esi            /* keep magic and info across the bss clear */
    movl %ebx, %ebp
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl
    pushl %ebp
    pushl %esi
    call guest_main            /* guest_main(u32 magic, u32 info) returns the exit value */
    pushl %eax
    call guest_exit

    .section .data
    .balign 8
    .globl gdt
gdt:
    .quad 0                     /* null */
    .quad 0x00CF9A000000FFFF    /* 0x08 kernel code: base 0, 4 GiB, 32-bit, DPL0 */
    .quad 0x00CF92000000FFFF    /* 0x10 kernel data */
    .quad 0x00CFFA000000FFFF    /* 0x18 user code, DPL3 */
    .quad 0x00CFF2000000FFFF    /* 0x20 user data, DPL3 */
    .quad 0                     /* 0x28 TSS: filled in by guests that enter ring 3 */
    .if (. - gdt) != GDT_ENTRIES * 8
    .error "GDT_ENTRIES does not match the table"
    .endif
    .globl gdt_descriptor
gdt_descriptor:
    .word GDT_LIMIT
    .long gdt

    /* Stacks are not in .bss so the entry need not clear them (clearing is slow when CPL0 is emulated). */
    .section .stackmem, "aw", @nobits
    .balign 16
    .space 16384
bsp_stack_top:

    .section .note.GNU-stack, "", @progbits
