/* Interrupt waiting for mb-echo without IRET: KVM's instruction emulator (which runs all guest
   kernel-mode code on hosts like ours) cannot execute a protected-mode IRET. The only place
   interrupts are enabled is the `sti; hlt` below, so an interrupt can only ever interrupt that
   hlt: the handler drops the interrupt frame, restores the stack saved here and returns from
   wait_for_irq() as if hlt had finished (with IF=0, as the interrupt gate left it). */
    .code32
    .section .text
    .globl wait_for_irq, uart_isr_entry, sci_isr_entry, spurious_isr_entry

wait_for_irq:                  /* void wait_for_irq(void): call with IF=0, returns with IF=0 */
    pushl %ebp
    pushl %ebx
    pushl %esi
    pushl %edi
    movl %esp, irq_resume_esp
    sti
    hlt                        /* sti's shadow: no interrupt can slip in before the hlt */
    cli                        /* woken by something that was not one of our vectors */
    jmp resume

uart_isr_entry:
    movl irq_resume_esp, %esp  /* abandon the frame of the interrupted hlt */
    cld
    call uart_isr              /* drains the receiver, sends the LAPIC EOI */
    jmp resume

sci_isr_entry:
    movl irq_resume_esp, %esp
    cld
    call sci_isr               /* acknowledges the power button, sends the LAPIC EOI */
    jmp resume

spurious_isr_entry:            /* the LAPIC wants no EOI for its spurious vector */
    movl irq_resume_esp, %esp

resume:
    popl %edi
    popl %esi
    popl %ebx
    popl %ebp
    ret

    .section .bss
    .balign 4
irq_resume_esp:
    .long 0

    .section .note.GNU-stack, "", @progbits
