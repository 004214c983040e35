/* kvm-pio-loop: the physical limit for PIO exits on this host. A minimal VMM over /dev/kvm: one VM,
 * one vCPU, a guest loop of `out %al, $0xE0` N times, then `out` to the debug-exit port 0xF4.
 * The run loop does nothing per exit but count, so exits/second is what KVM itself allows.
 *
 *   kvm-pio-loop [--mode long3|long0|cpl3|cpl0|real] [--iters N]
 *
 * long3 (default): 64-bit long mode, identity-mapped 4-level paging; a CPL0 prelude sets IOPL=3
 *        (popfq) and irets to the loop at CPL3; the TSS's I/O bitmap grants every port. This is
 *        mb-user's mode, the only one in which guest code runs natively on hosts that emulate
 *        guest kernel mode, so it is the fair limit for mb-user's loop.
 * long0: the loop at CPL0 (on hosts that emulate guest kernel mode, the whole loop is emulated).
 * cpl3 / cpl0: 32-bit protected mode, paging off, CS/SS at DPL 3 with IOPL=3 / at DPL 0, set
 *        directly through KVM_SET_SREGS/KVM_SET_REGS.
 * real: real mode at 0x1000.
 * Prints one line: mode, iters, exits, seconds, exits/s, us/exit. Exit status 0 on success. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE (2u << 20)
#define CODE_ADDR 0x1000u
#define GDT_ADDR 0x500u
#define TSS_ADDR 0x6000u /* 0x68 bytes, then the 8 KiB I/O permission bitmap and 0xFF */
#define TSS_LIMIT (0x68u + 8192u)
#define PML4_ADDR 0x2000u /* then PDPT at 0x3000, PD at 0x4000, PT at 0x5000 */
#define LOOP_PORT 0xE0
#define EXIT_PORT 0xF4

