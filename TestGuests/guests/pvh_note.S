/* Xen PVH entry note: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 32-bit physical entry. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                    /* namesz: "Xen\0" */
    .long 4                    /* descsz */
    .long 18                   /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start
    .balign 4
    .section .note.GNU-stack, "", @progbits
