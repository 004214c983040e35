/* Selectors of the GDT in entry32.S (shared by C and assembly). */
#ifndef TG_GDT_H
#define TG_GDT_H
#define GDT_KCODE 0x08
#define GDT_KDATA 0x10
#define GDT_UCODE 0x1B  /* 0x18 | RPL3 */
#define GDT_UDATA 0x23  /* 0x20 | RPL3 */
#define GDT_TSS   0x28
#define GDT_TSS_INDEX 5
#define GDT_ENTRIES 6
#define GDT_LIMIT (GDT_ENTRIES * 8 - 1)
#endif