static void die(const char *what) {
    fprintf(stderr, "kvm-pio-loop: %s: %s\n", what, strerror(errno));
    exit(2);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Flat 4 GiB segment descriptor; type is the 4-bit access type, dpl the privilege level. */
static uint64_t gdt_entry(unsigned type, unsigned dpl) {
    uint64_t d = 0xFFFFull | (0xFull << 48);                       /* limit 0xFFFFF, G=1 */
    d |= (uint64_t)(type | 0x10 | (dpl << 5) | 0x80) << 40;        /* S=1, DPL, P=1 */
    d |= (uint64_t)(0x8 | 0x4) << 52;                               /* G=1, D/B=1 */
    return d;
}

static struct kvm_segment flat_segment(uint16_t selector, unsigned type, unsigned dpl) {
    struct kvm_segment s = {0};
    s.base = 0;
    s.limit = 0xFFFFFFFF;
    s.selector = selector;
    s.type = (uint8_t)type;
    s.present = 1;
    s.dpl = (uint8_t)dpl;
    s.db = 1;
    s.s = 1;
    s.g = 1;
    return s;
}

int main(int argc, char **argv) {
    const char *mode = "long3";
    unsigned long iters = 200000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mode") && i + 1 < argc)
            mode = argv[++i];
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
            iters = strtoul(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: kvm-pio-loop [--mode cpl3|cpl0|real] [--iters N]\n");
            return 2;
        }
    }
    int real = !strcmp(mode, "real"), lm = !strncmp(mode, "long", 4);
    int cpl3 = !strcmp(mode, "cpl3") || !strcmp(mode, "long3");
    if (!real && !cpl3 && strcmp(mode, "cpl0") && strcmp(mode, "long0")) {
        fprintf(stderr, "kvm-pio-loop: unknown mode %s\n", mode);
        return 2;
    }
    if (iters == 0 || iters > 0xFFFFFFFFul) {
        fprintf(stderr, "kvm-pio-loop: iters must be 1..2^32-1\n");
        return 2;
    }

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    ioctl(vm, KVM_SET_TSS_ADDR, 0xFFFBD000ul); /* Intel needs it for real mode; ignored elsewhere */
    uint8_t *mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap guest memory");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run)) die("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");

    uint8_t *p = mem + CODE_ADDR;
    uint32_t user_rip = CODE_ADDR;
    if (lm && cpl3) {
        /* Enter CPL3 the way a guest kernel does (mb-user): popfq sets IOPL=3 at CPL0 first,
           because this host's KVM takes IOPL neither from KVM_SET_REGS at CPL3 nor from an
           IRETQ frame (measured: the first `out` then faults); then IRETQ to the user loop. */
        user_rip = CODE_ADDR + 32;
        uint8_t prelude[] = {
            0x68, 0x02, 0x30, 0x00, 0x00, 0x9D,       /* push 0x3002 ; popfq */
            0x6A, 0x23,                               /* push ss */
            0x68, 0x00, 0x00, 0x02, 0x00,             /* push rsp (0x20000) */
            0x68, 0x02, 0x30, 0x00, 0x00,             /* push rflags */
            0x6A, 0x1B,                               /* push cs */
            0x68, 0, 0, 0, 0,                         /* push rip (patched below) */
            0x48, 0xCF};                              /* iretq */
        memcpy(prelude + 21, &user_rip, 4);
        memcpy(p, prelude, sizeof prelude);
        p = mem + user_rip;
    }
    /* mov ecx, iters ; 1: out 0xE0, al ; dec ecx ; jnz 1b ; out 0xF4, al ; jmp $
       The same bytes work in 64-bit mode (FF C9, not 49, for dec ecx) and in real mode with a
       0x66 prefix on the 32-bit ops. */
    uint32_t n = (uint32_t)iters;
    if (real) *p++ = 0x66;
    *p++ = 0xB9; memcpy(p, &n, 4); p += 4;     /* mov ecx, imm32 */
    uint8_t *loop = p;
    *p++ = 0xE6; *p++ = LOOP_PORT;             /* out imm8, al */
    if (real) *p++ = 0x66;
    *p++ = 0xFF; *p++ = 0xC9;                  /* dec ecx */
    *p++ = 0x75; *p = (uint8_t)(loop - (p + 1)); p++; /* jnz loop */
    *p++ = 0x30; *p++ = 0xC0;                  /* xor al, al */
    *p++ = 0xE6; *p++ = EXIT_PORT;             /* out 0xF4, al */
    *p++ = 0xEB; *p++ = 0xFE;                  /* jmp $ */

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
    struct kvm_regs regs = {0};
    regs.rflags = 0x2;
    if (real) {
        sregs.cs.base = 0; sregs.cs.selector = 0;
        regs.rip = CODE_ADDR;
    } else {
        /* GDT: null, kernel code 0x08, kernel data 0x10, user code 0x1b, user data 0x23, TSS 0x28
           (two slots). */
        uint64_t *gdt = (uint64_t *)(mem + GDT_ADDR);
        gdt[0] = 0;
        uint64_t lbit = 1ull << 53, dbit = 1ull << 54; /* 64-bit code segments: L=1, D=0 */
        gdt[1] = lm ? (gdt_entry(0xB, 0) & ~dbit) | lbit : gdt_entry(0xB, 0);
        gdt[2] = gdt_entry(0x3, 0);
        gdt[3] = lm ? (gdt_entry(0xB, 3) & ~dbit) | lbit : gdt_entry(0xB, 3);
        gdt[4] = gdt_entry(0x3, 3);
        /* Busy TSS (32-bit, or 64-bit in long mode: same type code) whose I/O permission bitmap
           grants every port: in long mode this host's KVM refuses CPL3 port access with IOPL=3
           alone (measured, as mb-user found); the 32-bit modes are content with IOPL=3. */
        gdt[5] = (uint64_t)TSS_LIMIT | ((uint64_t)TSS_ADDR << 16) | (0x8Bull << 40);
        gdt[6] = 0; /* upper half of the 16-byte 64-bit TSS descriptor */
        uint32_t *tss = (uint32_t *)(mem + TSS_ADDR);
        tss[1] = 0x1F000; tss[2] = 0x10; /* esp0/ss0 (32-bit) or the low half of rsp0 (64-bit) */
        *(uint16_t *)(mem + TSS_ADDR + 0x66) = 0x68;
        mem[TSS_ADDR + TSS_LIMIT] = 0xFF;
        sregs.gdt.base = GDT_ADDR; sregs.gdt.limit = 7 * 8 - 1;
        unsigned dpl = cpl3 && !lm ? 3 : 0; /* long3 starts at CPL0 and irets to CPL3 */
        uint16_t cs = dpl ? 0x1B : 0x08, ds = dpl ? 0x23 : 0x10;
        sregs.cs = flat_segment(cs, 0xB, dpl);
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_segment(ds, 0x3, dpl);
        struct kvm_segment tr = {.base = TSS_ADDR, .limit = TSS_LIMIT, .selector = 0x28, .type = 0xB,
                                 .present = 1};
        sregs.tr = tr;
        sregs.cr0 = 0x11; /* PE, ET; paging off */
        if (lm) {
            /* Identity map of the first 2 MiB, user-accessible 4 KiB pages (P, RW, US). */
            uint64_t *pml4 = (uint64_t *)(mem + PML4_ADDR), *pdpt = pml4 + 512, *pd = pdpt + 512,
                     *pt = pd + 512;
            pml4[0] = (PML4_ADDR + 0x1000) | 0x7;
            pdpt[0] = (PML4_ADDR + 0x2000) | 0x7;
            pd[0] = (PML4_ADDR + 0x3000) | 0x7;
            for (uint64_t i = 0; i < 512; i++) pt[i] = (i << 12) | 0x7;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = 0x20;                              /* PAE */
            sregs.efer = 0x500;                            /* LME, LMA */
            sregs.cr0 = 0x80000011;                        /* PG, ET, PE */
            sregs.cs.l = 1;
            sregs.cs.db = 0;
        }
        regs.rip = CODE_ADDR;
        regs.rsp = dpl ? 0x20000 : 0x1F000;
        regs.rflags = 0x3002; /* IOPL=3, IF=0 */
    }
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

    unsigned long exits = 0;
    double start = now();
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            die("KVM_RUN");
        }
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "kvm-pio-loop: unexpected exit reason %u (after %lu io exits)",
                    run->exit_reason, exits);
            if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR)
                fprintf(stderr, ", internal error suberror %u", run->internal.suberror);
            fprintf(stderr, "\n");
            return 3;
        }
        exits++;
        if (run->io.port == EXIT_PORT) break;
    }
    double secs = now() - start;
    if (exits != iters + 1) {
        fprintf(stderr, "kvm-pio-loop: expected %lu exits, saw %lu\n", iters + 1, exits);
        return 3;
    }
    struct kvm_sregs after;
    unsigned cpl = 0;
    if (ioctl(vcpu, KVM_GET_SREGS, &after) == 0) cpl = after.cs.dpl;
    printf("mode=%s cpl=%u iters=%lu exits=%lu seconds=%.6f exits_per_s=%.0f us_per_exit=%.3f\n",
           mode, real ? 0 : cpl, iters, exits, secs, (double)exits / secs, secs * 1e6 / (double)exits);
    return 0;
}
