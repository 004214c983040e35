/* A 64 KiB stand-in for a UEFI firmware image, for tests of the machine Vireo builds for OVMF
 * (`vireo run --firmware FILE --efivars VARS`) that run in seconds even where guest kernel mode
 * is emulated. It starts with a firmware volume header ("_FVH" at offset 40, which makes Vireo
 * treat it as UEFI) and runs from the reset vector: real mode, then flat 32-bit protected mode,
 * where it does what OVMF does first with the chipset and the variable store, checking each step:
 *   - the host bridge is an i440FX (8086:1237) and 00:01.3 a PIIX4 PM function whose PMBA (0x40)
 *     and PMREGMISC (0x80) already enable an ACPI PM block, whose timer counts;
 *   - the variable store (an 8 KiB file: VARS_BASE below) behaves as OVMF's QemuFlashDetected
 *     requires of flash: 0x50 then a read gives the array back, 0x70 then a read gives status 0;
 *   - erasing block 1 (0x20, 0xD0) and programming "VIREO-EFI" into it byte by byte (0x10, byte),
 *     then 0xFF, reads back; an unknown command byte changes nothing.
 * Each step prints a line on COM1; the VM ends through the debug-exit port with 0x2A (status 85)
 * when every step passed, else 0x15 (43). The test then reads the programmed bytes in the file. */
    .set ROM_BASE, 0xFFFF0000
    .set VARS_BASE, 0xFFFEE000      /* 8 KiB right below this 64 KiB image */
    .set COM1, 0x3F8

    .code16
    .text
    .globl _start
_start:
/* The firmware volume header's start: zero vector, a GUID, the length, the signature. */
    .fill 16, 1, 0
    .byte 0x8d, 0x2b, 0xf1, 0xff, 0x96, 0x76, 0x8b, 0x4c, 0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50
    .quad 0x10000
    .ascii "_FVH"

    .org 0x100
entry16:
    cli
    lgdtl %cs:gdt_descriptor
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $(ROM_BASE + entry32)

    .balign 16
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF        /* 0x08: flat 32-bit code */
    .quad 0x00CF93000000FFFF        /* 0x10: flat data */
gdt_descriptor:
    .word gdt_descriptor - gdt - 1
    .long ROM_BASE + gdt

    .code32
entry32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7000, %esp               /* RAM below 1 MiB */
    xor %edi, %edi                  /* failed steps */

    /* 1. The host bridge and the PIIX4 PM function. */
    mov $0x80000000, %eax           /* 00:00.0, offset 0 */
    call config_read
    cmp $0x12378086, %eax
    mov $(ROM_BASE + msg_bridge), %esi
    call report
    mov $0x80000B00, %eax           /* 00:01.3, offset 0 */
    call config_read
    cmp $0x71138086, %eax
    mov $(ROM_BASE + msg_pm_id), %esi
    call report
    mov $0x80000B80, %eax           /* PMREGMISC */
    call config_read
    and $1, %eax
    cmp $1, %eax
    mov $(ROM_BASE + msg_pm_enabled), %esi
    call report
    mov $0x80000B40, %eax           /* PMBA: the timer is at base + 8 */
    call config_read
    and $0xFFC0, %eax
    lea 8(%eax), %edx
    in %dx, %eax
    mov %eax, %ebx
    mov $100000, %ecx
1:  loop 1b
    in %dx, %eax
    cmp %eax, %ebx
    setne %al
    cmp $1, %al
    mov $(ROM_BASE + msg_timer), %esi
    call report

    /* 2. Flash detection, as OVMF's QemuFlashDetected does it. */
    mov $VARS_BASE, %ebx
2:  movb (%ebx), %al
    cmp $0x50, %al
    je 3f
    cmp $0x70, %al
    je 3f
    test %al, %al
    jne 4f
3:  inc %ebx
    cmp $(VARS_BASE + 0x1000), %ebx
    jb 2b
4:  movb (%ebx), %cl               /* the original byte */
    movb $0x50, (%ebx)              /* clear status: a RAM would now read 0x50 */
    movb (%ebx), %al
    cmp %al, %cl
    mov $(ROM_BASE + msg_array), %esi
    call report
    movb $0x70, (%ebx)              /* read status: flash reads 0 after the clear */
    movb (%ebx), %al
    cmp $0, %al
    mov $(ROM_BASE + msg_status), %esi
    call report
    movb $0xFF, (%ebx)              /* back to the array */
    movb (%ebx), %al
    cmp %al, %cl
    mov $(ROM_BASE + msg_read_array), %esi
    call report

    /* 3. Erase block 1, program a string into it, read it back. */
    mov $(VARS_BASE + 0x1000), %ebx
    movb $0x20, (%ebx)
    movb $0xD0, (%ebx)
    movb $0xFF, (%ebx)
    cmpl $0xFFFFFFFF, 0xFFC(%ebx)
    mov $(ROM_BASE + msg_erased), %esi
    call report
    mov $(ROM_BASE + text), %esi
    mov %ebx, %edx
5:  movb (%esi), %al
    test %al, %al
    jz 6f
    movb $0x10, (%edx)
    movb %al, (%edx)
    inc %esi
    inc %edx
    jmp 5b
6:  movb $0xFF, -1(%edx)
    mov $(ROM_BASE + text), %esi
    mov %ebx, %edx
7:  movb (%esi), %al
    test %al, %al
    jz 8f
    cmpb %al, (%edx)
    jne 8f
    inc %esi
    inc %edx
    jmp 7b
8:  cmpb $0, (%esi)
    mov $(ROM_BASE + msg_programmed), %esi
    call report
    movb $0x41, 0x100(%ebx)         /* not a command: reads the array again, stores nothing */
    cmpb $0xFF, 0x100(%ebx)
    mov $(ROM_BASE + msg_plain_write), %esi
    call report

    mov $0x2A, %al
    test %edi, %edi
    jz 9f
    mov $0x15, %al
9:  out %al, $0xF4
10: hlt
    jmp 10b

/* %eax: a 0xCF8 address; returns the dword at 0xCFC. */
config_read:
    mov $0xCF8, %dx
    out %eax, %dx
    mov $0xCFC, %dx
    in %dx, %eax
    ret

/* Prints "uefi-probe: <%esi> ok" when ZF is set, else "... FAILED" and counts the failure. */
report:
    pushf
    push %esi
    mov $(ROM_BASE + msg_prefix), %esi
    call print
    pop %esi
    call print
    popf
    mov $(ROM_BASE + msg_ok), %esi
    je 1f
    inc %edi
    mov $(ROM_BASE + msg_failed), %esi
1:  call print
    ret

print:
    mov $COM1, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret

msg_prefix:     .asciz "uefi-probe: "
msg_ok:         .asciz " ok\r\n"
msg_failed:     .asciz " FAILED\r\n"
msg_bridge:     .asciz "host bridge is an i440FX"
msg_pm_id:      .asciz "00:01.3 is a PIIX4 PM function"
msg_pm_enabled: .asciz "PMREGMISC enables the ACPI PM block"
msg_timer:      .asciz "the PM timer at PMBA+8 counts"
msg_array:      .asciz "flash: 0x50 then a read gives the array"
msg_status:     .asciz "flash: 0x70 then a read gives status 0"
msg_read_array: .asciz "flash: 0xFF reads the array again"
msg_erased:     .asciz "flash: block 1 erased"
msg_programmed: .asciz "flash: block 1 programmed"
msg_plain_write: .asciz "flash: a write that is no command stores nothing"
text:           .asciz "VIREO-EFI"

    .code16
    .org 0xFFF0
reset_vector:
    jmp entry16
    .org 0x10000
