// C shim for the KVM module: Swift cannot call variadic ioctl(2) nor see some kernel macros, so this
// header exposes fixed-arity wrappers and the request numbers as constants.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <asm/kvm.h>
#include <stdint.h>
#include <stddef.h>

int ckvm_ioctl_none(int fd, unsigned long request);
int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg);
int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg);

// Request numbers (macros with _IOW/_IOR expand to expressions Swift cannot import).
extern const unsigned long CKVM_GET_API_VERSION;
extern const unsigned long CKVM_CREATE_VM;
extern const unsigned long CKVM_CHECK_EXTENSION;
extern const unsigned long CKVM_GET_VCPU_MMAP_SIZE;
extern const unsigned long CKVM_GET_SUPPORTED_CPUID;
extern const unsigned long CKVM_CREATE_VCPU;
extern const unsigned long CKVM_SET_USER_MEMORY_REGION;
extern const unsigned long CKVM_GET_DIRTY_LOG;
extern const unsigned long CKVM_SET_TSS_ADDR;
extern const unsigned long CKVM_SET_IDENTITY_MAP_ADDR;
extern const unsigned long CKVM_CREATE_IRQCHIP;
extern const unsigned long CKVM_CREATE_PIT2;
extern const unsigned long CKVM_IRQ_LINE;
extern const unsigned long CKVM_RUN;
extern const unsigned long CKVM_GET_REGS;
extern const unsigned long CKVM_SET_REGS;
extern const unsigned long CKVM_GET_SREGS;
extern const unsigned long CKVM_SET_SREGS;
extern const unsigned long CKVM_SET_CPUID2;
extern const unsigned long CKVM_GET_VCPU_EVENTS;
extern const unsigned long CKVM_SET_VCPU_EVENTS;
extern const unsigned long CKVM_GET_MP_STATE;
extern const unsigned long CKVM_SET_MP_STATE;
extern const unsigned long CKVM_GET_FPU;
extern const unsigned long CKVM_SET_FPU;
extern const unsigned long CKVM_GET_XSAVE;
extern const unsigned long CKVM_SET_XSAVE;
extern const unsigned long CKVM_GET_XCRS;
extern const unsigned long CKVM_SET_XCRS;
extern const unsigned long CKVM_GET_LAPIC;
extern const unsigned long CKVM_SET_LAPIC;
extern const unsigned long CKVM_GET_MSRS;
extern const unsigned long CKVM_SET_MSRS;
extern const unsigned long CKVM_GET_MSR_INDEX_LIST;
extern const unsigned long CKVM_SET_TSC_KHZ;
extern const unsigned long CKVM_GET_TSC_KHZ;
extern const unsigned long CKVM_GET_IRQCHIP;
extern const unsigned long CKVM_SET_IRQCHIP;
extern const unsigned long CKVM_GET_PIT2;
extern const unsigned long CKVM_SET_PIT2;
extern const unsigned long CKVM_GET_CLOCK;
extern const unsigned long CKVM_SET_CLOCK;
extern const unsigned long CKVM_IOEVENTFD;
extern const unsigned long CKVM_IRQFD;
extern const unsigned long CKVM_SET_GSI_ROUTING;

// kvm_irq_routing has a flexible array member; the entries are filled through these.
struct kvm_irq_routing *ckvm_irq_routing_alloc(uint32_t nr);
// Entry `index`: an in-kernel irqchip pin (chip: 0 PIC master, 1 PIC slave, 2 IOAPIC).
void ckvm_irq_routing_set_irqchip(struct kvm_irq_routing *routing, uint32_t index, uint32_t gsi, uint32_t chip, uint32_t pin);
// Entry `index`: an MSI message.
void ckvm_irq_routing_set_msi(struct kvm_irq_routing *routing, uint32_t index, uint32_t gsi, uint64_t address, uint32_t data);

// eventfd(2), non-blocking and close-on-exec (glibc's header is not in Swift's Glibc module).
int ckvm_eventfd(void);

