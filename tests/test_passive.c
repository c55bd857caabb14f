/*
 * test_passive.c - passive health through the C API: ejection after a
 * run of failed reports, its growing and capped duration, the cap on the
 * share ejected, the timed return (lb_balancer_tick) and the early one
 * (a passing active check), panic mode, and slow start's ramp in round
 * robin and random (the share a ramping backend takes against Envoy's
 * formula).
 *
 * Slow start is measured at chosen points of the window by moving the
 * record's ready_since back (the record is reached through the core's
 * private layout): the core's clock is the real one, so nothing waits
 * for the window to pass.  Timed returns wait for a short ejection with
 * a deadline.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "iter.h"
#include "lb.h"
#include "tap.h"
#include "util.h"

#define MAXB 16

static lb_balancer *make(lb_config cfg, size_t n)
{
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[MAXB];
    char addr[64];

    if (!b) {
        fprintf(stderr, "lb_balancer_new: %s\n", err);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(addr, sizeof(addr), "127.0.0.1:%zu", 9000 + i);
        in[i] = parse_backend(addr, 1);
    }
    publish_or_exit(b, in, n);
    return b;
}

static lb_config passive_cfg(uint32_t failures, double t, double tmax,
                             uint32_t pct)
{
    return (lb_config){.selection = LB_SELECT_ROUND_ROBIN,
                       .consecutive_failures = failures,
                       .ejection_time = t,
                       .max_ejection_time = tmax,
                       .max_ejection_percent = pct};
}

static void fail(lb_balancer *b, size_t i, int k)
{
    const char *err = NULL;
    uint64_t g = lb_balancer_generation(b);

    for (int j = 0; j < k; j++)
        if (lb_balancer_report(b, g, i, 0, 0.001, &err) != LB_OK)
            abort();
}

static lb_record_info info(lb_balancer *b, size_t i)
{
    lb_record_info r;

    if (lb_balancer_record(b, i, &r) != LB_OK)
        abort();
    return r;
}

static size_t count_ejected(lb_balancer *b)
{
    size_t n = lb_balancer_count(b), k = 0;

    for (size_t i = 0; i < n; i++)
        k += info(b, i).ejected != 0;
    return k;
}

static int drain(lb_balancer *b, lb_health_event *ev, int max)
{
    return lb_balancer_events(b, ev, max);
}

/* The third failure in a row ejects; a success resets the run; the
 * ejection is a flip whose error names it. */
static void test_eject(void)
{
    lb_balancer *b = make(passive_cfg(3, 30, 300, 100), 2);
    uint64_t g = lb_balancer_generation(b);
    const char *err = NULL;
    lb_health_event ev[8];
    lb_health_info h;
    char text[128];
    double left;

    fail(b, 0, 2);
    CHECK_EQ(lb_balancer_report(b, g, 0, 1, -1, &err), LB_OK);
    fail(b, 0, 2);
    CHECK_EQ(info(b, 0).ejected, 0);
    CHECK_EQ(info(b, 0).passive_failures, 2);
    CHECK_EQ(lb_balancer_ready(b, g, 0), 1);
    fail(b, 0, 1);
    CHECK_EQ(info(b, 0).ejected, 1);
    CHECK_EQ(info(b, 0).ejections, 1);
    CHECK_EQ(info(b, 0).passive_failures, 0);
    CHECK_EQ(lb_balancer_ready(b, g, 0), 0);
    CHECK_EQ(info(b, 0).healthy, 1); /* the active verdict is untouched */
    left = (double)info(b, 0).ejected_until_ns * 1e-9 - now_s();
    CHECK(left > 29 && left <= 30.01);
    CHECK_EQ(drain(b, ev, 8), 1);
    CHECK_EQ(ev[0].healthy, 0);
    CHECK_EQ(ev[0].err_kind, LB_CHECK_ERR_EJECTED);
    CHECK_EQ(ev[0].err_detail, 3);
    lb_check_error_text(ev[0].err_kind, ev[0].err_detail, text, sizeof(text));
    CHECK(strcmp(text, "ejected: 3 consecutive failures") == 0);
    lb_balancer_health(b, 0, &h);
    CHECK_EQ(h.ejected, 1);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_EJECTED);
    /* failures of an ejected backend (requests in flight) change nothing */
    fail(b, 0, 6);
    CHECK_EQ(info(b, 0).ejections, 1);
    CHECK_EQ(drain(b, ev, 8), 0);
    /* select skips it */
    {
        lb_iter *it = lb_iter_new();
        for (int k = 0; k < 10; k++)
            CHECK_EQ(lb_balancer_select(b, NULL, 0, 8, it), 1);
        lb_iter_free(it);
    }
    lb_balancer_free(b);
}

