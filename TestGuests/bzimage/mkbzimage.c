/* mkbzimage: wraps a compressed kernel ELF into a synthetic x86 bzImage (boot protocol 2.15).
   There is no real-mode setup code: the image exists to test loaders that read the header,
   decompress the payload on the host and boot the inner ELF, or fall back to the bzImage's own
   64-bit entry (pm offset 0x200) when they cannot.
   Layout: [boot sector + 1 setup sector][stubs, padded][kernel_info][payload (+ LE32 size)]. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SETUP_SECTS 1
#define SETUP_SIZE ((SETUP_SECTS + 1) * 512)
#define STUBS_MAX 0x400          /* 32-bit entry at 0, 64-bit entry at 0x200 */
#define KERNEL_INFO_OFFSET STUBS_MAX
#define KERNEL_INFO_SIZE 16
#define PAYLOAD_OFFSET (KERNEL_INFO_OFFSET + 0x40)
#define FILE_MAX (256u << 20)    /* inputs are small test images; refuse anything absurd */
#define VERSION_STRING "vireo-test-probe (mkbzimage) #1"

struct buf {
    uint8_t *data;
    size_t len;
};

/* One line naming the problem (and the OS error when there is one), then exit 1. */
static void die(const char *what, const char *path) {
    int err = errno;
    fprintf(stderr, "mkbzimage: %s%s%s%s%s\n", what, path ? " " : "", path ? path : "",
            err ? ": " : "", err ? strerror(err) : "");
    exit(1);
}

static struct buf read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open", path);
    struct buf b = { NULL, 0 };
    size_t cap = 0;
    for (;;) {
        if (b.len == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > FILE_MAX) {
                errno = 0;
                die("input larger than 256 MiB:", path);
            }
            b.data = realloc(b.data, cap);
            if (!b.data)
                die("out of memory reading", path);
        }
        size_t n = fread(b.data + b.len, 1, cap - b.len, f);
        b.len += n;
        if (n == 0) {
            if (ferror(f))
                die("cannot read", path);
            break;
        }
    }
    fclose(f);
    return b;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t align_up(uint64_t v, uint32_t a) {
    uint64_t r = (v + a - 1) / a * a;
    if (r > UINT32_MAX) {
        errno = 0;
        die("image too large for a 32-bit header field", NULL);
    }
    return (uint32_t)r;
}

/* Memory the inner ELF spans from its lowest to highest loaded byte (64-bit ELF only). */
static uint64_t elf64_extent(const struct buf *elf) {
    errno = 0;
    if (elf->len < 64 || memcmp(elf->data, "\177ELF", 4) != 0 || elf->data[4] != 2)
        die("inner kernel is not an ELF64 file", NULL);
    uint64_t phoff = get32(elf->data + 32) | (uint64_t)get32(elf->data + 36) << 32;
    uint16_t phentsize = (uint16_t)(elf->data[54] | elf->data[55] << 8);
    uint16_t phnum = (uint16_t)(elf->data[56] | elf->data[57] << 8);
    if (phentsize < 56 || phoff > elf->len || (uint64_t)phnum * phentsize > elf->len - phoff)
        die("inner ELF program headers out of range", NULL);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint16_t i = 0; i < phnum; i++) {
        const uint8_t *ph = elf->data + phoff + (uint64_t)i * phentsize;
        if (get32(ph) != 1)  /* PT_LOAD */
            continue;
        uint64_t paddr = get32(ph + 24) | (uint64_t)get32(ph + 28) << 32;
        uint64_t memsz = get32(ph + 40) | (uint64_t)get32(ph + 44) << 32;
        if (paddr > UINT64_MAX - memsz)
            die("inner ELF segment wraps around", NULL);
        if (paddr < lo)
            lo = paddr;
        if (paddr + memsz > hi)
            hi = paddr + memsz;
    }
    if (hi <= lo)
        die("inner ELF has no loadable segment", NULL);
    return hi - lo;
}

