/* mb-virtio-net: a minimal virtio-net driver (lib/virtio.c) that exchanges raw Ethernet frames
   (ethertype 0x88b5, "local experimental") with whatever sits on the host side of the TAP.
   Default: sends one frame "hello from the guest", then waits for a frame from the host and
   prints its payload. "bench=N" instead sends N full-size (1514-byte) frames one at a time, for
   benchmarks/virtio: the host measures its CPU time per frame. "arp" instead asks who has
   10.0.2.2 (an ARP request from 0.0.0.0, as a host probing for an address does) and prints the
   first ARP reply: what a user-networking backend (passt) answers for its gateway. */
#include "lib.h"
#include "multiboot.h"
#include "virtio.h"

const char *guest_prefix = "virtio-net";

#define HEADER_BYTES 12   /* struct virtio_net_hdr_v1 (VIRTIO 1.2 §5.1.6) */
#define FRAME_BYTES 1514
#define ETHERTYPE_HI 0x88
#define ETHERTYPE_LO 0xB5

static struct virtio_dev dev;
static struct virtq rxq, txq;
static u8 tx_buffer[HEADER_BYTES + FRAME_BYTES] __attribute__((aligned(16)));
static u8 rx_buffers[VIRTQ_SIZE][HEADER_BYTES + FRAME_BYTES] __attribute__((aligned(16)));

static u32 build_frame(const char *payload, u32 length) {
    memset(tx_buffer, 0, sizeof tx_buffer);
    u8 *frame = tx_buffer + HEADER_BYTES;
    memset(frame, 0xFF, 6);                                                /* broadcast */
    frame[6] = 0x52; frame[7] = 0x54; frame[8] = 0; frame[9] = 0x12; frame[10] = 0x34; frame[11] = 0x56;
    frame[12] = ETHERTYPE_HI; frame[13] = ETHERTYPE_LO;
    u32 text = str_len(payload, 256);
    memcpy(frame + 14, payload, text);
    return HEADER_BYTES + (length > 14 + text ? length : 14 + text);
}

static int send_frame(u32 bytes) {
    txq.desc[0] = (struct virtq_desc){ (uptr)tx_buffer, bytes, 0, 0 };
    return virtq_submit_and_wait(&dev, &txq, 0);
}

u32 guest_main(u32 magic, const struct mb_info *mbi);
u32 guest_main(u32 magic, const struct mb_info *mbi) {
    serial_init();
    const char *cmdline = magic == MB_BOOT_MAGIC ? mb_cmdline(mbi) : "";
    u32 slot = virtio_find(0x1041);
    if (!slot) {
        kprintf("virtio-net: no virtio-net on bus 0\n");
        return 0x30;
    }
    kprintf("virtio-net: virtio-net at 00:%x.0\n", slot);
    if (!virtio_init(&dev, slot) || !virtio_setup_queue(&dev, 0, &rxq) || !virtio_setup_queue(&dev, 1, &txq))
        return 0x31;
    virtio_driver_ok(&dev);
    for (u16 i = 0; i < VIRTQ_SIZE; i++) {
        rxq.desc[i] = (struct virtq_desc){ (uptr)rx_buffers[i], sizeof rx_buffers[i], VIRTQ_WRITE, 0 };
        virtq_publish(&dev, &rxq, i);
    }

    u32 bench = cmdline_u32(cmdline, "bench", 0);
    if (bench) {
        u32 bytes = build_frame("vireo benchmark frame", FRAME_BYTES);
        for (u32 i = 0; i < bench; i++)
            if (!send_frame(bytes)) {
                kprintf("virtio-net: frame %u not sent (status 0x%x)\n", i, virtio_status(&dev));
                return 0x32;
            }
        kprintf("virtio-net: bench done n=%u frames of %u bytes\n", bench, FRAME_BYTES);
        return 0;
    }

    if (cmdline_has(cmdline, "arp")) {
        static const u8 mac[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
        memset(tx_buffer, 0, sizeof tx_buffer);
        u8 *frame = tx_buffer + HEADER_BYTES;
        memset(frame, 0xFF, 6);
        memcpy(frame + 6, mac, 6);
        frame[12] = 0x08; frame[13] = 0x06;                        /* ARP */
        u8 *arp = frame + 14;
        arp[0] = 0; arp[1] = 1; arp[2] = 0x08; arp[3] = 0; arp[4] = 6; arp[5] = 4;
        arp[6] = 0; arp[7] = 1;                                    /* request */
        memcpy(arp + 8, mac, 6);                                   /* sender MAC; sender IP 0.0.0.0 */
        arp[24] = 10; arp[25] = 0; arp[26] = 2; arp[27] = 2;       /* target IP */
        if (!send_frame(HEADER_BYTES + 60))
            return 0x35;
        kprintf("virtio-net: sent an arp request for 10.0.2.2\n");
        for (;;) {
            u32 length = 0;
            int head = virtq_wait_used(&dev, &rxq, &length);
            if (head < 0 || head >= VIRTQ_SIZE) {
                kprintf("virtio-net: no arp reply (status 0x%x)\n", virtio_status(&dev));
                return 0x36;
            }
            const u8 *in = rx_buffers[head] + HEADER_BYTES;
            if (length >= HEADER_BYTES + 42 && in[12] == 0x08 && in[13] == 0x06 && in[20] == 0 && in[21] == 2) {
                kprintf("virtio-net: arp reply: %u.%u.%u.%u is at %x:%x:%x:%x:%x:%x\n", in[28], in[29], in[30], in[31],
                        in[22], in[23], in[24], in[25], in[26], in[27]);
                return 0;
            }
            virtq_publish(&dev, &rxq, (u16)head);
        }
    }

    if (!send_frame(build_frame("hello from the guest", 60)))
        return 0x33;
    kprintf("virtio-net: sent a frame\n");
    for (;;) {
        u32 length = 0;
        int head = virtq_wait_used(&dev, &rxq, &length);
        if (head < 0 || head >= VIRTQ_SIZE) {
            kprintf("virtio-net: no frame from the host (status 0x%x)\n", virtio_status(&dev));
            return 0x34;
        }
        const u8 *frame = rx_buffers[head] + HEADER_BYTES;
        if (length > HEADER_BYTES + 14 && frame[12] == ETHERTYPE_HI && frame[13] == ETHERTYPE_LO) {
            kprintf("virtio-net: received ");
            print_line_of((const char *)frame + 14, length - HEADER_BYTES - 14);
            kprintf("\n");
            return 0;
        }
        virtq_publish(&dev, &rxq, (u16)head);  /* someone else's frame (IPv6 chatter): recycle */
    }
}