/* The second ejection lasts twice as long as the first, the fourth is
 * capped at max_ejection_time; each ends with a flip back. */
static void test_durations(void)
{
    lb_balancer *b = make(passive_cfg(1, 0.05, 0.12, 100), 1);
    uint64_t g = lb_balancer_generation(b);
    lb_health_event ev[8];
    double t0, span[4];

    for (int k = 0; k < 4; k++) {
        fail(b, 0, 1);
        t0 = now_s();
        CHECK_EQ(info(b, 0).ejected, 1);
        CHECK_EQ(info(b, 0).ejections, (uint32_t)k + 1);
        span[k] = (double)info(b, 0).ejected_until_ns * 1e-9 - t0;
        CHECK(WAIT_FOR(lb_balancer_tick(b) == 1 || !info(b, 0).ejected, 5));
        CHECK(now_s() - t0 >= span[k] - 0.002);
        CHECK_EQ(lb_balancer_ready(b, g, 0), 1);
        CHECK_EQ(drain(b, ev, 8), 2);
        CHECK_EQ(ev[0].healthy, 0);
        CHECK_EQ(ev[1].healthy, 1);
    }
    printf("# ejections lasted %.3f %.3f %.3f %.3f s\n", span[0], span[1],
           span[2], span[3]);
    CHECK(fabs(span[0] - 0.05) < 0.005);
    CHECK(fabs(span[1] - 0.10) < 0.005);
    CHECK(fabs(span[2] - 0.12) < 0.005);
    CHECK(fabs(span[3] - 0.12) < 0.005);
    lb_balancer_free(b);
}

/* Every backend failing: no more than the cap (rounded down) is ejected;
 * 0% ejects none; one returning makes room for the next. */
static void test_cap(void)
{
    struct {
        size_t n;
        uint32_t pct, want;
    } cases[] = {{10, 30, 3}, {3, 50, 1}, {2, 50, 1}, {1, 50, 0},
                 {4, 100, 4}, {5, 0, 0},  {7, 99, 6}};

    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        lb_balancer *b = make(passive_cfg(2, 30, 30, cases[c].pct), cases[c].n);
        for (int round = 0; round < 3; round++)
            for (size_t i = 0; i < cases[c].n; i++)
                fail(b, i, 2);
        CHECK_EQ(count_ejected(b), cases[c].want);
        lb_balancer_free(b);
    }
    {
        lb_balancer *b = make(passive_cfg(2, 30, 30, 50), 4);
        uint64_t g = lb_balancer_generation(b);
        for (size_t i = 0; i < 4; i++)
            fail(b, i, 2);
        CHECK_EQ(count_ejected(b), 2);
        CHECK_EQ(info(b, 2).ejected + info(b, 3).ejected, 0);
        /* an active pass returns backend 0: backend 2's next run of
         * failures ejects it */
        CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 1, 0, 0), 1);
        CHECK_EQ(count_ejected(b), 1);
        fail(b, 2, 1); /* its run goes on: 3 failures, not a multiple */
        CHECK_EQ(info(b, 2).ejected, 0);
        fail(b, 2, 1);
        CHECK_EQ(info(b, 2).ejected, 1);
        CHECK_EQ(count_ejected(b), 2);
        lb_balancer_free(b);
    }
}

