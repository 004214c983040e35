/* firstbyte: runs a VMM N times with its stdout (the guest's serial console) on a pipe and times,
 * from just before fork/exec (CLOCK_MONOTONIC), the first byte, chosen marker strings and the
 * exit; reads the child's peak RSS from wait4(). Used by benchmarks/vmm/run.sh.
 *
 *   firstbyte [-n N] [--kill-first] [--timeout S] [--marker STR]... [--stop-at STR]
 *             [--sample-at STR --guest-kb K [--send STR]] [--log FILE] [--stderr FILE] -- CMD...
 *
 * --kill-first  SIGKILL the child as soon as its first byte arrives (else wait for its exit)
 * --timeout S   SIGKILL the child after S seconds (reported as status=timeout)
 * --marker STR  record when STR first appears (up to 8, reported as m0_ms, m1_ms, ...)
 * --stop-at STR SIGKILL the child when STR appears on stdout or stderr (up to 4; QEMU reports a
 *               KVM emulation failure on stderr and then waits forever, a panicked Linux too)
 * --sample-at   when STR appears, read /proc/PID/status and /proc/PID/smaps: VmRSS, and the Rss
 *               and RssAnon/RssFile, and the Rss of mappings whose Size is exactly K KiB (the guest
 *               RAM mapping); then write --send
 *               to the child's stdin (its stdin is a pipe only when --sample-at is given)
 * --stderr FILE the child's stderr is captured and written there (else discarded)
 * Output: one "run" line per repetition, then "summary" lines (median, p90 nearest-rank). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MARKERS 8
#define MAX_STOPS 4
#define MAX_RUNS 1000
#define OUTPUT_CAP (16u << 20) /* guest output kept for marker search; the rest is only counted */
#define STDERR_CAP (1u << 20)

struct options {
    int runs, kill_first;
    double timeout_s;
    const char *markers[MAX_MARKERS];
    int nmarkers;
    const char *stops[MAX_STOPS];
    int nstops;
    const char *sample_at, *send, *log_path, *stderr_path;
    long guest_kb;
    char **argv;
};

struct result {
    double first_ms, end_ms, marker_ms[MAX_MARKERS];
    long maxrss_kb, vmrss_kb, rss_anon_kb, rss_file_kb, guest_rss_kb, guest_maps;
    char status[32];
    char last_line[160];
    size_t bytes;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(void) {
    fprintf(stderr, "usage: firstbyte [-n N] [--kill-first] [--timeout S] [--marker STR]... "
                    "[--stop-at STR] [--sample-at STR --guest-kb K [--send STR]] [--log FILE] "
                    "[--stderr FILE] -- CMD [ARGS...]\n");
    exit(2);
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (len < cap) break;
        if (cap >= (64u << 20)) break; /* smaps of a VMM is far smaller; stop anyway */
        cap *= 2;
        char *bigger = realloc(buf, cap + 1);
        if (!bigger) { free(buf); buf = NULL; }
        else buf = bigger;
    }
    fclose(f);
    if (buf) buf[len] = 0;
    return buf;
}

/* VmRSS, RssAnon, RssFile from status; the summed Rss of mappings whose Size equals guest_kb from smaps. */
static void sample_memory(pid_t pid, long guest_kb, struct result *r) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    char *status = read_file(path);
    if (status) {
        char *p = strstr(status, "VmRSS:");
        if (p) r->vmrss_kb = strtol(p + 6, NULL, 10);
        if ((p = strstr(status, "RssAnon:"))) r->rss_anon_kb = strtol(p + 8, NULL, 10);
        if ((p = strstr(status, "RssFile:"))) r->rss_file_kb = strtol(p + 8, NULL, 10);
        free(status);
    }
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    char *smaps = read_file(path);
    if (!smaps) return;
    long size = -1;
    r->guest_rss_kb = 0;
    for (char *line = strtok(smaps, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "Size:", 5)) size = strtol(line + 5, NULL, 10);
        else if (!strncmp(line, "Rss:", 4) && size == guest_kb) {
            r->guest_rss_kb += strtol(line + 4, NULL, 10);
            r->guest_maps++;
        }
    }
    free(smaps);
}

static void set_last_line(const char *buf, size_t len, struct result *r) {
    size_t end = len;
    while (end > 0 && (buf[end - 1] == '\n' || buf[end - 1] == '\r' || buf[end - 1] == ' ')) end--;
    size_t start = end;
    while (start > 0 && buf[start - 1] != '\n') start--;
    size_t o = 0;
    for (size_t i = start; i < end && o + 1 < sizeof r->last_line; i++) {
        char c = buf[i];
        r->last_line[o++] = (c >= 0x20 && c < 0x7F && c != '"') ? c : '.';
    }
    r->last_line[o] = 0;
}

