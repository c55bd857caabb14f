/*
 * stress_checker.c - the checker thread flipping health while readers
 * select and a writer swaps sets.
 *
 * NLISTEN listeners on 127.0.0.1 accept and close every connection; a
 * flapper (the server thread itself) closes one listener and reopens
 * another every few milliseconds, so the periodic TCP checks on the
 * checker thread keep finding backends going down and coming back.  Two
 * balancers (round robin and consistent) check every LB_CHECK_FREQUENCY
 * seconds in parallel.  Meanwhile:
 *   readers (2)  select without pause and check that the pick belongs to the
 *                set (every port in the pool is one of ours) and that a
 *                backend the walk calls ready is not disabled;
 *   writer       swaps between overlapping subsets of the pool;
 *   drainer      drains the health events the checker queues.
 * Runs LB_STRESS_SECONDS (default 3), then requires that flips happened
 * both ways and prints one summary line.  Meant for TSan and ASan.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lb.h"
#include "tap.h"

#define NLISTEN 8
#define NBAL 2

static int lfd[NLISTEN];
static uint16_t lport[NLISTEN];
static lb_balancer *bal[NBAL];
static atomic_int stop;
static atomic_int failures;
static _Atomic uint64_t selects, up_events, down_events, swaps;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Open (or reopen, on the same port) listener i; -1 on failure. */
static int listen_on(int i)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(lport[i]);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 64) < 0) {
        close(fd);
        return -1;
    }
    if (lport[i] == 0) { /* first open, before any other thread runs */
        getsockname(fd, (struct sockaddr *)&sa, &len);
        lport[i] = ntohs(sa.sin_port);
    }
    lfd[i] = fd;
    return fd;
}

/* Accept-and-close server, and the flapper: every 20 ms one open
 * listener closes and one closed listener reopens. */
static void *server(void *arg)
{
    unsigned seed = 7;
    double next_flap = now() + 0.02;

    (void)arg;
    while (!atomic_load(&stop)) {
        struct pollfd p[NLISTEN];
        int n = 0, map[NLISTEN];

        for (int i = 0; i < NLISTEN; i++)
            if (lfd[i] >= 0) {
                p[n].fd = lfd[i];
                p[n].events = POLLIN;
                map[n++] = i;
            }
        if (poll(p, (nfds_t)n, 5) > 0)
            for (int k = 0; k < n; k++)
                if (p[k].revents & POLLIN) {
                    int c;
                    while ((c = accept(lfd[map[k]], NULL, NULL)) >= 0)
                        close(c);
                }
        if (now() >= next_flap) {
            int i = (int)(rand_r(&seed) % NLISTEN);
            if (lfd[i] >= 0) {
                close(lfd[i]);
                lfd[i] = -1;
            } else if (listen_on(i) < 0) {
                lfd[i] = -1; /* port taken meanwhile: stays down */
            }
            next_flap = now() + 0.02;
        }
    }
    return NULL;
}

static int is_ours(const lb_backend *b)
{
    for (int i = 0; i < NLISTEN; i++)
        if (b->port == lport[i])
            return 1;
    return 0;
}

static void *reader(void *arg)
{
    lb_iter *it = lb_iter_new();
    uint64_t x = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    char key[32];

    while (!atomic_load(&stop)) {
        for (int k = 0; k < NBAL; k++) {
            int n, idx;
            lb_backend b;

            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            n = snprintf(key, sizeof(key), "/k/%llu",
                         (unsigned long long)(x % 1000));
            idx = lb_balancer_select(bal[k], key, (size_t)n, 64, it);
            atomic_fetch_add(&selects, 1);
            if (idx == LB_ERROR) {
                atomic_fetch_add(&failures, 1);
                fprintf(stderr, "select returned LB_ERROR\n");
            }
            /* The index may belong to a set swapped out since; only its
             * range and, when the set is still the same, its port are
             * checked. */
            if (idx >= 0 &&
                lb_balancer_generation(bal[k]) == lb_iter_head_of(it)->gen &&
                lb_balancer_backend(bal[k], (size_t)idx, &b) == LB_OK &&
                !is_ours(&b)) {
                atomic_fetch_add(&failures, 1);
                fprintf(stderr, "pick %s is not in the pool\n", b.addr);
            }
        }
    }
    lb_iter_free(it);
    return NULL;
}