/* A passing active check ends an ejection at once; a failing one does
 * not; an actively unhealthy backend that is ejected and then passes
 * becomes ready only when its check threshold says so. */
static void test_active_return(void)
{
    lb_balancer *b = make(passive_cfg(1, 30, 30, 100), 1);
    uint64_t g = lb_balancer_generation(b);
    lb_health_event ev[8];

    fail(b, 0, 1);
    CHECK_EQ(info(b, 0).ejected, 1);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 5, LB_CHECK_ERR_CONNECT, 111), 0);
    CHECK_EQ(info(b, 0).ejected, 1);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 5, 0, 0), 1);
    CHECK_EQ(info(b, 0).ejected, 0);
    CHECK_EQ(info(b, 0).ejected_until_ns, 0);
    CHECK_EQ(lb_balancer_ready(b, g, 0), 1);
    CHECK_EQ(drain(b, ev, 8), 2);
    CHECK_EQ(ev[1].healthy, 1);
    /* unhealthy, then ejected: no flip (it was not ready); a pass below
     * the success threshold ends the ejection, readiness waits */
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 1, LB_CHECK_ERR_CONNECT, 111), 1);
    fail(b, 0, 1);
    CHECK_EQ(info(b, 0).ejected, 1);
    CHECK_EQ(drain(b, ev, 8), 1); /* the check's flip only */
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 2, 0, 0), 0);
    CHECK_EQ(info(b, 0).ejected, 0);
    CHECK_EQ(lb_balancer_ready(b, g, 0), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 2, 0, 0), 1);
    CHECK_EQ(lb_balancer_ready(b, g, 0), 1);
    lb_balancer_free(b);
}

/* Below the threshold of ready enabled backends, select takes any enabled
 * backend, never a disabled one; the iterator's head says so. */
