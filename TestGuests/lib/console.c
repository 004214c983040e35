/* COM1 16550A by polling, a small printf and the debug-exit port. */
#include <stdarg.h>
#include "lib.h"

enum { UART_RBR = 0, UART_THR = 0, UART_IER = 1, UART_LCR = 3, UART_MCR = 4, UART_LSR = 5 };
enum { LSR_DR = 0x01, LSR_THRE = 0x20 };

void serial_init(void) {
    outb(COM1 + UART_IER, 0x00);
    outb(COM1 + UART_LCR, 0x80);  /* DLAB: divisor 1 = 115200 baud */
    outb(COM1 + 0, 0x01);
    outb(COM1 + 1, 0x00);
    outb(COM1 + UART_LCR, 0x03);  /* 8N1 */
    /* FCR left alone: changing the FIFO mode would drop input that arrived before boot. */
    outb(COM1 + UART_MCR, 0x03);  /* DTR, RTS */
}

void serial_putc(char c) {
    while (!(inb(COM1 + UART_LSR) & LSR_THRE))
        cpu_relax();
    outb(COM1 + UART_THR, (u8)c);
}

int serial_has_byte(void) { return (inb(COM1 + UART_LSR) & LSR_DR) != 0; }

u8 serial_getc(void) {
    while (!serial_has_byte())
        cpu_relax();
    return inb(COM1 + UART_RBR);
}

static void put_str(const char *s) {
    if (!s)
        s = "(null)";
    while (*s)
        serial_putc(*s++);
}

static void put_num(u32 v, u32 base, u32 width, char pad) {
    char buf[12];
    u32 n = 0;
    do {
        u32 d = v % base;
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v && n < sizeof buf);
    while (width > n && width-- > 0)
        serial_putc(pad);
    while (n)
        serial_putc(buf[--n]);
}

void kprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            serial_putc(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        u32 width = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9' && width < 32)
            width = width * 10 + (u32)(*fmt++ - '0');
        switch (*fmt) {
        case 's': put_str(va_arg(ap, const char *)); break;
        case 'c': serial_putc((char)va_arg(ap, int)); break;
        case 'u': put_num(va_arg(ap, u32), 10, width, pad); break;
        case 'x': put_num(va_arg(ap, u32), 16, width, pad); break;
        case 'd': {
            i32 v = va_arg(ap, i32);
            if (v < 0) {
                serial_putc('-');
                put_num(0u - (u32)v, 10, width, pad);
            } else {
                put_num((u32)v, 10, width, pad);
            }
            break;
        }
        case '%': serial_putc('%'); break;
        case '\0': va_end(ap); return;
        default: serial_putc('%'); serial_putc(*fmt); break;
        }
    }
    va_end(ap);
}

void print_line_of(const char *s, u32 max) {
    for (u32 i = 0; i < max && s[i] && s[i] != '\n'; i++) {
        char c = s[i];
        serial_putc(c >= 0x20 && c < 0x7F ? c : '.');
    }
}

void guest_exit(u32 v) {
    outl(DEBUG_EXIT_PORT, v);
    for (;;)  /* only reached when no debug-exit device is present */
        __asm__ volatile("pause");
}
