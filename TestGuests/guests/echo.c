/* mb-echo: echoes COM1 input uppercased until 'q'. Default mode polls LSR.DR; "irq" mode takes
   the UART receive interrupt through IOAPIC pin 4 -> LAPIC, proving the in-kernel irqchip path.
   "acpi" (implies irq) also does what an ACPI OS does with the fixed power button: enables
   PWRBTN_EN, takes the SCI (ISA IRQ 9, level, active high), clears PWRBTN_STS and powers off by
   writing SLP_TYP=5 (Vireo's \_S5) with SLP_EN to PM1a_CNT. */
#include "lib.h"
#include "multiboot.h"
#include "idt.h"
#include "apic.h"

const char *guest_prefix = "echo";

#define UART_VECTOR 0x24
#define SPURIOUS_VECTOR 0xFF
#define UART_IRQ_PIN 4
#define SCI_VECTOR 0x29
#define SCI_IRQ_PIN 9
#define PM1_STS 0x600
#define PM1_EN 0x602
#define PM1_CNT 0x604
#define PWRBTN 0x0100
#define SLP_S5 ((5u << 10) | (1u << 13))

/* Bytes received by the ISR, consumed by the main loop. */
static volatile u8 ring[256];
static volatile u32 ring_head, ring_tail;
static volatile u32 interrupts;
static u32 column;  /* to end the echoed text with a newline before "echo: bye" */

/* Called from uart_isr_entry (echo_isr.S) with interrupts disabled. */
void uart_isr(void);
void uart_isr(void) {
    interrupts++;
    while (serial_has_byte()) {
        u8 c = inb(COM1);
        if (ring_head - ring_tail < sizeof ring) {  /* full: drop, like a UART overrun */
            ring[ring_head % sizeof ring] = c;
            ring_head++;
        }
    }
    lapic_write(LAPIC_DEFAULT_BASE, LAPIC_EOI, 0);
}

static volatile u32 power_button_presses;

/* The SCI: acknowledge the power button (write-1-to-clear) before the EOI so the level drops. */
void sci_isr(void);
void sci_isr(void) {
    u16 status = inw(PM1_STS);
    if (status & PWRBTN) {
        outw(PM1_STS, PWRBTN);
        power_button_presses++;
    }
    lapic_write(LAPIC_DEFAULT_BASE, LAPIC_EOI, 0);
}

extern void uart_isr_entry(void), sci_isr_entry(void), spurious_isr_entry(void);

static void acpi_setup(void) {
    idt_set_gate(SCI_VECTOR, sci_isr_entry, 0);
    u32 dest = lapic_id(LAPIC_DEFAULT_BASE);
    /* Level-triggered (bit 15), active high: the MADT's override for IRQ 9 says so. */
    ioapic_write(0x10 + 2 * SCI_IRQ_PIN + 1, dest << 24);
    ioapic_write(0x10 + 2 * SCI_IRQ_PIN, SCI_VECTOR | (1u << 15));
    outw(PM1_STS, 0xFFFF);  /* clear stale status */
    outw(PM1_EN, PWRBTN);
    kprintf("echo: acpi power button enabled (sci pin %u -> vector 0x%x)\n", SCI_IRQ_PIN, SCI_VECTOR);
}

static void irq_setup(void) {
    idt_init();
    idt_set_gate(UART_VECTOR, uart_isr_entry, 0);
    idt_set_gate(SPURIOUS_VECTOR, spurious_isr_entry, 0);
    outb(0x21, 0xFF);  /* mask both 8259s: the IOAPIC delivers ISA IRQ 4 */
    outb(0xA1, 0xFF);
    u32 lapic = LAPIC_DEFAULT_BASE;
    lapic_write(lapic, LAPIC_TPR, 0);
    lapic_write(lapic, LAPIC_SVR, 0x100 | SPURIOUS_VECTOR);  /* software-enable the LAPIC */
    u32 dest = lapic_id(lapic);
    /* Redirection entry: fixed delivery, physical destination, active high, edge, unmasked. */
    ioapic_write(0x10 + 2 * UART_IRQ_PIN + 1, dest << 24);
    ioapic_write(0x10 + 2 * UART_IRQ_PIN, UART_VECTOR);
    kprintf("echo: ioapic pin %u -> vector 0x%x apic %u\n", UART_IRQ_PIN, UART_VECTOR, dest);
    outb(COM1 + 4, 0x0B);  /* MCR: DTR, RTS, OUT2 (gates the UART's IRQ line on a PC) */
    outb(COM1 + 1, 0x01);  /* IER: received-data-available interrupt */
}

extern void wait_for_irq(void);

/* Interrupts stay disabled except inside wait_for_irq(), so the ring needs no other locking. */
static u8 next_byte_irq(void) {
    while (ring_tail == ring_head) {
        if (power_button_presses) {
            kprintf("echo: power button pressed: powering off\n");
            outw(PM1_CNT, (u16)SLP_S5);
            kprintf("echo: still running after S5\n");
            guest_exit(0x7B);
        }
        wait_for_irq();
    }
    u8 c = ring[ring_tail % sizeof ring];
    ring_tail++;
    return c;
}

u32 guest_main(u32 magic, const struct mb_info *mbi);
u32 guest_main(u32 magic, const struct mb_info *mbi) {
    serial_init();
    const char *cmdline = magic == MB_BOOT_MAGIC ? mb_cmdline(mbi) : "";
    int acpi = cmdline_has(cmdline, "acpi");
    int irq = acpi || cmdline_has(cmdline, "irq");
    if (irq) {
        kprintf("echo: irq mode\n");
        irq_setup();
    }
    if (acpi)
        acpi_setup();
    kprintf("echo: ready\n");
    for (;;) {
        u8 c = irq ? next_byte_irq() : serial_getc();
        if (c == 'q')
            break;
        if (c >= 'a' && c <= 'z')
            c = (u8)(c - 'a' + 'A');
        serial_putc((char)c);
        column = c == '\n' ? 0 : column + 1;
    }
    if (column)
        serial_putc('\n');
    if (irq) {
        outb(COM1 + 1, 0x00);
        kprintf("echo: interrupts=%u\n", interrupts);
    }
    kprintf("echo: bye\n");
    return 0;
}
