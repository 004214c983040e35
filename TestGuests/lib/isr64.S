/* 64-bit exception entry stubs: push a uniform frame and call exception_report64 (no return). */
    .code64
    .section .text

.macro EXC_NOERR n
exc64_\n:
    pushq $0
    pushq $\n
    jmp exc64_common
.endm
.macro EXC_ERR n
exc64_\n:
    pushq $\n
    jmp exc64_common
.endm

EXC_NOERR 0;  EXC_NOERR 1;  EXC_NOERR 2;  EXC_NOERR 3;  EXC_NOERR 4;  EXC_NOERR 5
EXC_NOERR 6;  EXC_NOERR 7;  EXC_ERR 8;    EXC_NOERR 9;  EXC_ERR 10;   EXC_ERR 11
EXC_ERR 12;   EXC_ERR 13;   EXC_ERR 14;   EXC_NOERR 15; EXC_NOERR 16; EXC_ERR 17
EXC_NOERR 18; EXC_NOERR 19; EXC_NOERR 20; EXC_ERR 21;   EXC_NOERR 22; EXC_NOERR 23
EXC_NOERR 24; EXC_NOERR 25; EXC_NOERR 26; EXC_NOERR 27; EXC_NOERR 28; EXC_ERR 29
EXC_ERR 30;   EXC_NOERR 31

exc64_common:
    cld
    movq %rsp, %rdi            /* -> {vector, error, rip, cs, rflags, rsp, ss} */
    andq $-16, %rsp
    call exception_report64
1:  cli
    hlt
    jmp 1b

    .section .rodata
    .balign 8
    .globl exception_stubs64
exception_stubs64:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc64_\n
    .endr

    .section .note.GNU-stack, "", @progbits