// TAP devices (linux/if_tun.h) and bridges: fixed-arity wrappers over the ioctls.
// Opens /dev/net/tun and attaches to (or creates) TAP `name` (may be empty: the kernel picks one)
// with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR; the actual name is copied to `actual_name` (IFNAMSIZ
// bytes). Returns the fd or -1 with errno set.
int ckvm_tap_open(const char *name, char *actual_name);
// TUNGETFEATURES; -1 with errno on failure.
int ckvm_tap_features(int fd, unsigned int *features);
int ckvm_tap_set_vnet_header_size(int fd, int size);
// TUNSETOFFLOAD with TUN_F_* flags.
int ckvm_tap_set_offload(int fd, unsigned int flags);
// Brings interface `name` up (SIOCSIFFLAGS IFF_UP).
int ckvm_interface_up(const char *name);
// Adds interface `name` to bridge `bridge` (SIOCBRADDIF).
int ckvm_bridge_add_interface(const char *bridge, const char *name);
extern const unsigned int CKVM_TUN_F_CSUM, CKVM_TUN_F_TSO4, CKVM_TUN_F_TSO6, CKVM_TUN_F_TSO_ECN, CKVM_TUN_F_UFO;

// Accessors for the kvm_run exit union (anonymous unions import awkwardly).
struct ckvm_io_exit { uint8_t direction; uint8_t size; uint16_t port; uint32_t count; uint64_t data_offset; };
struct ckvm_mmio_exit { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write; };
struct ckvm_internal_exit { uint32_t suberror; uint32_t ndata; uint64_t data[16]; };
struct ckvm_emulation_failure { uint32_t suberror; uint32_t ndata; uint64_t flags; uint8_t insn_size; uint8_t insn_bytes[15]; };
struct ckvm_system_event { uint32_t type; uint32_t ndata; uint64_t data[16]; };

uint32_t ckvm_run_exit_reason(const struct kvm_run *run);
struct ckvm_io_exit ckvm_run_io(const struct kvm_run *run);
struct ckvm_mmio_exit ckvm_run_mmio(const struct kvm_run *run);
void ckvm_run_set_mmio_data(struct kvm_run *run, const uint8_t *data, uint32_t len);
struct ckvm_internal_exit ckvm_run_internal(const struct kvm_run *run);
struct ckvm_emulation_failure ckvm_run_emulation_failure(const struct kvm_run *run);
struct ckvm_system_event ckvm_run_system_event(const struct kvm_run *run);
uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *run);
uint32_t ckvm_run_ex_exception(const struct kvm_run *run);
void ckvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value);

// kvm_cpuid2 / kvm_msrs have flexible array members; these allocate and access them.
struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t nent);
struct kvm_cpuid_entry2 *ckvm_cpuid2_entries(struct kvm_cpuid2 *cpuid);
struct kvm_msrs *ckvm_msrs_alloc(uint32_t nmsrs);
struct kvm_msr_entry *ckvm_msrs_entries(struct kvm_msrs *msrs);
struct kvm_msr_list *ckvm_msr_list_alloc(uint32_t nmsrs);
uint32_t *ckvm_msr_list_indices(struct kvm_msr_list *list);

// Signal used to kick vCPU threads out of KVM_RUN.
int ckvm_vcpu_kick_signal(void);



// Installs an empty handler (no SA_RESTART) for the kick signal so that pthread_kill interrupts
// KVM_RUN with EINTR instead of killing the process. Idempotent.
int ckvm_install_kick_handler(void);

// Unblocks the kick signal in the calling thread: threads inherit their creator's mask, and
// e.g. libdispatch worker threads block most signals.
int ckvm_unblock_kick_signal(void);

// Names the calling thread (shown in /proc/PID/task/*/comm, top -H, gdb).
int ckvm_set_thread_name(const char *name);

// userfaultfd(2) for post-copy migration: missing pages of guest RAM are filled on demand.
// Each returns 0 (or a descriptor) on success and -errno on failure.
int ckvm_uffd_open(void);
int ckvm_uffd_register_missing(int fd, uint64_t start, uint64_t length);
int ckvm_uffd_copy(int fd, uint64_t destination, const void *source, uint64_t length);
int ckvm_uffd_zeropage(int fd, uint64_t destination, uint64_t length);
int ckvm_uffd_wake(int fd, uint64_t start, uint64_t length);
int ckvm_uffd_unregister(int fd, uint64_t start, uint64_t length);
// Reads one event: 1 with *address set for a page fault, 2 for another event, 0 when none is
// pending (the descriptor is non-blocking), -errno on failure.
int ckvm_uffd_read_fault(int fd, uint64_t *address);
#endif
