/* Fixed-width types and port/MMIO access shared by every test guest (32- and 64-bit builds). */
#ifndef TG_TYPES_H
#define TG_TYPES_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed int i32;
typedef unsigned long uptr;   /* pointer-sized in both -m32 and -m64 */

#define NULL ((void *)0)

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static inline u32 mmio_read32(uptr addr) { return *(volatile u32 *)addr; }
static inline void mmio_write32(uptr addr, u32 v) { *(volatile u32 *)addr = v; }

static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* Reads guest-physical memory with paging off or identity-mapped: the boot structures live there.
   The empty asm hides the constant address from GCC, which otherwise flags low addresses such as
   the BIOS data area as out-of-bounds accesses. */
static inline uptr phys_addr(uptr a) { __asm__("" : "+r"(a)); return a; }
static inline u8 phys_read8(uptr a) { return *(volatile const u8 *)phys_addr(a); }
static inline u16 phys_read16(uptr a) { return *(volatile const u16 *)phys_addr(a); }
static inline u32 phys_read32(uptr a) { return *(volatile const u32 *)phys_addr(a); }
static inline u64 phys_read64(uptr a) { return (u64)phys_read32(a) | ((u64)phys_read32(a + 4) << 32); }

#endif
