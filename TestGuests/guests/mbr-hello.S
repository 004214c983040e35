/* A boot sector for firmware-boot tests: the firmware loads it at 0x7C00 in real mode from the
 * first disk. It prints through the BIOS video service (int 10h, which SeaBIOS's serial console
 * sends to COM1), reads its disk's sector 1 with the extended read (int 13h AH=42h, as boot
 * loaders do) and prints the text found there, waits three timer ticks (the BIOS data area's
 * counter at 0x46C, which the firmware's IRQ 0 handler advances) so the console drains, and ends the VM through the debug-exit port: 0x2A (status 85) on success, 0x15 (43)
 * when the read failed. The image is 1 MiB: sector 0 this code, sector 1 the text. */
    .code16
    .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    sti
    mov %dl, boot_drive
    mov $hello, %si
    call print
    mov $dap, %si
    mov boot_drive, %dl
    mov $0x42, %ah
    int $0x13
    jc failed
    mov $0x8000, %si
    call print
    mov $0x2a, %bl
    jmp finish
failed:
    mov $readfail, %si
    call print
    mov $0x15, %bl
finish:
    mov 0x46c, %cx
    add $3, %cx
1:  hlt
    mov 0x46c, %ax
    cmp %cx, %ax
    jne 1b
    mov %bl, %al
    out %al, $0xf4
halt:
    hlt
    jmp halt

/* Prints the NUL-terminated string at %si. */
print:
    lodsb
    test %al, %al
    jz 1f
    mov $0x0e, %ah
    mov $0x0007, %bx
    push %bx
    int $0x10
    pop %bx
    jmp print
1:  ret

boot_drive: .byte 0
    .p2align 2
/* Disk address packet: 16 bytes, 1 sector, to 0000:8000, from LBA 1. */
dap: .byte 0x10, 0
    .word 1
    .word 0x8000, 0
    .quad 1
hello: .asciz "mbr-hello: booted by the firmware\r\n"
readfail: .asciz "mbr-hello: int 13h read failed\r\n"
    .org 510
    .byte 0x55, 0xaa
sector1: .asciz "mbr-hello: sector 1 read through int 13h\r\n"
    .org 1024
