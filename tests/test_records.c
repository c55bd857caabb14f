/*
 * test_records.c - the per-backend records and what goes through them:
 * the balancer's bounded event queue under flips from several threads,
 * passive reports, in-flight counts (the shared records across fork():
 * tests/test_shared.c).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

static lb_backend parse(const char *s, uint32_t w)
{
    return parse_backend(s, w);
}

#define NBACK 64
#define NTHREADS 4
#define FLIPS_PER_THREAD 200000

struct flipper {
    lb_balancer *b;
    uint64_t seed;
    double until; /* > 0: flip until then (LB_FLAP_SECONDS), else a count */
    long flips;
};

static void *flip_loop(void *arg)
{
    struct flipper *f = arg;
    uint64_t g = lb_balancer_generation(f->b);

    for (long k = 0;
         f->until > 0 ? (k % 4096 || now_s() < f->until) : k < FLIPS_PER_THREAD;
         k++, f->flips++) {
        uint64_t x = xorshift(&f->seed);
        lb_balancer_observe(f->b, g, x % NBACK, (int)((x >> 20) & 1), 1,
                            LB_CHECK_ERR_CUSTOM, (int)(x >> 40) & 0xff);
    }
    return NULL;
}

static long rss_kib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/*
 * 800,000 observations from four threads while nobody drains (or, with
 * LB_FLAP_SECONDS set, as many as they make in that time: `make
 * soak-events`): memory stays
 * bounded (a queue of one node per flip would take tens of MiB), the flips
 * not queued are counted, and after draining, the last state delivered
 * for every record equals its current state.
 */
static void test_events_bounded(void)
{
    lb_config cfg = {.selection = LB_SELECT_RANDOM};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[NBACK];
    struct flipper f[NTHREADS];
    pthread_t th[NTHREADS];
    uint64_t ids[NBACK];
    int last[NBACK];
    lb_health_event ev[64];
    long before, after;
    int n, total = 0, unknown = 0;

    for (int i = 0; i < NBACK; i++) {
        char text[32];
        snprintf(text, sizeof(text), "127.0.0.1:%d", 20000 + i);
        in[i] = parse(text, 1);
    }
    CHECK_EQ(lb_balancer_update(b, in, NBACK, NULL, NULL, &err), 1);
    for (int i = 0; i < NBACK; i++) {
        lb_health_info h;
        lb_balancer_health(b, (size_t)i, &h);
        ids[i] = h.id;
        last[i] = 1; /* every record starts healthy */
    }
    /* warm the ring and the allocator before measuring */
    lb_balancer_observe(b, lb_balancer_generation(b), 0, 0, 1, 1, 1);
    before = rss_kib();
    for (int t = 0; t < NTHREADS; t++) {
        const char *secs = getenv("LB_FLAP_SECONDS");

        f[t].until = secs ? now_s() + atof(secs) : 0;
        f[t].flips = 0;
        f[t].b = b;
        f[t].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1);
        pthread_create(&th[t], NULL, flip_loop, &f[t]);
    }
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    after = rss_kib();
    printf("# %ld flips; rss before %ld KiB, after %ld KiB; dropped %llu\n",
           f[0].flips + f[1].flips + f[2].flips + f[3].flips, before, after,
           (unsigned long long)lb_balancer_events_dropped(b));
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer's own shadow and history grow with the flips */
    (void)before;
    (void)after;
#else
    CHECK(after - before < 2048);
#endif
    CHECK(lb_balancer_events_dropped(b) > 0);
    while ((n = lb_balancer_events(b, ev, 64)) > 0) {
        total += n;
        for (int k = 0; k < n; k++) {
            int i = 0;
            while (i < NBACK && ids[i] != ev[k].id)
                i++;
            if (i == NBACK)
                unknown++;
            else
                last[i] = ev[k].healthy;
        }
    }
    CHECK(total >= LB_EVENTS_MAX);
    CHECK_EQ(unknown, 0);
    for (int i = 0; i < NBACK; i++) {
        lb_health_info h;
        lb_balancer_health(b, (size_t)i, &h);
        CHECK_EQ(last[i], h.healthy);
    }
    lb_balancer_free(b);
}

/* Passive outcomes: counters, the failure run, latency, stale and bad
 * input. */
