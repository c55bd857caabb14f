/*
 * soak.c - the long, churny run: everything lb does, all at once, for
 * SOAK_SECONDS (default 60), with memory watched.
 *
 * Threads:
 *   readers (SOAK_READERS, default 2)  lb_balancer_select and full walks
 *            on the four long-lived balancers (one per algorithm) and on
 *            two short-lived ones, without pause;
 *   discovery  every 1-4 ms a new random subset of a pool of 96 addresses
 *            (IPv4, IPv6, unix; weights 1-5; random enablement) for one of
 *            the long-lived balancers in turn, now and then a bad list
 *            (must fail and leave the set as it was);
 *   health   lb_balancer_observe (thresholds 1-3) and set_enable at random;
 *   lifecycle  replaces the short-lived balancers (create, fill, publish
 *            under the readers' feet, free), and runs a blocking TCP check
 *            round on a private balancer now and then;
 *   listener  two listeners on 127.0.0.1 that answer an HTTP request
 *            with 200 (and a bare TCP check by closing); the second one
 *            closes and reopens every 150 ms, so the periodic HTTP checks
 *            (kept-alive connections) of the "checked" balancer, every
 *            20 ms on the C checker thread, flip it; a third address is a
 *            closed port.  The lifecycle thread's blocking rounds are TCP
 *            checks of the same three.
 * The main thread drains health events, samples RSS from /proc/self/statm
 * every second and prints it at the start, after warm-up, in the middle
 * and at the end.
 *
 * Checks: every pick is a member of the set of the generation it came
 * from (the discovery thread records (generation, size) before it
 * publishes), walks never repeat an index nor exceed max_iterations, bad
 * lists fail without a publish, the checker's verdicts are right at the end
 * (both listeners healthy, the closed port not), no file descriptor is
 * left open, and RSS after warm-up grows by at most RSS_BOUND_MIB (under
 * TSan, plus RSS_TSAN_MIB_PER_S per second).  Built
 * with ASan (leaks checked at exit, after lb_quiesce) and with TSan.
 * Prints "soak: N passed, M failed".
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "iter.h"
#include "lb.h"
#include "util.h"

#define NALG 4
#define POOL 96
#define MAX_SET POOL
#define RING 1024   /* generations remembered per balancer */
#define NSHORT 2    /* short-lived balancers the readers also use */
#define WALK_MAX 64 /* max_iterations of the readers' walks */
/* Growth of RSS allowed between the end of warm-up and the end.  The run
 * keeps a bounded working set (at most 96 backends per balancer, a few
 * snapshots in flight); a leak of one snapshot per publish would grow by
 * hundreds of MiB over a minute (about 20,000 publishes of 2-30 KiB). */
#define RSS_BOUND_MIB 24
#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer also keeps metadata for the addresses the churn goes
 * through (shadow cells, sync objects of the atomics), which grows steadily
 * by about 0.33 MiB/s here while ASan's RSS stays flat: under TSan the
 * bound grows by 0.5 MiB per second after warm-up (the ASan run, with
 * LeakSanitizer at exit, is the one that finds leaks). */
#define RSS_TSAN_MIB_PER_S 0.5
#else
#define RSS_TSAN_MIB_PER_S 0.0
#endif

static const int algs[NALG] = {LB_SELECT_ROUND_ROBIN, LB_SELECT_RANDOM,
                               LB_SELECT_FNV, LB_SELECT_CONSISTENT};

static lb_backend pool[POOL];
static lb_balancer *bal[NALG];
static _Atomic uint64_t ring[NALG][RING]; /* gen << 32 | n */

struct short_slot {
    pthread_rwlock_t lock; /* the soak's own: readers vs. replacement */
    lb_balancer *b;
};
static struct short_slot shorts[NSHORT];

static lb_balancer *checked; /* periodic TCP checks on the checker thread */
static uint16_t port_up, port_flap, port_closed;
static atomic_int flap_listening;
static atomic_int settle; /* the listener stops flapping, stays up */
static atomic_int stop_listener;

