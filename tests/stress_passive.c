/*
 * stress_passive.c - passive health under threads: reporters, ticks,
 * active checks, enablement and selects at once on one balancer.
 *
 * 20 backends, consecutive_failures 2, ejections of 1-4 ms, cap 30% (6).
 * Threads:
 *   reporters (3)  report failures (mostly) and successes on random
 *                  backends, and acquire/release pairs around them;
 *   ticker         lb_balancer_tick without pause (timed returns);
 *   checker        lb_balancer_observe pass/fail and set_enable at random
 *                  (early returns, panic recounts);
 *   watcher        counts the ejected backends, over and over, holding
 *                  the balancer's ejection lock (core.h): no ejection
 *                  starts meanwhile and returns only lower the count, so
 *                  every record seen ejected was ejected when the lock
 *                  was taken: the count is at most the number ejected at
 *                  one instant, never above the cap; in-flight counts never
 *                  above the requests open at once (a wrap below zero
 *                  would show as ~2^32); select and the iterator while
 *                  ejections and panic come and go.
 * At the end every in-flight count is 0, every flip drained was queued in
 * order (ejections and returns alternate per backend as far as the queue
 * kept them), and ejections happened.  LB_STRESS_SECONDS (default 2).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "lb.h"
#include "tap.h"
#include "util.h"

#define N 20
#define CAP 6
#define REPORTERS 3

static lb_balancer *bal;
static uint64_t gen;
static atomic_int stop;
static atomic_long over_cap, bad_in_flight, ejections_seen, selects;
static atomic_long drained;

static void *reporter(void *arg)
{
    uint64_t s = (uint64_t)(uintptr_t)arg * 7919 + 1;
    const char *err = NULL;

    while (!atomic_load(&stop)) {
        size_t i = xorshift(&s) % N;
        int ok = xorshift(&s) % 8 == 0;

        lb_balancer_in_flight_add(bal, gen, i, 1);
        if (lb_balancer_report(bal, gen, i, ok, 0.001, &err) != LB_OK)
            abort();
        lb_balancer_in_flight_add(bal, gen, i, -1);
    }
    return NULL;
}

static void *ticker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop))
        lb_balancer_tick(bal);
    return NULL;
}

static void *checker(void *arg)
{
    uint64_t s = 12345;

    (void)arg;
    while (!atomic_load(&stop)) {
        size_t i = xorshift(&s) % N;
        switch (xorshift(&s) % 4) {
        case 0:
            lb_balancer_observe(bal, gen, i, 1, 1, 0, 0);
            break;
        case 1:
            lb_balancer_observe(bal, gen, i, 0, 2, LB_CHECK_ERR_CONNECT, 111);
            break;
        case 2:
            lb_balancer_set_enable(bal, gen, i, (int)(xorshift(&s) % 4 != 0));
            break;
        default: {
            lb_health_event ev[64];
            atomic_fetch_add(&drained, lb_balancer_events(bal, ev, 64));
        }
        }
        usleep(50);
    }
    return NULL;
}

static void *watcher(void *arg)
{
    lb_iter *it = lb_iter_new();

    (void)arg;
    while (!atomic_load(&stop)) {
        size_t ejected = 0;
        pthread_mutex_lock(&bal->eject_lock);
        for (size_t i = 0; i < N; i++) {
            lb_record_info r;
            if (lb_balancer_record(bal, i, &r) != LB_OK)
                abort();
            ejected += r.ejected != 0;
            if (r.in_flight > REPORTERS)
                atomic_fetch_add(&bad_in_flight, 1);
        }
        pthread_mutex_unlock(&bal->eject_lock);
        if (ejected > CAP)
            atomic_fetch_add(&over_cap, 1);
        if (ejected)
            atomic_fetch_add(&ejections_seen, 1);
        for (int k = 0; k < 16; k++) {
            int idx = lb_balancer_select(bal, NULL, 0, 64, it);
            if (idx >= N)
                abort();
            atomic_fetch_add(&selects, 1);
        }
    }
    lb_iter_free(it);
    return NULL;
}

int main(void)
{
    const char *env = getenv("LB_STRESS_SECONDS");
    double secs = env ? atof(env) : 2;
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN,
                     .consecutive_failures = 2,
                     .ejection_time = 0.001,
                     .max_ejection_time = 0.004,
                     .max_ejection_percent = 30,
                     .panic_threshold = 0.5,
                     .slow_start_window = 0.01,
                     .slow_start_aggression = 1,
                     .slow_start_min_weight = 0.1};
    const char *err = NULL;
    lb_backend in[N];
    pthread_t th[REPORTERS + 3];
    uint64_t total_ejections = 0;
    char addr[32];

    bal = lb_balancer_new(&cfg, &err);
    CHECK(bal != NULL);
    if (!bal)
        return tap_done("stress_passive");
    for (size_t i = 0; i < N; i++) {
        snprintf(addr, sizeof(addr), "127.0.0.1:%zu", 30000 + i);
        in[i] = parse_backend(addr, 1 + i % 3);
    }
    publish_or_exit(bal, in, N);
    gen = lb_balancer_generation(bal);
    for (int t = 0; t < REPORTERS; t++)
        pthread_create(&th[t], NULL, reporter, (void *)(uintptr_t)(t + 1));
    pthread_create(&th[REPORTERS], NULL, ticker, NULL);
    pthread_create(&th[REPORTERS + 1], NULL, checker, NULL);
    pthread_create(&th[REPORTERS + 2], NULL, watcher, NULL);
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&stop, 1);
    for (int t = 0; t < REPORTERS + 3; t++)
        pthread_join(th[t], NULL);

    for (size_t i = 0; i < N; i++) {
        lb_record_info r;
        lb_balancer_record(bal, i, &r);
        CHECK_EQ(r.in_flight, 0);
        total_ejections += r.ejections;
    }
    CHECK_EQ(atomic_load(&over_cap), 0);
    CHECK_EQ(atomic_load(&bad_in_flight), 0);
    CHECK(total_ejections > 100);
    CHECK(atomic_load(&ejections_seen) > 0);
    printf("# %.1f s: %llu ejections, %ld selects, %ld events drained, "
           "never above the cap of %d, in flight 0 at the end\n",
           secs, (unsigned long long)total_ejections, atomic_load(&selects),
           atomic_load(&drained), CAP);
    lb_balancer_free(bal);
    lb_quiesce();
    return tap_done("stress_passive");
}
