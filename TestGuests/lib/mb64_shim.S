/* Multiboot (32-bit, paging off) -> 64-bit long mode shim for guests whose CPL3 code must run
   natively: on hosts whose KVM emulates guest kernel mode, user mode runs natively only in
   64-bit mode with paging (32-bit or compatibility-mode user code is emulated too).
   Identity-maps the low 4 GiB with user-accessible 2 MiB pages, enables long mode and jumps to
   the 64-bit blob linked at BLOB64_BASE with RDI = EAX (magic) and RSI = EBX (info). */
#define BLOB64_BASE 0x110000
#define PTE_P_RW_US 0x7
#define PDE_2M (PTE_P_RW_US | 0x80)

    .section .text
    .code32
    .globl _start
_start:
    cli
    cld
    movl %eax, %edi
    movl %ebx, %esi
    lgdt shim_gdt_desc
    movl %cr4, %eax
    orl $0x20, %eax            /* PAE */
    movl %eax, %cr4
    movl $shim_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx     /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax      /* PG, PE */
    movl %eax, %cr0
    ljmp $0x08, $long_mode

    .code64
long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %edi, %edi            /* zero-extend magic and info */
    movl %esi, %esi
    movq $BLOB64_BASE, %rax
    jmp *%rax

    .section .data
    .balign 8
shim_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF   /* 0x08 64-bit kernel code */
    .quad 0x00CF93000000FFFF   /* 0x10 kernel data */
shim_gdt_desc:
    .word shim_gdt_desc - shim_gdt - 1
    .long shim_gdt

    .balign 4096
shim_pml4:
    .long shim_pdpt + PTE_P_RW_US, 0
    .fill 511, 8, 0
shim_pdpt:
    .long shim_pd + PTE_P_RW_US, 0
    .long shim_pd + 0x1000 + PTE_P_RW_US, 0
    .long shim_pd + 0x2000 + PTE_P_RW_US, 0
    .long shim_pd + 0x3000 + PTE_P_RW_US, 0
    .fill 508, 8, 0
shim_pd:                       /* 2048 x 2 MiB = 4 GiB, identity */
    .set addr, 0
    .rept 2048
    .long addr + PDE_2M, 0
    .set addr, addr + 0x200000
    .endr

    .section .note.GNU-stack, "", @progbits