static atomic_int stop;
static _Atomic uint64_t passed, failed;
static struct {
    _Atomic uint64_t selects, walks, candidates, publishes, rejected, observes,
        flips, created, freed, rounds, events, unverified;
} st;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            atomic_fetch_add_explicit(&passed, 1, memory_order_relaxed);       \
        } else {                                                               \
            atomic_fetch_add_explicit(&failed, 1, memory_order_relaxed);       \
            fprintf(stderr, "soak.c:%d: check failed: %s\n", __LINE__, #cond); \
        }                                                                      \
    } while (0)

#define COUNT(field, n)                                                        \
    atomic_fetch_add_explicit(&st.field, (n), memory_order_relaxed)

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static long rss_kib(void)
{
    long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f) {
        if (fscanf(f, "%ld %ld", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void parse_or_die(const char *text, uint32_t weight, lb_backend *out)
{
    const char *err;

    if (lb_backend_parse(text, strlen(text), weight, out, &err) != LB_OK) {
        fprintf(stderr, "soak: parse %s: %s\n", text, err);
        exit(2);
    }
}

/* Pool entry i: a third each IPv4, IPv6, unix; its weight is part of its
 * identity, so it is fixed per entry. */
static void make_pool(void)
{
    char text[64];

    for (int i = 0; i < POOL; i++) {
        if (i % 3 == 0)
            snprintf(text, sizeof(text), "127.0.%d.%d:%d", i / 50, i % 50 + 1,
                     30000 + i);
        else if (i % 3 == 1)
            snprintf(text, sizeof(text), "[::1]:%d", 30000 + i);
        else
            snprintf(text, sizeof(text), "unix:/tmp/lb-soak-%d.sock", i);
        parse_or_die(text, 1 + (uint32_t)i % 5, &pool[i]);
    }
}

/* A random subset of the pool (distinct entries, shuffled), with random
 * enablement; returns its size. */
static size_t random_set(uint64_t *rng, lb_backend *out)
{
    size_t n = 0, want = xorshift(rng) % (MAX_SET + 1);
    int idx[POOL];

    for (int i = 0; i < POOL; i++)
        idx[i] = i;
    for (size_t i = 0; i < want; i++) {
        size_t j = i + xorshift(rng) % (POOL - i);
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
        out[n] = pool[idx[i]];
        out[n].enable = (int8_t)(xorshift(rng) % 8 == 0 ? 0 : -1);
        n++;
    }
    return n;
}

/* ---- readers ---- */

static void check_pick(int a, uint64_t gen, int idx)
{
    uint64_t w =
        atomic_load_explicit(&ring[a][gen % RING], memory_order_acquire);

    if ((w >> 32) != (gen & 0xffffffffu)) {
        COUNT(unverified, 1);
        return;
    }
    CHECK((uint64_t)idx < (w & 0xffffffffu));
}

static void reader_walk(lb_balancer *b, int a, const char *key, size_t len,
                        lb_iter *it)
{
    uint64_t seen[(MAX_SET + 63) / 64] = {0};
    int idx = lb_iter_first(b, key, len, WALK_MAX, it);
    uint32_t yields = 0;
    int ok = 1;

    while (idx >= 0) {
        if (idx >= MAX_SET || (seen[idx / 64] >> (idx % 64) & 1))
            ok = 0;
        else
            seen[idx / 64] |= 1ull << (idx % 64);
        if (a >= 0)
            check_pick(a, lb_iter_head_of(it)->gen, idx);
        yields++;
        idx = lb_iter_next(b, it);
    }
    CHECK(ok && yields <= WALK_MAX && it->steps <= WALK_MAX &&
          (idx == LB_DECLINED || idx == LB_STALE));
    COUNT(walks, 1);
    COUNT(candidates, yields);
}

static void *reader(void *arg)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uintptr_t)arg + 1;
    lb_iter *it = lb_iter_new();
    char key[32];
    uint64_t n = 0;

    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int a = (int)(xorshift(&rng) % NALG);
        size_t len =
            (size_t)snprintf(key, sizeof(key), "/k/%llu",
                             (unsigned long long)(xorshift(&rng) % 100000));
        int idx = lb_balancer_select(bal[a], key, len,
                                     1 + (uint32_t)(xorshift(&rng) % 8), it);

        if (idx >= 0)
            check_pick(a, lb_iter_head_of(it)->gen, idx);
        else
            CHECK(idx == LB_DECLINED);
        n++;
        if (n % 16 == 0)
            reader_walk(bal[a], a, key, len, it);
        if (n % 64 == 0) {
            struct short_slot *s = &shorts[xorshift(&rng) % NSHORT];

            pthread_rwlock_rdlock(&s->lock);
            idx = lb_balancer_select(s->b, key, len, 4, it);
            CHECK(idx == LB_DECLINED || (idx >= 0 && idx < MAX_SET));
            reader_walk(s->b, -1, key, len, it);
            pthread_rwlock_unlock(&s->lock);
        }
    }
    COUNT(selects, n);
    lb_iter_free(it);
    return NULL;
}