static void *writer(void *arg)
{
    unsigned seed = 11;

    (void)arg;
    while (!atomic_load(&stop)) {
        lb_backend in[NLISTEN];
        size_t n = 0;
        const char *err;

        for (int i = 0; i < NLISTEN; i++) {
            char a[32];
            int len;
            if (rand_r(&seed) % 4 == 0)
                continue; /* leave some out: sets overlap */
            len = snprintf(a, sizeof(a), "127.0.0.1:%u", lport[i]);
            if (lb_backend_parse(a, (size_t)len, 1 + (uint32_t)i % 3, &in[n],
                                 &err) == LB_OK)
                n++;
        }
        for (int k = 0; k < NBAL; k++)
            if (lb_balancer_update(bal[k], in, n, NULL, NULL, &err) < 0) {
                atomic_fetch_add(&failures, 1);
                fprintf(stderr, "update failed: %s\n", err);
            }
        atomic_fetch_add(&swaps, 1);
        usleep(3000);
    }
    return NULL;
}

static void *drainer(void *arg)
{
    lb_health_event ev[64];

    (void)arg;
    while (!atomic_load(&stop)) {
        for (int k = 0; k < NBAL; k++) {
            int n = lb_balancer_events(bal[k], ev, 64);
            for (int i = 0; i < n; i++)
                atomic_fetch_add(ev[i].healthy ? &up_events : &down_events, 1);
        }
        usleep(1000);
    }
    return NULL;
}

int main(void)
{
    const char *env = getenv("LB_STRESS_SECONDS");
    double seconds = env ? atof(env) : 3.0, end;
    const int algs[NBAL] = {LB_SELECT_ROUND_ROBIN, LB_SELECT_CONSISTENT};
    pthread_t ts, tr[2], tw, td;
    const char *err;

    for (int i = 0; i < NLISTEN; i++) {
        lport[i] = 0;
        if (listen_on(i) < 0) {
            perror("listen");
            return 1;
        }
    }
    for (int k = 0; k < NBAL; k++) {
        lb_config cfg = {.selection = algs[k]};
        lb_check_config cc = {.kind = LB_CHECK_TCP, .timeout = 0.2};
        bal[k] = lb_balancer_new(&cfg, &err);
        CHECK(bal[k] != NULL);
        CHECK_EQ(lb_balancer_set_check(bal[k], &cc, &err), LB_OK);
        CHECK_EQ(lb_balancer_checks_start(bal[k], 0.01, 1, &err), LB_OK);
    }
    pthread_create(&ts, NULL, server, NULL);
    pthread_create(&tw, NULL, writer, NULL);
    pthread_create(&td, NULL, drainer, NULL);
    for (intptr_t r = 0; r < 2; r++)
        pthread_create(&tr[r], NULL, reader, (void *)(r + 1));

    end = now() + seconds;
    while (now() < end || atomic_load(&up_events) == 0 ||
           atomic_load(&down_events) == 0) {
        if (now() > end + 30)
            break; /* reported below */
        usleep(10000);
    }
    atomic_store(&stop, 1);
    for (int r = 0; r < 2; r++)
        pthread_join(tr[r], NULL);
    pthread_join(tw, NULL);
    pthread_join(td, NULL);
    pthread_join(ts, NULL);
    for (int k = 0; k < NBAL; k++) {
        lb_balancer_checks_stop(bal[k]);
        lb_balancer_free(bal[k]);
    }
    for (int i = 0; i < NLISTEN; i++)
        if (lfd[i] >= 0)
            close(lfd[i]);
    lb_quiesce();

    CHECK_EQ(atomic_load(&failures), 0);
    CHECK(atomic_load(&up_events) > 0);
    CHECK(atomic_load(&down_events) > 0);
    CHECK(atomic_load(&selects) > 1000);
    fprintf(stderr,
            "stress_checker: %llu selects, %llu swaps, %llu down and %llu up "
            "flips\n",
            (unsigned long long)atomic_load(&selects),
            (unsigned long long)atomic_load(&swaps),
            (unsigned long long)atomic_load(&down_events),
            (unsigned long long)atomic_load(&up_events));
    return tap_done("stress_checker");
}