/* Whether buf[0..len) holds one of the needles in a match that ends after offset prev. */
static int contains_any(const char *buf, size_t prev, size_t len, const char *const *needles, int n) {
    for (int i = 0; i < n; i++) {
        size_t ml = strlen(needles[i]), from = prev >= ml ? prev - ml + 1 : 0;
        if (memmem(buf + from, len - from, needles[i], ml)) return 1;
    }
    return 0;
}

static void run_once(const struct options *opt, struct result *r) {
    memset(r, 0, sizeof *r);
    r->first_ms = r->end_ms = -1;
    for (int i = 0; i < MAX_MARKERS; i++) r->marker_ms[i] = -1;
    r->vmrss_kb = r->rss_anon_kb = r->rss_file_kb = r->guest_rss_kb = -1;
    int out[2], err[2], in[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        (opt->sample_at && pipe2(in, O_CLOEXEC) < 0)) {
        perror("firstbyte: pipe");
        exit(2);
    }
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid < 0) { perror("firstbyte: fork"); exit(2); }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(out[1], 1);
        dup2(in[0] >= 0 ? in[0] : null, 0);
        dup2(err[1], 2);
        execvp(opt->argv[0], opt->argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    if (in[0] >= 0) close(in[0]);
    signal(SIGPIPE, SIG_IGN);

    char *acc = malloc(OUTPUT_CAP);
    if (!acc) { perror("firstbyte: malloc"); exit(2); }
    char *errbuf = malloc(STDERR_CAP);
    if (!errbuf) { perror("firstbyte: malloc"); exit(2); }
    size_t len = 0, errlen = 0;
    int killed = 0, timed_out = 0, sampled = 0, err_open = 1, stopping = 0;
    double deadline = t0 + opt->timeout_s * 1e3;
    for (;;) {
        double left = deadline - now_ms();
        if (left <= 0) {
            if (stopping) { kill(pid, SIGKILL); killed = 1; }
            else timed_out = 1;
            break;
        }
        struct pollfd pfd[2] = {{.fd = out[0], .events = POLLIN},
                                {.fd = err_open ? err[0] : -1, .events = POLLIN}};
        int pr = poll(pfd, 2, (int)ceil(left));
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) continue; /* the deadline check above decides */
        char chunk[4096];
        if (pfd[1].revents) {
            ssize_t n = read(err[0], chunk, sizeof chunk);
            if (n <= 0) { err_open = 0; continue; }
            size_t prev = errlen, keep = (size_t)n;
            if (keep > STDERR_CAP - errlen) keep = STDERR_CAP - errlen;
            memcpy(errbuf + errlen, chunk, keep);
            errlen += keep;
            if (!stopping && contains_any(errbuf, prev, errlen, opt->stops, opt->nstops)) {
                /* Let the child finish its report (QEMU dumps registers next), then kill. */
                stopping = 1;
                deadline = now_ms() + 300;
            }
            continue;
        }
        if (!pfd[0].revents) continue;
        ssize_t n = read(out[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; /* EOF: the child closed stdout (exited) */
        double t = now_ms() - t0;
        if (r->first_ms < 0) r->first_ms = t;
        if (opt->kill_first) { kill(pid, SIGKILL); killed = 1; r->bytes += (size_t)n; break; }
        size_t prev = len, keep = (size_t)n;
        if (keep > OUTPUT_CAP - len) keep = OUTPUT_CAP - len;
        memcpy(acc + len, chunk, keep);
        len += keep;
        r->bytes += (size_t)n;
        for (int i = 0; i < opt->nmarkers; i++)
            if (r->marker_ms[i] < 0 && contains_any(acc, prev, len, &opt->markers[i], 1))
                r->marker_ms[i] = t;
        if (opt->sample_at && !sampled && contains_any(acc, prev, len, &opt->sample_at, 1)) {
            sample_memory(pid, opt->guest_kb, r);
            sampled = 1;
            if (opt->send && write(in[1], opt->send, strlen(opt->send)) < 0)
                perror("firstbyte: write to child");
        }
        if (!stopping && contains_any(acc, prev, len, opt->stops, opt->nstops)) {
            stopping = 1; /* a panic message ends with more lines: read them, then kill */
            deadline = now_ms() + 300;
        }
    }
    if (timed_out) kill(pid, SIGKILL);
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    /* A child that closed stdout but lives on is still held to the deadline. */
    for (;;) {
        pid_t w = wait4(pid, &st, WNOHANG, &ru);
        if (w == pid || (w < 0 && errno != EINTR)) break;
        if (!killed && !timed_out && now_ms() > deadline) { kill(pid, SIGKILL); timed_out = 1; }
        usleep(500);
    }
    r->end_ms = now_ms() - t0;
    r->maxrss_kb = ru.ru_maxrss;
    if (timed_out) snprintf(r->status, sizeof r->status, "timeout");
    else if (killed) snprintf(r->status, sizeof r->status, "killed");
    else if (WIFEXITED(st)) snprintf(r->status, sizeof r->status, "exit:%d", WEXITSTATUS(st));
    else snprintf(r->status, sizeof r->status, "signal:%d", WTERMSIG(st));
    close(out[0]);
    if (in[1] >= 0) close(in[1]);
    if (opt->stderr_path) {
        /* What the child writes between our last poll and its death is read here. */
        ssize_t n;
        while (errlen < STDERR_CAP && (n = read(err[0], errbuf + errlen, STDERR_CAP - errlen)) > 0)
            errlen += (size_t)n;
        FILE *f = fopen(opt->stderr_path, "w");
        if (f) { fwrite(errbuf, 1, errlen, f); fclose(f); }
    }
    close(err[0]);
    free(errbuf);
    set_last_line(acc, len, r);
    if (opt->log_path) {
        FILE *f = fopen(opt->log_path, "w");
        if (f) { fwrite(acc, 1, len, f); fclose(f); }
    }
    free(acc);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void summarize(const char *name, const double *values, int n) {
    double *v = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    int k = 0;
    for (int i = 0; i < n; i++)
        if (values[i] >= 0) v[k++] = values[i];
    if (k == 0) { printf("summary %s n=0\n", name); free(v); return; }
    qsort(v, (size_t)k, sizeof *v, cmp_double);
    double median = k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
    int p90 = (int)ceil(0.9 * k) - 1;
    printf("summary %s n=%d median=%.3f p90=%.3f min=%.3f max=%.3f\n", name, k, median, v[p90], v[0],
           v[k - 1]);
    free(v);
}

int main(int argc, char **argv) {
    struct options opt = {.runs = 1, .timeout_s = 60, .guest_kb = -1};
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--")) { i++; break; }
        if (!strcmp(a, "--kill-first")) { opt.kill_first = 1; continue; }
        if (!next) usage();
        if (!strcmp(a, "-n")) opt.runs = atoi(next);
        else if (!strcmp(a, "--timeout")) opt.timeout_s = atof(next);
        else if (!strcmp(a, "--marker") && opt.nmarkers < MAX_MARKERS) opt.markers[opt.nmarkers++] = next;
        else if (!strcmp(a, "--stop-at") && opt.nstops < MAX_STOPS) opt.stops[opt.nstops++] = next;
        else if (!strcmp(a, "--sample-at")) opt.sample_at = next;
        else if (!strcmp(a, "--guest-kb")) opt.guest_kb = atol(next);
        else if (!strcmp(a, "--send")) opt.send = next;
        else if (!strcmp(a, "--log")) opt.log_path = next;
        else if (!strcmp(a, "--stderr")) opt.stderr_path = next;
        else usage();
        i++;
    }
    if (i >= argc || opt.runs < 1 || opt.runs > MAX_RUNS || !(opt.timeout_s > 0)) usage();
    opt.argv = argv + i;

    static struct result results[MAX_RUNS];
    static double first[MAX_RUNS], end[MAX_RUNS], rss[MAX_RUNS];
    for (int r = 0; r < opt.runs; r++) {
        struct result *res = &results[r];
        run_once(&opt, res);
        printf("run %d status=%s first_ms=%.3f end_ms=%.3f maxrss_kb=%ld bytes=%zu", r + 1, res->status,
               res->first_ms, res->end_ms, res->maxrss_kb, res->bytes);
        for (int m = 0; m < opt.nmarkers; m++) printf(" m%d_ms=%.3f", m, res->marker_ms[m]);
        if (opt.sample_at)
            printf(" vmrss_kb=%ld rss_anon_kb=%ld rss_file_kb=%ld guest_rss_kb=%ld guest_maps=%ld",
                   res->vmrss_kb, res->rss_anon_kb, res->rss_file_kb, res->guest_rss_kb, res->guest_maps);
        printf(" last=\"%s\"\n", res->last_line);
        fflush(stdout);
        first[r] = res->first_ms;
        end[r] = res->end_ms;
        rss[r] = (double)res->maxrss_kb;
    }
    summarize("first_ms", first, opt.runs);
    summarize("end_ms", end, opt.runs);
    summarize("maxrss_kb", rss, opt.runs);
    return 0;
}