/* ---- discovery ---- */

static void *discovery(void *arg)
{
    uint64_t rng = 0xd1b54a32d192ed03ull;
    static lb_backend set[MAX_SET + 1];
    uint64_t round = 0;

    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        /* One balancer per tick: a consistent ring of 96 backends takes a
         * while to build under the sanitizers, the others should not wait
         * for it. */
        for (int a = (int)(round % NALG); a == (int)(round % NALG); a++) {
            size_t n = random_set(&rng, set);
            uint64_t gen = lb_balancer_generation(bal[a]);
            const char *err;
            int rc;

            if (xorshift(&rng) % 50 == 0) {
                /* A bad entry anywhere in the list: nothing changes. */
                set[n] = pool[0];
                set[n].weight = 0;
                rc = lb_balancer_update(bal[a], set, n + 1, NULL, NULL, &err);
                CHECK(rc == LB_ERROR);
                CHECK(lb_balancer_generation(bal[a]) == gen);
                COUNT(rejected, 1);
                continue;
            }
            /* Only this thread publishes on bal[a]: the next generation is
             * gen + 1, recorded before readers can see it. */
            atomic_store_explicit(&ring[a][(gen + 1) % RING],
                                  (gen + 1) << 32 | n, memory_order_release);
            rc = lb_balancer_update(bal[a], set, n, NULL, NULL, &err);
            CHECK(rc == 0 || rc == 1);
            if (rc == 1)
                COUNT(publishes, 1);
            CHECK(lb_balancer_count(bal[a]) == n);
        }
        /* The checked balancer: its three addresses, in and out. */
        if (++round % 16 == 0) {
            lb_backend cs[3];
            char text[32];
            size_t n = 0;
            const char *err;

            snprintf(text, sizeof(text), "127.0.0.1:%u", port_up);
            parse_or_die(text, 1, &cs[n++]);
            if (xorshift(&rng) % 4) {
                snprintf(text, sizeof(text), "127.0.0.1:%u", port_flap);
                parse_or_die(text, 1, &cs[n++]);
            }
            if (xorshift(&rng) % 4) {
                snprintf(text, sizeof(text), "127.0.0.1:%u", port_closed);
                parse_or_die(text, 1, &cs[n++]);
            }
            CHECK(lb_balancer_update(checked, cs, n, NULL, NULL, &err) >= 0);
        }
        sleep_us(1000 + (long)(xorshift(&rng) % 3000));
    }
    return NULL;
}

/* ---- health ---- */

static void *health(void *arg)
{
    uint64_t rng = 0x2545f4914f6cdd1dull;
    uint64_t obs = 0, flips = 0;

    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        int a = (int)(xorshift(&rng) % NALG);
        uint64_t gen = lb_balancer_generation(bal[a]);
        size_t n = lb_balancer_count(bal[a]);

        for (int k = 0; k < 8 && n > 0; k++) {
            size_t i = xorshift(&rng) % n;
            uint64_t r = xorshift(&rng);
            int rc;

            if (r % 5 == 0) {
                rc = lb_balancer_set_enable(bal[a], gen, i, (r >> 8) % 4 != 0);
                CHECK(rc == LB_OK || rc == LB_STALE);
            } else {
                /* Mostly healthy, so selections mostly succeed. */
                rc = lb_balancer_observe(bal[a], gen, i, (r >> 8) % 3 != 0,
                                         1 + (uint32_t)(r >> 16) % 3,
                                         LB_CHECK_ERR_CONNECT, ECONNREFUSED);
                CHECK(rc == 0 || rc == 1 || rc == LB_STALE);
                obs++;
                flips += rc == 1;
            }
        }
        sleep_us(100);
    }
    COUNT(observes, obs);
    COUNT(flips, flips);
    return NULL;
}

