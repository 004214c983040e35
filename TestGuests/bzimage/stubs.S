/* Protected-mode part of the synthetic bzImages: the bzImage's own entries, used only when a
   loader does not (or cannot) decompress the payload itself. Both are position independent:
   a loader may place the bzImage anywhere (relocatable, kernel_alignment 2 MiB).
   offset 0x000: 32-bit entry (code32_start), prints and exits with V=6
   offset 0x200: 64-bit entry (startup_64),   prints and exits with V=7 */
#define COM1 0x3F8
#define DEBUG_EXIT 0xF4

.macro PRINT_LOOP reg
1:  movb (\reg), %cl
    testb %cl, %cl
    jz 3f
2:  movw $(COM1 + 5), %dx
    inb %dx, %al
    testb $0x20, %al
    jz 2b
    movw $COM1, %dx
    movb %cl, %al
    outb %al, %dx
    inc \reg
    jmp 1b
3:
.endm

    .section .text
    .code32
entry32:
    cli
    call 0f
0:  popl %esi
    addl $(msg32 - 0b), %esi
    PRINT_LOOP %esi
    movl $6, %eax
    outl %eax, $DEBUG_EXIT
4:  hlt
    jmp 4b
msg32:
    .asciz "bzimage: fallback 32-bit entry\n"

    .org 0x200, 0xCC
    .code64
entry64:
    cli
    leaq msg64(%rip), %rsi
    PRINT_LOOP %rsi
    movl $7, %eax
    outl %eax, $DEBUG_EXIT
5:  hlt
    jmp 5b
msg64:
    .asciz "bzimage: fallback 64-bit entry\n"

    .section .note.GNU-stack, "", @progbits