static void test_panic(void)
{
    lb_config cfg = passive_cfg(1, 30, 30, 100);
    lb_balancer *b;
    uint64_t g;
    lb_iter *it = lb_iter_new();
    int seen[4] = {0};

    cfg.panic_threshold = 0.5;
    b = make(cfg, 4);
    g = lb_balancer_generation(b);
    CHECK_EQ(lb_balancer_panic(b), 0);
    lb_balancer_set_enable(b, g, 3, 0);
    CHECK_EQ(lb_balancer_panic(b), 0); /* 3 of 3 enabled ready */
    fail(b, 0, 1);                     /* ejected: 2 of 3 */
    CHECK_EQ(lb_balancer_panic(b), 0);
    lb_balancer_observe(b, g, 1, 0, 1, LB_CHECK_ERR_CONNECT, 111); /* 1/3 */
    CHECK_EQ(lb_balancer_panic(b), 1);
    for (int k = 0; k < 300; k++) {
        int i = lb_balancer_select(b, NULL, 0, 8, it);
        CHECK(i >= 0 && i < 3);
        if (i >= 0)
            seen[i]++;
    }
    printf("# panic picks: %d %d %d %d\n", seen[0], seen[1], seen[2], seen[3]);
    CHECK(seen[0] > 50 && seen[1] > 50 && seen[2] > 50);
    CHECK_EQ(seen[3], 0);
    /* the iterator takes enabled backends and says they are ready */
    {
        int first = lb_iter_first(b, NULL, 0, 8, it), n = 0, idx = first;
        while (idx >= 0) {
            CHECK_EQ(lb_iter_head_of(it)->ready, idx != 3);
            n++;
            idx = lb_iter_next(b, it);
        }
        CHECK_EQ(n, 4);
    }
    /* everything down: still the enabled ones */
    lb_balancer_observe(b, g, 2, 0, 1, LB_CHECK_ERR_CONNECT, 111);
    CHECK_EQ(lb_balancer_panic(b), 1);
    for (int k = 0; k < 30; k++) {
        int i = lb_balancer_select(b, NULL, 0, 8, it);
        CHECK(i >= 0 && i < 3);
    }
    /* all disabled: nothing, and no panic (no enabled backend) */
    for (size_t i = 0; i < 3; i++)
        lb_balancer_set_enable(b, g, i, 0);
    CHECK_EQ(lb_balancer_panic(b), 0);
    CHECK_EQ(lb_balancer_select(b, NULL, 0, 8, it), LB_DECLINED);
    /* recovery ends the panic */
    for (size_t i = 0; i < 3; i++) {
        lb_balancer_set_enable(b, g, i, 1);
        lb_balancer_observe(b, g, i, 1, 1, 0, 0);
    }
    CHECK_EQ(lb_balancer_panic(b), 0);
    /* a new set is counted at once */
    {
        lb_backend three[3] = {parse_backend("127.0.0.1:9000", 1),
                               parse_backend("127.0.0.1:9001", 1),
                               parse_backend("127.0.0.1:9100", 1)};
        lb_balancer_set_enable(b, g, 3, 1);
        lb_balancer_observe(b, g, 0, 0, 1, LB_CHECK_ERR_CONNECT, 111);
        lb_balancer_observe(b, g, 1, 0, 1, LB_CHECK_ERR_CONNECT, 111);
        CHECK_EQ(lb_balancer_panic(b), 0); /* 2 of 4 enabled ready */
        publish_or_exit(b, three, 3);      /* 1 of 3: the two kept are down */
        CHECK_EQ(lb_balancer_panic(b), 1);
    }
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* Backend 1 of two (weight 1 each) is put at fraction x of its window;
 * the share of first picks it gets, over n selects. */
static double ramp_share(lb_balancer *b, double x, double window, int n)
{
    struct lb_snapshot *s = b->snap;
    lb_iter *it = lb_iter_new();
    uint64_t now = lb_clock_coarse_ns();
    int hits = 0;

    atomic_store(&s->rec[0]->ready_since_ns,
                 now - (uint64_t)(2 * window * 1e9));
    atomic_store(&s->rec[1]->ready_since_ns,
                 now - (uint64_t)(x * window * 1e9));
    atomic_store(&s->view.ramping, 1);
    for (int k = 0; k < n; k++)
        hits += lb_balancer_select(b, NULL, 0, 8, it) == 1;
    lb_iter_free(it);
    return (double)hits / n;
}

/* Envoy's share: weight x max(min_weight, x ^ (1 / aggression)). */
static double envoy_share(double x, double aggression, double min_weight)
{
    double f = x >= 1 ? 1 : pow(x, 1 / aggression);

    if (f < min_weight)
        f = min_weight;
    return f / (1 + f);
}

static void test_slow_start(int selection, const char *name)
{
    const double window = 100, xs[] = {0, 0.05, 0.1, 0.25, 0.5, 0.9, 1.5};
    const double aggr[] = {1, 2};

    for (size_t a = 0; a < 2; a++) {
        lb_config cfg = {.selection = selection,
                         .slow_start_window = window,
                         .slow_start_aggression = aggr[a],
                         .slow_start_min_weight = 0.05};
        lb_balancer *b = make(cfg, 2);

        printf("# slow start, %s, aggression %g:", name, aggr[a]);
        for (size_t k = 0; k < sizeof(xs) / sizeof(xs[0]); k++) {
            double got = ramp_share(b, xs[k], window, 40000);
            double want = envoy_share(xs[k], aggr[a], 0.05);
            printf(" %.2f->%.3f (%.3f)", xs[k], got, want);
            CHECK(fabs(got - want) < 0.015);
        }
        printf("\n");
        /* windows over: the sweep lowers the flag, picks read no clock */
        atomic_store(&b->snap->rec[1]->ready_since_ns,
                     lb_clock_coarse_ns() - (uint64_t)(2 * window * 1e9));
        lb_balancer_tick(b);
        CHECK_EQ(atomic_load(&b->snap->view.ramping), 0);
        CHECK_EQ(lb_view_slow_start_now(&b->snap->view), 0);
        lb_balancer_free(b);
    }
}

/* A backend that becomes ready starts its window: a new set, a return
 * from ejection, a recovery, an enable. */
static void test_slow_start_marks(void)
{
    lb_config cfg = passive_cfg(1, 0.01, 0.01, 100);
    lb_balancer *b;
    struct lb_snapshot *s;
    uint64_t g, old;

    cfg.slow_start_window = 10;
    cfg.slow_start_aggression = 1;
    cfg.slow_start_min_weight = 0.1;
    b = make(cfg, 2);
    s = b->snap;
    g = lb_balancer_generation(b);
    CHECK_EQ(atomic_load(&s->view.ramping), 1); /* new records */
    CHECK(lb_view_slow_start_factor(&s->view, 0, lb_clock_coarse_ns()) < 0.2);
    old = lb_clock_coarse_ns() - 60000000000ull;
    atomic_store(&s->rec[0]->ready_since_ns, old);
    atomic_store(&s->rec[1]->ready_since_ns, old);
    lb_balancer_tick(b);
    CHECK_EQ(atomic_load(&s->view.ramping), 0);
    CHECK_EQ(lb_view_slow_start_factor(&s->view, 0, lb_clock_coarse_ns()), 1);
    /* ejected and returned */
    fail(b, 0, 1);
    CHECK(WAIT_FOR(lb_balancer_tick(b) == 1 || !info(b, 0).ejected, 5));
    CHECK_EQ(atomic_load(&s->view.ramping), 1);
    CHECK(atomic_load(&s->rec[0]->ready_since_ns) > old);
    atomic_store(&s->rec[0]->ready_since_ns, old);
    lb_balancer_tick(b);
    CHECK_EQ(atomic_load(&s->view.ramping), 0);
    /* recovered by a check */
    lb_balancer_observe(b, g, 1, 0, 1, LB_CHECK_ERR_CONNECT, 111);
    lb_balancer_observe(b, g, 1, 1, 1, 0, 0);
    CHECK_EQ(atomic_load(&s->view.ramping), 1);
    CHECK(atomic_load(&s->rec[1]->ready_since_ns) > old);
    atomic_store(&s->rec[1]->ready_since_ns, old);
    lb_balancer_tick(b);
    CHECK_EQ(atomic_load(&s->view.ramping), 0);
    /* enabled again */
    lb_balancer_set_enable(b, g, 1, 0);
    CHECK_EQ(atomic_load(&s->view.ramping), 0);
    lb_balancer_set_enable(b, g, 1, 1);
    CHECK_EQ(atomic_load(&s->view.ramping), 1);
    lb_balancer_free(b);
}

/* release: in flight down and, with a result, the report, in one call. */
static void test_release(void)
{
    lb_balancer *b = make(passive_cfg(2, 30, 30, 100), 1);
    uint64_t g = lb_balancer_generation(b);
    const char *err = NULL;

    lb_balancer_in_flight_add(b, g, 0, 1);
    lb_balancer_in_flight_add(b, g, 0, 1);
    CHECK_EQ(info(b, 0).in_flight, 2);
    CHECK_EQ(lb_balancer_release(b, g, 0, 0, 0.01, &err), LB_OK);
    CHECK_EQ(info(b, 0).in_flight, 1);
    CHECK_EQ(info(b, 0).passive_failures, 1);
    CHECK_EQ(lb_balancer_release(b, g, 0, 2, 0.01, &err), LB_ERROR);
    CHECK(strstr(err, "result") != NULL);
    CHECK_EQ(info(b, 0).in_flight, 1); /* a refused release does nothing */
    CHECK_EQ(lb_balancer_release(b, g + 1, 0, -1, -1, &err), LB_STALE);
    CHECK_EQ(lb_balancer_release(b, g, 0, -1, -1, &err), LB_OK);
    CHECK_EQ(info(b, 0).in_flight, 0);
    CHECK_EQ(info(b, 0).passive_failures, 1);
    CHECK_EQ(lb_balancer_release(b, g, 0, 0, -1, &err), LB_OK);
    CHECK_EQ(info(b, 0).in_flight, 0); /* never below zero */
    CHECK_EQ(info(b, 0).ejected, 1);   /* the second failure in a row */
    lb_balancer_free(b);
}

/* Bad passive options are refused, naming the option. */
static void test_config(void)
{
    struct {
        lb_config cfg;
        const char *what;
    } bad[] = {
        {passive_cfg(3, 0, 10, 10), "ejection_time"},
        {passive_cfg(3, 10, 5, 10), "max_ejection_time"},
        {passive_cfg(3, 10, 1e6, 10), "max_ejection_time"},
        {passive_cfg(3, 10, 10, 101), "max_ejection_percent"},
        {{.panic_threshold = 1.5}, "panic_threshold"},
        {{.panic_threshold = NAN}, "panic_threshold"},
        {{.slow_start_window = -1}, "window"},
        {{.slow_start_window = 10,
          .slow_start_aggression = 0,
          .slow_start_min_weight = 0.1},
         "aggression"},
        {{.slow_start_window = 10,
          .slow_start_aggression = 1,
          .slow_start_min_weight = 0},
         "min_weight"},
    };

    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        const char *err = NULL;
        lb_balancer *b = lb_balancer_new(&bad[k].cfg, &err);
        CHECK(b == NULL);
        CHECK(err && strstr(err, bad[k].what) != NULL);
        lb_balancer_free(b);
    }
}