/* ---- lifecycle ---- */

static lb_balancer *new_filled(uint64_t *rng, lb_backend *set)
{
    lb_config cfg = {.selection = algs[xorshift(rng) % NALG],
                     .point_multiple = 1 + (uint32_t)(xorshift(rng) % 160)};
    const char *err;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    size_t n;

    CHECK(b != NULL);
    if (!b)
        exit(2);
    n = random_set(rng, set);
    CHECK(lb_balancer_update(b, set, n, NULL, NULL, &err) >= 0);
    COUNT(created, 1);
    return b;
}

/* A private balancer with a TCP check: one blocking round over the
 * listeners and the closed port, its events drained, then freed. */
static void check_round(uint64_t *rng)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    lb_check_config cc = {.kind = LB_CHECK_TCP, .timeout = 0.5};
    lb_health_event ev[8];
    lb_backend cs[3];
    char text[32];
    const char *err;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    uint16_t ports[3] = {port_up, port_flap, port_closed};

    for (int i = 0; i < 3; i++) {
        snprintf(text, sizeof(text), "127.0.0.1:%u", ports[i]);
        parse_or_die(text, 1, &cs[i]);
    }
    CHECK(b && lb_balancer_update(b, cs, 3, NULL, NULL, &err) == 1);
    CHECK(lb_balancer_set_check(b, &cc, &err) == LB_OK);
    CHECK(lb_balancer_check_round(b, (int)(xorshift(rng) & 1), &err) == 3);
    while (lb_balancer_events(b, ev, 8) > 0)
        ;
    COUNT(rounds, 1);
    COUNT(created, 1);
    COUNT(freed, 1);
    lb_balancer_free(b);
}

static void *lifecycle(void *arg)
{
    uint64_t rng = 0x853c49e6748fea9bull;
    static lb_backend set[MAX_SET];
    uint64_t k = 0;

    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        struct short_slot *s = &shorts[k % NSHORT];
        lb_balancer *b = new_filled(&rng, set), *old;
        lb_iter *it = lb_iter_new();

        /* Used alone a little, then swapped in for the readers. */
        for (int i = 0; i < 100; i++) {
            int idx = lb_balancer_select(b, "x", 1, 4, it);
            CHECK(idx == LB_DECLINED || (idx >= 0 && idx < MAX_SET));
        }
        lb_iter_free(it);
        pthread_rwlock_wrlock(&s->lock);
        old = s->b;
        s->b = b;
        pthread_rwlock_unlock(&s->lock);
        lb_balancer_free(old);
        COUNT(freed, 1);
        if (++k % 50 == 0)
            check_round(&rng);
        sleep_us(2000);
    }
    return NULL;
}

/* ---- loopback listeners ---- */

static int listen_on(uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(*port)};
    socklen_t sl = sizeof(sa);
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* One connection: a TCP check closes at once (recv sees the end); an
 * HTTP check gets its answer once its request is in (answering before
 * reading could reset the connection under the response).  The answer
 * keeps the connection alive in HTTP/1.1 terms, but the server closes it,
 * so the checker's kept connection is found dead at the next round. */
static void serve(int c)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    struct timeval tv = {0, 200000};
    char buf[4096];
    ssize_t n;

    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = recv(c, buf, sizeof(buf), 0);
    if (n > 0 && memmem(buf, (size_t)n, "\r\n\r\n", 4))
        (void)!send(c, ok, sizeof(ok) - 1, MSG_NOSIGNAL);
    close(c);
}

