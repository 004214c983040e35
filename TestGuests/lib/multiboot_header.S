/* Multiboot v1 header: ELF-loaded (no address fields), asks for memory info. The linker script
   puts this section first so it sits within the first 8 KiB of the file. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003     /* bit 0: page-align modules, bit 1: memory info */
    .section .multiboot, "a"
    .balign 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .section .note.GNU-stack, "", @progbits
