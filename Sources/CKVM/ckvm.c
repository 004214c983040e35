#include "ckvm.h"
#include <sys/ioctl.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <sys/socket.h>
#include <sys/eventfd.h>

// Layout checks: the Swift side relies on these ABI sizes.
_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs size");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs size");
_Static_assert(sizeof(struct kvm_userspace_memory_region) == 32, "memory region size");
_Static_assert(sizeof(struct kvm_lapic_state) == 1024, "lapic size");
_Static_assert(offsetof(struct kvm_run, io) == 32, "kvm_run exit union offset");

int ckvm_ioctl_none(int fd, unsigned long request) { return ioctl(fd, request, 0); }
int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
int ckvm_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }

const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
const unsigned long CKVM_RUN = KVM_RUN;
const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
const unsigned long CKVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2;
const unsigned long CKVM_SET_PIT2 = KVM_SET_PIT2;
const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK;
const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
const unsigned long CKVM_IRQFD = KVM_IRQFD;
const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;

uint32_t ckvm_run_exit_reason(const struct kvm_run *run) { return run->exit_reason; }

struct ckvm_io_exit ckvm_run_io(const struct kvm_run *run) {
    struct ckvm_io_exit io = { run->io.direction, run->io.size, run->io.port, run->io.count, run->io.data_offset };
    return io;
}

struct ckvm_mmio_exit ckvm_run_mmio(const struct kvm_run *run) {
    struct ckvm_mmio_exit m;
    m.phys_addr = run->mmio.phys_addr;
    memcpy(m.data, run->mmio.data, 8);
    m.len = run->mmio.len;
    m.is_write = run->mmio.is_write;
    return m;
}

void ckvm_run_set_mmio_data(struct kvm_run *run, const uint8_t *data, uint32_t len) {
    if (len > 8) len = 8;
    memcpy(run->mmio.data, data, len);
}

struct ckvm_internal_exit ckvm_run_internal(const struct kvm_run *run) {
    struct ckvm_internal_exit e;
    memset(&e, 0, sizeof e);
    e.suberror = run->internal.suberror;
    e.ndata = run->internal.ndata;
    uint32_t n = e.ndata < 16 ? e.ndata : 16;
    memcpy(e.data, run->internal.data, n * sizeof(uint64_t));
    return e;
}

struct ckvm_emulation_failure ckvm_run_emulation_failure(const struct kvm_run *run) {
    struct ckvm_emulation_failure f;
    memset(&f, 0, sizeof f);
    f.suberror = run->emulation_failure.suberror;
    f.ndata = run->emulation_failure.ndata;
    f.flags = run->emulation_failure.flags;
    f.insn_size = run->emulation_failure.insn_size;
    if (f.insn_size > 15) f.insn_size = 15;
    memcpy(f.insn_bytes, run->emulation_failure.insn_bytes, 15);
    return f;
}

struct ckvm_system_event ckvm_run_system_event(const struct kvm_run *run) {
    struct ckvm_system_event e;
    memset(&e, 0, sizeof e);
    e.type = run->system_event.type;
    e.ndata = run->system_event.ndata;
    return e;
}

uint64_t ckvm_run_fail_entry_reason(const struct kvm_run *run) { return run->fail_entry.hardware_entry_failure_reason; }
uint32_t ckvm_run_ex_exception(const struct kvm_run *run) { return run->ex.exception; }
void ckvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value) { run->immediate_exit = value; }

struct kvm_cpuid2 *ckvm_cpuid2_alloc(uint32_t nent) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + nent * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = nent;
    return c;
}
struct kvm_cpuid_entry2 *ckvm_cpuid2_entries(struct kvm_cpuid2 *cpuid) { return cpuid->entries; }

struct kvm_msrs *ckvm_msrs_alloc(uint32_t nmsrs) {
    struct kvm_msrs *m = calloc(1, sizeof(*m) + nmsrs * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = nmsrs;
    return m;
}
struct kvm_msr_entry *ckvm_msrs_entries(struct kvm_msrs *msrs) { return msrs->entries; }

struct kvm_msr_list *ckvm_msr_list_alloc(uint32_t nmsrs) {
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + nmsrs * sizeof(uint32_t));
    if (l) l->nmsrs = nmsrs;
    return l;
}
uint32_t *ckvm_msr_list_indices(struct kvm_msr_list *list) { return list->indices; }

int ckvm_vcpu_kick_signal(void) { return SIGRTMIN + 1; }

static void ckvm_kick_handler(int sig) { (void)sig; }

int ckvm_install_kick_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ckvm_kick_handler;
    sigemptyset(&sa.sa_mask);
    return sigaction(ckvm_vcpu_kick_signal(), &sa, NULL);
}

int ckvm_unblock_kick_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, ckvm_vcpu_kick_signal());
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int ckvm_set_thread_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

struct kvm_irq_routing *ckvm_irq_routing_alloc(uint32_t nr) {
    struct kvm_irq_routing *routing = calloc(1, sizeof(*routing) + nr * sizeof(struct kvm_irq_routing_entry));
    if (routing) routing->nr = nr;
    return routing;
}

void ckvm_irq_routing_set_irqchip(struct kvm_irq_routing *routing, uint32_t index, uint32_t gsi, uint32_t chip, uint32_t pin) {
    struct kvm_irq_routing_entry *entry = &routing->entries[index];
    memset(entry, 0, sizeof(*entry));
    entry->gsi = gsi;
    entry->type = KVM_IRQ_ROUTING_IRQCHIP;
    entry->u.irqchip.irqchip = chip;
    entry->u.irqchip.pin = pin;
}