static void *listener(void *arg)
{
    int *fds = arg; /* [0] up, [1] flapping (-1 while down) */
    double next_flip = now_s() + 0.15;

    while (!atomic_load_explicit(&stop_listener, memory_order_relaxed)) {
        struct pollfd p[2] = {{.fd = fds[0], .events = POLLIN},
                              {.fd = fds[1], .events = POLLIN}};

        if (poll(p, 2, 10) > 0)
            for (int i = 0; i < 2; i++)
                if (p[i].revents & POLLIN) {
                    int c = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
                    if (c >= 0)
                        serve(c);
                }
        if (atomic_load(&settle) ? fds[1] < 0 : now_s() >= next_flip) {
            next_flip += 0.15;
            if (fds[1] >= 0) {
                close(fds[1]);
                fds[1] = -1;
            } else {
                uint16_t port = port_flap;
                fds[1] = listen_on(&port);
            }
            atomic_store(&flap_listening, fds[1] >= 0);
        }
    }
    return NULL;
}

static void *(*const workers[])(void *) = {discovery, health, lifecycle};
#define NWORKERS (sizeof(workers) / sizeof(workers[0]))

int main(void)
{
    const char *env = getenv("SOAK_SECONDS");
    const char *renv = getenv("SOAK_READERS");
    double seconds = env ? atof(env) : 60;
    int nreaders = renv ? atoi(renv) : 2;
    pthread_t rt[16], wt[NWORKERS], lt;
    int lfds[2], closed_fd, fds0;
    long rss0, rss_warm = 0, rss_mid = 0, rss_end, rss_peak = 0, bound_kib;
    double t0, warm, last_sample = 0;
    uint64_t events = 0;
    const char *err;
    lb_check_config cc = {.kind = LB_CHECK_HTTP,
                          .timeout = 0.5,
                          .path = "/health",
                          .path_len = 7,
                          .reuse_connection = 1,
                          .consecutive_success = 1,
                          .consecutive_failure = 1};

    if (nreaders < 2)
        nreaders = 2;
    if (nreaders > 16)
        nreaders = 16;
    if (seconds < 4)
        seconds = 4;
    fds0 = count_fds();
    make_pool();

    /* Listeners: one steady, one flapping, and a port bound then closed
     * so that connecting to it is refused. */
    port_up = port_flap = port_closed = 0;
    lfds[0] = listen_on(&port_up);
    lfds[1] = listen_on(&port_flap);
    closed_fd = listen_on(&port_closed);
    if (lfds[0] < 0 || lfds[1] < 0 || closed_fd < 0) {
        fprintf(stderr, "soak: cannot listen on 127.0.0.1: %s\n",
                strerror(errno));
        return 2;
    }
    close(closed_fd);
    atomic_store(&flap_listening, 1);

    for (int a = 0; a < NALG; a++) {
        lb_config cfg = {.selection = algs[a]};
        bal[a] = lb_balancer_new(&cfg, &err);
        CHECK(bal[a] != NULL);
        atomic_store(&ring[a][1 % RING], 1ull << 32);
    }
    {
        uint64_t rng = 42;
        static lb_backend set[MAX_SET];
        for (int i = 0; i < NSHORT; i++) {
            pthread_rwlock_init(&shorts[i].lock, NULL);
            shorts[i].b = new_filled(&rng, set);
        }
    }
    {
        lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
        checked = lb_balancer_new(&cfg, &err);
        CHECK(lb_balancer_set_check(checked, &cc, &err) == LB_OK);
        CHECK(lb_balancer_checks_start(checked, 0.02, 1, &err) == LB_OK);
    }

    rss0 = rss_kib();
    t0 = now_s();
    warm = seconds / 4 < 15 ? seconds / 4 : 15;
    printf("soak: %.0f s, %d readers; rss start %ld KiB\n", seconds, nreaders,
           rss0);
    fflush(stdout);

    pthread_create(&lt, NULL, listener, lfds);
    for (int i = 0; i < nreaders; i++)
        pthread_create(&rt[i], NULL, reader, (void *)(uintptr_t)(i + 1));
    for (size_t i = 0; i < NWORKERS; i++)
        pthread_create(&wt[i], NULL, workers[i], NULL);

    for (;;) {
        double t = now_s() - t0;
        lb_health_event ev[64];
        int got;

        while ((got = lb_balancer_events(checked, ev, 64)) > 0)
            events += (uint64_t)got;
        if (t - last_sample >= 1 || t >= seconds) {
            long r = rss_kib();
            last_sample = t;
            if (r > rss_peak)
                rss_peak = r;
            if (!rss_warm && t >= warm) {
                rss_warm = r;
                printf("soak: rss after %.0f s warm-up %ld KiB\n", t, r);
                fflush(stdout);
            }
            if (!rss_mid && t >= seconds / 2) {
                rss_mid = r;
                printf("soak: rss at %.0f s (middle) %ld KiB\n", t, r);
                fflush(stdout);
            }
        }
        if (t >= seconds)
            break;
        sleep_us(20000);
    }
    rss_end = rss_kib();
    atomic_store(&stop, 1);
    for (int i = 0; i < nreaders; i++)
        pthread_join(rt[i], NULL);
    for (size_t i = 0; i < NWORKERS; i++)
        pthread_join(wt[i], NULL);

    /* The checker's verdicts, with the flapping listener up again (and
     * still answering). */
    atomic_store(&settle, 1);
    while (!atomic_load(&flap_listening))
        sleep_us(1000);
    {
        lb_backend cs[3];
        char text[32];
        uint16_t ports[3] = {port_up, port_flap, port_closed};
        lb_health_info hi;
        lb_health_event ev[64];
        int got;

        lb_balancer_checks_stop(checked);
        for (int i = 0; i < 3; i++) {
            snprintf(text, sizeof(text), "127.0.0.1:%u", ports[i]);
            parse_or_die(text, 1, &cs[i]);
        }
        CHECK(lb_balancer_update(checked, cs, 3, NULL, NULL, &err) >= 0);
        CHECK(lb_balancer_check_round(checked, 1, &err) == 3);
        while ((got = lb_balancer_events(checked, ev, 64)) > 0)
            events += (uint64_t)got;
        /* Sorted order is by port. */
        for (size_t i = 0; i < 3; i++) {
            lb_backend be;
            CHECK(lb_balancer_backend(checked, i, &be) == LB_OK);
            CHECK(lb_balancer_health(checked, i, &hi) == LB_OK);
            CHECK(hi.healthy == (be.port != port_closed));
        }
    }
    CHECK(events > 0); /* the flapping listener was seen going down and up */
    atomic_store(&stop_listener, 1);
    pthread_join(lt, NULL);

    for (int a = 0; a < NALG; a++)
        lb_balancer_free(bal[a]);
    for (int i = 0; i < NSHORT; i++) {
        lb_balancer_free(shorts[i].b);
        pthread_rwlock_destroy(&shorts[i].lock);
    }
    lb_balancer_free(checked);
    lb_quiesce();
    close(lfds[0]);
    if (lfds[1] >= 0)
        close(lfds[1]);
    CHECK(count_fds() == fds0);

    bound_kib =
        (long)((RSS_BOUND_MIB + RSS_TSAN_MIB_PER_S * (seconds - warm)) * 1024);
    printf("soak: rss start %ld KiB, warm %ld KiB, middle %ld KiB, end %ld "
           "KiB, peak %ld KiB; growth after warm-up %ld KiB (bound %ld KiB)\n",
           rss0, rss_warm, rss_mid, rss_end, rss_peak, rss_end - rss_warm,
           bound_kib);
    CHECK(rss_warm > 0 && rss_end - rss_warm <= bound_kib);
    printf("soak: %llu selects, %llu walks (%llu candidates), %llu publishes, "
           "%llu bad lists rejected, %llu observations (%llu flips), "
           "%llu balancers created, %llu freed, %llu blocking check rounds, "
           "%llu checker events, %llu picks not verifiable\n",
           (unsigned long long)st.selects, (unsigned long long)st.walks,
           (unsigned long long)st.candidates, (unsigned long long)st.publishes,
           (unsigned long long)st.rejected, (unsigned long long)st.observes,
           (unsigned long long)st.flips,
           (unsigned long long)st.created + NALG + 1,
           (unsigned long long)st.freed + NALG + NSHORT + 1,
           (unsigned long long)st.rounds, (unsigned long long)events,
           (unsigned long long)st.unverified);
    printf("soak: %llu passed, %llu failed\n", (unsigned long long)passed,
           (unsigned long long)failed);
    return failed ? 1 : 0;
}
