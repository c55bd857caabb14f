/*
 * checker_scale.c - the checker thread's CPU time at the same probe rate
 * with few and with many balancers: it should grow with the checks, not
 * with the balancers.
 *
 * N balancers, one backend each (one loopback listener that accepts and
 * closes, counting connections), TCP checks every N / RATE seconds, their
 * first rounds spread evenly over one period so the rate is steady at
 * RATE probes per second.  Once all run, the checker thread's CPU clock
 * is read across a window of WINDOW seconds, and the listener's count
 * says how many probes ran in it.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../tests/util.h"
#include "bench.h"
#include "lb.h"

#define RATE 2000.0
#define WINDOW 3.0

static int lfd;
static atomic_long accepted;
static atomic_bool stop;

static void *acceptor(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int fd;

        if (poll(&p, 1, 100) <= 0)
            continue;
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            atomic_fetch_add(&accepted, 1);
            close(fd);
        }
    }
    return NULL;
}

/* The checker thread's id, found by its name (tests/util.h). */
static pid_t checker_tid(void)
{
    int tid;

    checker_scan(&tid);
    return (pid_t)tid;
}

/* CPU seconds of thread `tid` of this process: Linux's per-thread CPU
 * clock id, as glibc's pthread_getcpuclockid builds it (CPUCLOCK_SCHED |
 * CPUCLOCK_PERTHREAD_MASK over the inverted tid). */
static double thread_cpu_s(pid_t tid)
{
    clockid_t id = (clockid_t)((~(unsigned)tid) << 3) | 6;
    struct timespec ts;

    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until_ns(double t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1e9),
                          .tv_nsec = (long)((uint64_t)t % 1000000000u)};

    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* Returns the checker's CPU share of one core in the window (percent). */
static double run(int n, int port, double *rate)
{
    lb_balancer **b = calloc((size_t)n, sizeof(*b));
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    lb_check_config cc = {.kind = LB_CHECK_TCP, .timeout = 1};
    double period = n / RATE, t0, cpu0, cpu1, w0, w1;
    char addr[32];
    const char *err = NULL;
    lb_backend be;
    long a0, a1;
    pid_t tid;

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    if (!b || lb_backend_parse(addr, strlen(addr), 1, &be, &err)) {
        fprintf(stderr, "setup: %s\n", err ? err : "out of memory");
        exit(1);
    }
    for (int i = 0; i < n; i++) {
        b[i] = lb_balancer_new(&cfg, &err);
        if (!b[i] || lb_balancer_update(b[i], &be, 1, NULL, NULL, &err) < 0 ||
            lb_balancer_set_check(b[i], &cc, &err) != LB_OK) {
            fprintf(stderr, "balancer %d: %s\n", i, err);
            exit(1);
        }
    }
    t0 = bench_now_ns();
    for (int i = 0; i < n; i++) {
        sleep_until_ns(t0 + i * (1e9 / RATE));
        if (lb_balancer_checks_start(b[i], period, 0, &err) != LB_OK) {
            fprintf(stderr, "start %d: %s\n", i, err);
            exit(1);
        }
    }
    tid = checker_tid();
    sleep_until_ns(t0 + period * 1e9);
    w0 = bench_now_ns();
    cpu0 = thread_cpu_s(tid);
    a0 = atomic_load(&accepted);
    sleep_until_ns(w0 + WINDOW * 1e9);
    w1 = bench_now_ns();
    cpu1 = thread_cpu_s(tid);
    a1 = atomic_load(&accepted);
    for (int i = 0; i < n; i++)
        lb_balancer_free(b[i]);
    free(b);
    *rate = (double)(a1 - a0) / ((w1 - w0) * 1e-9);
    return 100 * (cpu1 - cpu0) / ((w1 - w0) * 1e-9);
}

int main(void)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    socklen_t sl = sizeof(in);
    pthread_t thr;
    double few, many, rf, rm;
    char note[96];

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&in, sizeof(in)) < 0 ||
        listen(lfd, 4096) < 0) {
        perror("listen");
        return 1;
    }
    getsockname(lfd, (struct sockaddr *)&in, &sl);
    pthread_create(&thr, NULL, acceptor, NULL);
    few = run(2000, ntohs(in.sin_port), &rf);
    snprintf(note, sizeof(note), "%.0f probes/s, target %.0f", rf, RATE);
    bench_row("checker", "cpu_2000_balancers", few, "%", note);
    many = run(16000, ntohs(in.sin_port), &rm);
    snprintf(note, sizeof(note), "%.0f probes/s, target %.0f", rm, RATE);
    bench_row("checker", "cpu_16000_balancers", many, "%", note);
    bench_row("checker", "cpu_16000_over_2000", many / few, "x",
              "target: within 1.5x");
    atomic_store(&stop, true);
    pthread_join(thr, NULL);
    close(lfd);
    return 0;
}
