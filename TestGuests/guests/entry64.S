/* Linux 64-bit boot protocol entry (like vmlinux's startup_64): long mode, paging on with an
   identity map, RSI = boot_params. Runs probe_main(boot_params) on our own stack. */
    .code64
    .section .text.entry, "ax"
    .globl _start64
_start64:
    cli
    cld
    leaq stack_top(%rip), %rsp
    movq %rsi, %rdi
    call probe_main
    movl %eax, %edi
    call guest_exit

    .section .stackmem, "aw", @nobits
    .balign 16
    .space 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