static void test_report(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[1] = {parse("127.0.0.1:9000", 1)};
    lb_record_info info;
    uint64_t g;

    CHECK_EQ(lb_balancer_update(b, in, 1, NULL, NULL, &err), 1);
    g = lb_balancer_generation(b);
    CHECK_EQ(lb_balancer_report(b, g, 0, 0, 0.010, &err), LB_OK);
    CHECK_EQ(lb_balancer_report(b, g, 0, 0, -1, &err), LB_OK);
    lb_balancer_record(b, 0, &info);
    CHECK_EQ(info.passive_failures, 2);
    CHECK_EQ(info.reports_failed, 2);
    CHECK_EQ(info.latency_last_ns, 10000000);
    CHECK_EQ(info.latency_ewma_ns, 10000000);
    CHECK_EQ(lb_balancer_report(b, g, 0, 1, 0.002, &err), LB_OK);
    lb_balancer_record(b, 0, &info);
    CHECK_EQ(info.passive_failures, 0);
    CHECK_EQ(info.reports_ok, 1);
    CHECK_EQ(info.latency_last_ns, 2000000);
    CHECK_EQ(info.latency_ewma_ns, 10000000 - 10000000 / 8 + 2000000 / 8);
    CHECK_EQ(info.healthy, 1); /* no ejection logic yet */
    CHECK_EQ(lb_balancer_report(b, g + 1, 0, 1, 0, &err), LB_STALE);
    CHECK_EQ(lb_balancer_report(b, g, 0, 2, 0, &err), LB_ERROR);
    CHECK(strstr(err, "result") != NULL);
    CHECK_EQ(lb_balancer_report(b, g, 0, 1, 1e9, &err), LB_ERROR);
    CHECK(strstr(err, "latency") != NULL);
    CHECK_EQ(lb_balancer_report(b, g, 0, 1, 0.0 / 0.0, &err), LB_ERROR);
    /* checks are counted on the record too */
    lb_balancer_observe(b, g, 0, 1, 1, 0, 0);
    lb_balancer_record(b, 0, &info);
    CHECK_EQ(info.checks_ok, 1);
    lb_balancer_free(b);
}

/* Requests in flight: counted up and down, never below zero, stale
 * generations dropped. */
static void test_in_flight(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[2] = {parse("127.0.0.1:9000", 1), parse("127.0.0.1:9001", 1)};
    lb_record_info info;
    uint64_t g;

    CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), 1);
    g = lb_balancer_generation(b);
    CHECK_EQ(lb_balancer_in_flight_add(b, g, 1, 1), LB_OK);
    CHECK_EQ(lb_balancer_in_flight_add(b, g, 1, 1), LB_OK);
    lb_balancer_record(b, 1, &info);
    CHECK_EQ(info.in_flight, 2);
    /* a private balancer: this process's share is all of it */
    CHECK_EQ(lb_balancer_in_flight_own(b, g, 1), 2);
    CHECK_EQ(lb_balancer_in_flight_own(b, g + 1, 1), 0);
    lb_balancer_record(b, 0, &info);
    CHECK_EQ(info.in_flight, 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(lb_balancer_in_flight_add(b, g, 1, -1), LB_OK);
    lb_balancer_record(b, 1, &info);
    CHECK_EQ(info.in_flight, 0); /* the third release found nothing */
    CHECK_EQ(lb_balancer_in_flight_add(b, g + 1, 1, 1), LB_STALE);
    CHECK_EQ(lb_balancer_selected(b, g, 1), LB_OK);
    CHECK_EQ(lb_balancer_selected(b, g + 1, 1), LB_STALE);
    lb_balancer_record(b, 1, &info);
    CHECK_EQ(info.selections, 3); /* two acquires and one selection */
    lb_balancer_record(b, 1, &info);
    CHECK_EQ(info.in_flight, 0);
    lb_balancer_free(b);
}

/* A counted select counts its pick on the picked record: a selection
 * (in_flight 0), or a selection and one in flight (in_flight 1); nothing
 * for a pick from another generation than the caller's, nor for a
 * declined select. */
static void test_select_counted(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[2] = {parse("127.0.0.1:9000", 1), parse("127.0.0.1:9001", 1)};
    lb_iter *it = lb_iter_new();
    lb_record_info info[2];
    uint64_t g;
    int i0, i1;

    CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), 1);
    g = lb_balancer_generation(b);
    i0 = lb_balancer_select_counted(b, g, "", 0, 4, 0, it);
    i1 = lb_balancer_select_counted(b, g, "", 0, 4, 1, it);
    CHECK(i0 >= 0 && i1 >= 0 && i0 != i1); /* round robin: both backends */
    CHECK_EQ(lb_iter_head_of(it)->gen, g);
    lb_balancer_record(b, (size_t)i0, &info[0]);
    lb_balancer_record(b, (size_t)i1, &info[1]);
    CHECK_EQ(info[0].selections, 1);
    CHECK_EQ(info[0].in_flight, 0);
    CHECK_EQ(info[1].selections, 1);
    CHECK_EQ(info[1].in_flight, 1);
    CHECK_EQ(lb_balancer_release(b, g, (size_t)i1, -1, -1, &err), LB_OK);
    /* the caller's view is older: the pick is returned, nothing counted */
    CHECK(lb_balancer_select_counted(b, g + 1, "", 0, 4, 1, it) >= 0);
    CHECK(lb_balancer_select_counted(b, g + 1, "", 0, 4, 0, it) >= 0);
    lb_balancer_set_enable(b, g, 0, 0);
    lb_balancer_set_enable(b, g, 1, 0);
    CHECK_EQ(lb_balancer_select_counted(b, g, "", 0, 4, 1, it), LB_DECLINED);
    for (size_t i = 0; i < 2; i++) {
        lb_balancer_record(b, i, &info[0]);
        CHECK_EQ(info[0].selections, 1);
        CHECK_EQ(info[0].in_flight, 0);
    }
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* Two threads acquiring with counted selects and releasing on one private
 * balancer: in flight is exact (an atomic add and a compare-and-swap), the
 * selections may miss picks made at the same instant (lb.h) but never
 * exceed them; under ThreadSanitizer, no race. */
