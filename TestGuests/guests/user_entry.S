/* mb-user's 64-bit blob: entered from mb64_shim.S in long mode at CPL0 (RDI = multiboot magic,
   RSI = info). enter_user_mode() drops to ring 3 with IRETQ (64-bit IRET is handled on hosts
   whose KVM emulates kernel mode; 32-bit IRET is not) with IOPL=3 and interrupts off. */
#include "cpu64.h"
    .code64
    .section .text.entry, "ax"
    .globl _start64
_start64:
    leaq kernel_stack_top(%rip), %rsp
    call guest_main            /* guest_main(magic, info): never returns */
1:  hlt
    jmp 1b

    .section .text
    .globl enter_user_mode, kernel_stack_top
enter_user_mode:               /* void enter_user_mode(u64 user_stack_top) */
    pushq $0x3002              /* IOPL=3 set at CPL0 first: on hosts that emulate kernel mode */
    popfq                      /* IRETQ does not take IOPL from its frame (measured) */
    pushq $GDT64_UDATA         /* ss */
    pushq %rdi                 /* rsp */
    pushq $0x3002              /* rflags: IOPL=3, IF=0 */
    pushq $GDT64_UCODE         /* cs */
    leaq user_start(%rip), %rax
    pushq %rax                 /* rip */
    iretq
user_start:
    call user_main             /* never returns: it exits through the debug-exit port */
2:  jmp 2b

    .section .stackmem, "aw", @nobits
    .balign 16
    .space 16384
kernel_stack_top:

/* #BP handler for the `breakpoint` mode: count it, record the return RIP, resume. */
    .section .text
    .globl bp_handler64
bp_handler64:
    lock incq bp_count(%rip)
    pushq %rax
    movq 8(%rsp), %rax
    movq %rax, bp_rip(%rip)
    popq %rax
    iretq

    .section .bss
    .balign 8
    .globl bp_count, bp_rip
bp_count: .quad 0
bp_rip: .quad 0

    .section .note.GNU-stack, "", @progbits
