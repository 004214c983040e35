/* AP start-up. The 16-bit part is copied to 0x8000 (SIPI vector 0x08) and must be position
   independent within its own segment: CS = 0x0800, so offsets are relative to tramp_start. */
#include "gdt.h"
#define AP_STACK_SIZE 4096
#define AP_MAX 64

    .section .text
    .code16
    .globl tramp_start, tramp_end
tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (tramp_gdt - tramp_start)    /* 0x66 prefix: full 32-bit GDT base */
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $GDT_KCODE, $ap_entry32      /* absolute: the shared GDT's code segment has base 0 */
    .balign 4
tramp_gdt:
    .word GDT_LIMIT
    .long gdt
tramp_end:

    .code32
ap_entry32:
    movw $GDT_KDATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    lock xaddl %eax, ap_ticket         /* each AP takes its own stack slot */
    cmpl $AP_MAX, %eax
    jae ap_park
    incl %eax
    shll $12, %eax
    addl $ap_stacks, %eax
    movl %eax, %esp
    call ap_main
ap_park:
    cli
    hlt
    jmp ap_park

    .section .data
    .balign 4
ap_ticket:
    .long 0

    .section .stackmem, "aw", @nobits
    .balign 16
ap_stacks:
    .space AP_STACK_SIZE * AP_MAX

    .section .note.GNU-stack, "", @progbits