struct counted_arg {
    lb_balancer *b;
    int ok;
};

static void *counted_thread(void *p)
{
    struct counted_arg *a = p;
    lb_iter *it = lb_iter_new();
    const char *err = NULL;
    uint64_t g = lb_balancer_generation(a->b);

    a->ok = it != NULL;
    for (int k = 0; a->ok && k < 20000; k++) {
        int i = lb_balancer_select_counted(a->b, g, "", 0, 4, 1, it);
        a->ok = i >= 0 &&
                lb_balancer_release(a->b, g, (size_t)i, -1, -1, &err) == LB_OK;
    }
    lb_iter_free(it);
    return NULL;
}

static void test_select_counted_threads(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[2] = {parse("127.0.0.1:9000", 1), parse("127.0.0.1:9001", 1)};
    struct counted_arg a[2] = {{b, 0}, {b, 0}};
    pthread_t t[2];
    uint64_t picks = 0;

    CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), 1);
    for (int k = 0; k < 2; k++)
        CHECK_EQ(pthread_create(&t[k], NULL, counted_thread, &a[k]), 0);
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k], NULL);
        CHECK(a[k].ok);
    }
    for (size_t i = 0; i < 2; i++) {
        lb_record_info info;
        lb_balancer_record(b, i, &info);
        CHECK_EQ(info.in_flight, 0);
        picks += info.selections;
    }
    CHECK(picks > 0 && picks <= 40000);
    lb_balancer_free(b);
}

/* The figures metrics read: flips, last check, the histogram, the
 * discovery counts. */
static void test_stats(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[1] = {parse("127.0.0.1:9000", 1)};
    lb_record_stats st;
    uint64_t g, ok, failed;

    CHECK_EQ(lb_balancer_update(b, in, 1, NULL, NULL, &err), 1);
    g = lb_balancer_generation(b);
    CHECK_EQ(lb_balancer_stats(b, 0, &st), LB_OK);
    CHECK_EQ(st.last_check_ms, 0);
    CHECK_EQ(st.flips, 0);
    CHECK_EQ(lb_balancer_check_time(b, g, 0, 0.003), LB_OK);  /* <= 5 ms */
    CHECK_EQ(lb_balancer_check_time(b, g, 0, 0.0001), LB_OK); /* <= 0.5 */
    CHECK_EQ(lb_balancer_check_time(b, g, 0, 7), LB_OK);      /* +Inf */
    CHECK_EQ(lb_balancer_check_time(b, g, 0, -1), LB_OK);     /* untimed */
    CHECK_EQ(lb_balancer_check_time(b, g + 1, 0, 1), LB_STALE);
    lb_balancer_observe(b, g, 0, 0, 1, LB_CHECK_ERR_CONNECT, 111);
    lb_balancer_observe(b, g, 0, 1, 1, 0, 0);
    lb_balancer_stats(b, 0, &st);
    CHECK_EQ(st.flips, 2);
    CHECK_EQ(st.check_timed, 3);
    CHECK_EQ(st.check_buckets[3], 1);
    CHECK_EQ(st.check_buckets[0], 1);
    CHECK_EQ(st.check_time_ns, 7003100000ull);
    CHECK(st.last_check_ms > 1700000000000ull); /* a wall-clock time */
    CHECK_EQ(lb_balancer_stats(b, 1, &st), LB_DECLINED);
    lb_balancer_discovery_count(b, 1);
    lb_balancer_discovery_count(b, 1);
    lb_balancer_discovery_count(b, 0);
    lb_balancer_discovery_counts(b, &ok, &failed);
    CHECK_EQ(ok, 2);
    CHECK_EQ(failed, 1);
    lb_balancer_free(b);
}

int main(void)
{
    TEST(test_stats());
    TEST(test_events_bounded());
    TEST(test_report());
    TEST(test_in_flight());
    TEST(test_select_counted());
    TEST(test_select_counted_threads());
    lb_quiesce();
    return tap_done("test_records");
}