static void write_header(uint8_t *img, uint32_t pm_size, uint32_t payload_len, uint32_t init_size) {
    uint8_t *h = img;
    h[0x1F1] = SETUP_SECTS;
    put32(h + 0x1F4, (pm_size + 15) / 16);     /* syssize, 16-byte units */
    put16(h + 0x1FE, 0xAA55);                   /* boot_flag */
    h[0x200] = 0xEB;                            /* jmp to the halt loop after the header */
    h[0x201] = 0x26C - 0x202;
    memcpy(h + 0x202, "HdrS", 4);
    put16(h + 0x206, 0x020F);                   /* boot protocol 2.15 */
    put16(h + 0x20E, 0x280 - 0x200);            /* kernel_version: string at 0x280 */
    h[0x211] = 0x01;                            /* loadflags: LOADED_HIGH */
    put32(h + 0x214, 0x100000);                 /* code32_start */
    put32(h + 0x22C, 0x7FFFFFFF);               /* initrd_addr_max */
    put32(h + 0x230, 0x200000);                 /* kernel_alignment */
    h[0x234] = 1;                               /* relocatable_kernel */
    h[0x235] = 21;                              /* min_alignment: 2 MiB as a power of two */
    put16(h + 0x236, 0x0001);                   /* xloadflags: XLF_KERNEL_64 */
    put32(h + 0x238, 2047);                     /* cmdline_size (excluding the NUL) */
    put32(h + 0x248, PAYLOAD_OFFSET);           /* payload_offset, from the pm code start */
    put32(h + 0x24C, payload_len);
    put64(h + 0x258, 0x1000000);                /* pref_address */
    put32(h + 0x260, init_size);
    put32(h + 0x268, KERNEL_INFO_OFFSET);       /* kernel_info_offset, from the pm code start */
    h[0x26C] = 0xF4;                            /* real-mode entry: hlt; jmp $-1 (no setup code) */
    h[0x26D] = 0xEB;
    h[0x26E] = 0xFD;
    memcpy(h + 0x280, VERSION_STRING, sizeof VERSION_STRING);
}

int main(int argc, char **argv) {
    const char *stubs_path = NULL, *inner_path = NULL, *payload_path = NULL, *out_path = NULL;
    int append_size = 0, corrupt = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--append-size"))
            append_size = 1;
        else if (!strcmp(argv[i], "--corrupt"))
            corrupt = 1;
        else if (i + 1 < argc && !strcmp(argv[i], "--stubs"))
            stubs_path = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--inner"))
            inner_path = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--payload"))
            payload_path = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--out"))
            out_path = argv[++i];
        else {
            fprintf(stderr, "usage: mkbzimage --stubs F --inner ELF --payload F --out F"
                            " [--append-size] [--corrupt]\n");
            return 2;
        }
    }
    if (!stubs_path || !inner_path || !payload_path || !out_path) {
        fprintf(stderr, "mkbzimage: --stubs, --inner, --payload and --out are required\n");
        return 2;
    }
    struct buf stubs = read_file(stubs_path), inner = read_file(inner_path);
    struct buf payload = read_file(payload_path);
    errno = 0;
    if (stubs.len <= 0x200 || stubs.len > STUBS_MAX)
        die("stubs must hold the 32-bit entry and a 64-bit entry at 0x200, within 1 KiB:", stubs_path);
    if (payload.len < 8)
        die("payload too small:", payload_path);

    /* Like the kernel's size_append: every payload ends in the LE32 uncompressed size
       (gzip's own trailer already is that). */
    uint32_t payload_len = (uint32_t)payload.len + (append_size ? 4 : 0);
    uint32_t pm_size = PAYLOAD_OFFSET + payload_len;
    uint64_t extent = elf64_extent(&inner);
    uint32_t init_size = align_up((extent > inner.len ? extent : inner.len) + pm_size, 4096);

    size_t total = SETUP_SIZE + (size_t)pm_size;
    uint8_t *img = calloc(1, total);
    if (!img)
        die("out of memory", NULL);
    write_header(img, pm_size, payload_len, init_size);
    uint8_t *pm = img + SETUP_SIZE;
    memcpy(pm, stubs.data, stubs.len);
    /* kernel_info (boot protocol 2.15): "LToP", size, size_total, setup_type_max */
    memcpy(pm + KERNEL_INFO_OFFSET, "LToP", 4);
    put32(pm + KERNEL_INFO_OFFSET + 4, KERNEL_INFO_SIZE);
    put32(pm + KERNEL_INFO_OFFSET + 8, KERNEL_INFO_SIZE);
    put32(pm + KERNEL_INFO_OFFSET + 12, 0x80000009);  /* setup_type_max: up to SETUP_RNG_SEED */
    uint8_t *p = pm + PAYLOAD_OFFSET;
    memcpy(p, payload.data, payload.len);
    if (append_size)
        put32(p + payload.len, (uint32_t)inner.len);
    if (get32(p + payload_len - 4) != inner.len)
        die("payload does not end in the inner kernel's size (use --append-size?):", payload_path);
    if (corrupt)  /* flip bytes mid-stream: decompression or its checksum must fail */
        for (uint32_t i = 0; i < 16 && payload.len / 2 + i < payload.len - 8; i++)
            p[payload.len / 2 + i] ^= 0xA5;

    FILE *f = fopen(out_path, "wb");
    if (!f)
        die("cannot create", out_path);
    if (fwrite(img, 1, total, f) != total || fclose(f) != 0)
        die("cannot write", out_path);
    return 0;
}