void ckvm_irq_routing_set_msi(struct kvm_irq_routing *routing, uint32_t index, uint32_t gsi, uint64_t address, uint32_t data) {
    struct kvm_irq_routing_entry *entry = &routing->entries[index];
    memset(entry, 0, sizeof(*entry));
    entry->gsi = gsi;
    entry->type = KVM_IRQ_ROUTING_MSI;
    entry->u.msi.address_lo = (uint32_t)address;
    entry->u.msi.address_hi = (uint32_t)(address >> 32);
    entry->u.msi.data = data;
}

const unsigned int CKVM_TUN_F_CSUM = TUN_F_CSUM, CKVM_TUN_F_TSO4 = TUN_F_TSO4, CKVM_TUN_F_TSO6 = TUN_F_TSO6,
    CKVM_TUN_F_TSO_ECN = TUN_F_TSO_ECN, CKVM_TUN_F_UFO = TUN_F_UFO;

int ckvm_tap_open(const char *name, char *actual_name) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &request) < 0) { int saved = errno; close(fd); errno = saved; return -1; }
    memcpy(actual_name, request.ifr_name, IFNAMSIZ);
    actual_name[IFNAMSIZ - 1] = 0;
    return fd;
}

int ckvm_tap_features(int fd, unsigned int *features) { return ioctl(fd, TUNGETFEATURES, features); }
int ckvm_tap_set_vnet_header_size(int fd, int size) { return ioctl(fd, TUNSETVNETHDRSZ, &size); }
int ckvm_tap_set_offload(int fd, unsigned int flags) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags); }

static int ckvm_control_socket(void) { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

int ckvm_interface_up(const char *name) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    int sock = ckvm_control_socket();
    if (sock < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    int result = ioctl(sock, SIOCGIFFLAGS, &request);
    if (result == 0) {
        request.ifr_flags |= IFF_UP;
        result = ioctl(sock, SIOCSIFFLAGS, &request);
    }
    int saved = errno; close(sock); errno = saved;
    return result;
}

int ckvm_bridge_add_interface(const char *bridge, const char *name) {
    if (strlen(bridge) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    unsigned int index = if_nametoindex(name);
    if (index == 0) return -1;
    int sock = ckvm_control_socket();
    if (sock < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, bridge, IFNAMSIZ - 1);
    request.ifr_ifindex = (int)index;
    int result = ioctl(sock, SIOCBRADDIF, &request);
    int saved = errno; close(sock); errno = saved;
    return result;
}

int ckvm_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

// --- userfaultfd ---------------------------------------------------------------------------

#include <linux/userfaultfd.h>
#include <sys/syscall.h>
#include <fcntl.h>

int ckvm_uffd_open(void) {
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        // Kernels that refuse the system call to this process may still hand one out through
        // /dev/userfaultfd (5.11+).
        int saved = errno;
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev < 0) return -saved;
#ifdef USERFAULTFD_IOC_NEW
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
#else
        fd = -1; errno = saved;
#endif
        saved = errno;
        close(dev);
        if (fd < 0) return -saved;
    }
    struct uffdio_api api;
    memset(&api, 0, sizeof(api));
    api.api = UFFD_API;
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int saved = errno;
        close(fd);
        return -saved;
    }
    return fd;
}

int ckvm_uffd_register_missing(int fd, uint64_t start, uint64_t length) {
    struct uffdio_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.range.start = start;
    reg.range.len = length;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    return ioctl(fd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

int ckvm_uffd_copy(int fd, uint64_t destination, const void *source, uint64_t length) {
    struct uffdio_copy copy;
    memset(&copy, 0, sizeof(copy));
    copy.dst = destination;
    copy.src = (uint64_t)(uintptr_t)source;
    copy.len = length;
    while (ioctl(fd, UFFDIO_COPY, &copy) < 0) {
        if (errno == EAGAIN && copy.copy > 0 && (uint64_t)copy.copy < length) {
            destination += (uint64_t)copy.copy; source = (const char *)source + copy.copy; length -= (uint64_t)copy.copy;
            memset(&copy, 0, sizeof(copy));
            copy.dst = destination; copy.src = (uint64_t)(uintptr_t)source; copy.len = length;
            continue;
        }
        if (errno == EINTR) continue;
        return -errno;
    }
    return 0;
}

int ckvm_uffd_zeropage(int fd, uint64_t destination, uint64_t length) {
    struct uffdio_zeropage zero;
    memset(&zero, 0, sizeof(zero));
    zero.range.start = destination;
    zero.range.len = length;
    while (ioctl(fd, UFFDIO_ZEROPAGE, &zero) < 0) {
        if (errno == EINTR) continue;
        return -errno;
    }
    return 0;
}

int ckvm_uffd_wake(int fd, uint64_t start, uint64_t length) {
    struct uffdio_range range = { .start = start, .len = length };
    return ioctl(fd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

int ckvm_uffd_unregister(int fd, uint64_t start, uint64_t length) {
    struct uffdio_range range = { .start = start, .len = length };
    return ioctl(fd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

int ckvm_uffd_read_fault(int fd, uint64_t *address) {
    struct uffd_msg message;
    ssize_t got = read(fd, &message, sizeof(message));
    if (got < 0) return errno == EAGAIN ? 0 : -errno;
    if (got != sizeof(message)) return -EIO;
    if (message.event != UFFD_EVENT_PAGEFAULT) return 2;
    *address = message.arg.pagefault.address;
    return 1;
}