/* The set counted by state: each backend that is not ready in exactly one
 * of disabled, unhealthy and ejected; the newest check of any. */
static void test_tally(void)
{
    lb_balancer *b = make(passive_cfg(1, 30, 300, 100), 5);
    uint64_t g = lb_balancer_generation(b);
    lb_tally t;

    lb_balancer_tally(b, &t);
    CHECK_EQ(t.backends, 5);
    CHECK_EQ(t.ready, 5);
    CHECK_EQ(t.checked, 0);
    CHECK(t.last_check_ms == 0);
    CHECK_EQ(lb_balancer_set_enable(b, g, 0, 0), LB_OK);
    /* disabled and unhealthy counts as disabled */
    CHECK_EQ(lb_balancer_set_enable(b, g, 1, 0), LB_OK);
    CHECK(lb_balancer_observe(b, g, 1, 0, 1, LB_CHECK_ERR_CUSTOM, 0) >= 0);
    CHECK(lb_balancer_observe(b, g, 2, 0, 1, LB_CHECK_ERR_CUSTOM, 0) >= 0);
    CHECK_EQ(lb_balancer_check_time(b, g, 2, 0.001), LB_OK);
    fail(b, 3, 1);
    lb_balancer_tally(b, &t);
    CHECK_EQ(t.backends, 5);
    CHECK_EQ(t.ready, 1);
    CHECK_EQ(t.disabled, 2);
    CHECK_EQ(t.unhealthy, 1);
    CHECK_EQ(t.ejected, 1);
    CHECK_EQ(t.checked, 1);
    CHECK(t.last_check_ms > 1700000000000ull); /* a wall clock, in ms */
    lb_balancer_free(b);
}

int main(void)
{
    TEST(test_tally());
    TEST(test_eject());
    TEST(test_durations());
    TEST(test_cap());
    TEST(test_active_return());
    TEST(test_panic());
    TEST(test_slow_start(LB_SELECT_ROUND_ROBIN, "round_robin"));
    TEST(test_slow_start(LB_SELECT_RANDOM, "random"));
    TEST(test_slow_start_marks());
    TEST(test_config());
    TEST(test_release());
    lb_quiesce();
    return tap_done("test_passive");
}
