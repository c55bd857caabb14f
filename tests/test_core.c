/*
 * test_core.c - the C API without Lua: addresses, order, pick orders
 * pinned to Pingora's tests, the unique iterator, health thresholds,
 * updates that keep health records.
 */
#include <stdlib.h>
#include <string.h>

#include "iter.h"
#include "lb.h"
#include "tap.h"
#include "util.h"

static lb_backend parse(const char *s, uint32_t w)
{
    return parse_backend(s, w);
}

static lb_balancer *make(int sel, const char **addrs, const uint32_t *w,
                         size_t n)
{
    lb_config cfg = {.selection = sel};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[16];

    for (size_t i = 0; i < n; i++)
        in[i] = parse(addrs[i], w ? w[i] : 1);
    CHECK(lb_balancer_update(b, in, n, NULL, NULL, &err) == 1);
    return b;
}

static const char *addr_of(lb_balancer *b, int idx)
{
    static lb_backend out;
    if (idx < 0 || lb_balancer_backend(b, (size_t)idx, &out) != LB_OK)
        return "none";
    return out.addr;
}

static void test_parse(void)
{
    lb_backend b;
    const char *err = NULL;

    b = parse("[0:0::1]:80", 1);
    CHECK(strcmp(b.addr, "[::1]:80") == 0);
    CHECK(strcmp(b.host, "::1") == 0);
    CHECK_EQ(b.family, LB_AF_INET6);
    b = parse("unix:/tmp/x", 2);
    CHECK(strcmp(b.host, "/tmp/x") == 0);
    CHECK_EQ(b.weight, 2);
    CHECK(lb_backend_parse("1.2.3.4:80", 10, 0, &b, &err) == LB_ERROR);
    CHECK(strstr(err, "weight") != NULL);
    CHECK(lb_backend_parse("1.2.3.4:99999", 13, 1, &b, &err) == LB_ERROR);
    CHECK(lb_backend_parse("1.2.3.4", 7, 1, &b, &err) == LB_ERROR);
    CHECK(lb_backend_parse("[::1]", 5, 1, &b, &err) == LB_ERROR);
    CHECK(lb_backend_parse("1.2.3.4:8\0", 10, 1, &b, &err) == LB_ERROR);
}

static void test_order(void)
{
    lb_backend v4 = parse("9.0.0.1:80", 1), v4b = parse("10.0.0.1:80", 1);
    lb_backend v4w = parse("10.0.0.1:80", 2), v6 = parse("[::1]:1", 1);
    lb_backend ux = parse("unix:/a", 1);

    CHECK(lb_backend_compare(&v4, &v4b) < 0);
    CHECK(lb_backend_compare(&v4b, &v4w) < 0);
    CHECK(lb_backend_compare(&v4w, &v6) < 0);
    CHECK(lb_backend_compare(&v6, &ux) < 0);
    CHECK(lb_backend_compare(&ux, &ux) == 0);
}

/* Pingora weighted.rs test_fnv: b2 has weight 10. */
static void test_fnv(void)
{
    const char *a[] = {"1.1.1.1:80", "1.0.0.1:80", "1.0.0.255:80"};
    uint32_t w[] = {1, 10, 1};
    lb_balancer *b = make(LB_SELECT_FNV, a, w, 3);
    lb_iter *it = lb_iter_new();
    const char *expect[] = {"1.0.0.1:80", "1.0.0.1:80", "1.0.0.255:80",
                            "1.1.1.1:80", "1.0.0.1:80", "1.0.0.1:80",
                            "1.0.0.1:80"};
    char key[16];

    for (int i = 1; i <= 7; i++) {
        snprintf(key, sizeof(key), "test%d", i);
        CHECK(strcmp(addr_of(b, lb_balancer_select(b, key, 5, 1, it)),
                     expect[i - 1]) == 0);
    }
    /* walk of "test": unique b2, b1, b3, then nothing */
    CHECK(strcmp(addr_of(b, lb_iter_first(b, "test", 4, 100, it)),
                 "1.0.0.1:80") == 0);
    CHECK(strcmp(addr_of(b, lb_iter_next(b, it)), "1.1.1.1:80") == 0);
    CHECK(strcmp(addr_of(b, lb_iter_next(b, it)), "1.0.0.255:80") == 0);
    CHECK_EQ(lb_iter_next(b, it), LB_DECLINED);
    /* all three returned: the walk stopped without stepping to 100 */
    CHECK_EQ(it->nseen, 3);
    CHECK_EQ(it->steps, 5);
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* Pingora consistent.rs test_ketama. */
static void test_ketama(void)
{
    const char *a[] = {"1.1.1.1:80", "1.0.0.1:80", "1.0.0.255:80"};
    const char *expect = "21111313122111121112"; /* b1 b2 b3 per key */
    const char *names[] = {NULL, "1.1.1.1:80", "1.0.0.1:80", "1.0.0.255:80"};
    lb_balancer *b = make(LB_SELECT_CONSISTENT, a, NULL, 3);
    lb_iter *it = lb_iter_new();
    char key[16];

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "test%d", i);
        CHECK(strcmp(addr_of(b, lb_balancer_select(b, key, 5, 1, it)),
                     names[expect[i] - '0']) == 0);
    }
    {
        lb_backend two[2] = {parse(a[0], 1), parse(a[1], 1)};
        const char *err;
        CHECK_EQ(lb_balancer_update(b, two, 2, NULL, NULL, &err), 1);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "test%d", i);
        CHECK(strcmp(addr_of(b, lb_balancer_select(b, key, 5, 1, it)),
                     names[expect[10 + i] - '0']) == 0);
    }
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* Pingora weighted.rs test_round_robin: b2 has weight 8. */
static void test_round_robin(void)
{
    const char *a[] = {"1.1.1.1:80", "1.0.0.1:80", "1.0.0.255:80"};
    uint32_t w[] = {1, 8, 1};
    lb_balancer *b = make(LB_SELECT_ROUND_ROBIN, a, w, 3);
    lb_iter *it = lb_iter_new();
    const char *seq[] = {"1.0.0.1:80",   "1.0.0.1:80", "1.0.0.1:80",
                         "1.0.0.255:80", "1.1.1.1:80", "1.0.0.1:80",
                         "1.0.0.1:80"};

    CHECK(strcmp(addr_of(b, lb_iter_first(b, "", 0, 5, it)), "1.0.0.1:80") ==
          0);
    CHECK(strcmp(addr_of(b, lb_iter_next(b, it)), "1.0.0.255:80") == 0);
    CHECK(strcmp(addr_of(b, lb_iter_next(b, it)), "1.1.1.1:80") == 0);
    CHECK_EQ(lb_iter_next(b, it), LB_DECLINED); /* b2, b3 again: no new */
    for (int i = 0; i < 7; i++)
        CHECK(strcmp(addr_of(b, lb_balancer_select(b, "", 0, 5, it)), seq[i]) ==
              0);
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* Pingora's observe_health with thresholds 2 (success) and 3 (failure). */
static void test_thresholds(void)
{
    const char *a[] = {"10.0.0.1:1"};
    lb_balancer *b = make(LB_SELECT_ROUND_ROBIN, a, NULL, 1);
    uint64_t g = lb_balancer_generation(b);
    lb_health_info hi;

    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 3, 1, 111), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 3, 1, 111), 0);
    lb_balancer_health(b, 0, &hi);
    CHECK_EQ(hi.consecutive, 2);
    CHECK_EQ(hi.err_kind, 1);
    CHECK_EQ(hi.err_detail, 111);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 2, 0, 0), 0); /* reset */
    lb_balancer_health(b, 0, &hi);
    CHECK_EQ(hi.consecutive, 0);
    CHECK_EQ(hi.err_kind, 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 3, 1, 1), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 3, 1, 1), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 3, 1, 1), 1); /* flip */
    CHECK_EQ(lb_balancer_ready(b, g, 0), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 0, 3, 1, 1), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 2, 0, 0), 0);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 2, 0, 0), 1);
    CHECK_EQ(lb_balancer_ready(b, g, 0), 1);
    CHECK_EQ(lb_balancer_observe(b, g + 1, 0, 0, 1, 1, 1), LB_STALE);
    lb_balancer_free(b);
}

/* A backend that stays keeps its record (id, enablement); a new one starts
 * healthy; enable flags apply even when the set is unchanged. */
static void test_update_keeps_health(void)
{
    lb_config cfg = {.selection = LB_SELECT_FNV};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[3] = {parse("10.0.0.2:1", 1), parse("10.0.0.1:1", 1),
                        parse("10.0.0.1:1", 1)};
    uint32_t order[3];
    size_t count = 0;
    lb_health_info h0, h1;

    CHECK_EQ(lb_balancer_update(b, in, 3, order, &count, &err), 1);
    CHECK_EQ(count, 2);
    CHECK_EQ(order[0], 1);
    CHECK_EQ(order[1], 0);
    lb_balancer_health(b, 1, &h0); /* 10.0.0.2 */
    CHECK_EQ(lb_balancer_set_enable(b, lb_balancer_generation(b), 1, 0), 0);
    CHECK_EQ(lb_balancer_update(b, in, 3, NULL, NULL, &err), 0);
    in[1] = parse("10.0.0.3:1", 1);
    in[2] = parse("10.0.0.3:1", 1);
    CHECK_EQ(lb_balancer_update(b, in, 3, NULL, NULL, &err), 1);
    lb_balancer_health(b, 0, &h1);
    CHECK_EQ(h1.id, h0.id);
    CHECK_EQ(h1.enabled, 0);
    lb_balancer_health(b, 1, &h1);
    CHECK(h1.id != h0.id);
    CHECK_EQ(h1.healthy, 1);
    in[0].enable = 1;
    CHECK_EQ(lb_balancer_update(b, in, 1, NULL, NULL, &err), 1);
    lb_balancer_health(b, 0, &h1);
    CHECK_EQ(h1.enabled, 1);
    /* a failing update leaves the set alone */
    in[0].weight = 0;
    CHECK_EQ(lb_balancer_update(b, in, 1, NULL, NULL, &err), LB_ERROR);
    CHECK_EQ(lb_balancer_count(b), 1);
    lb_balancer_free(b);
}

/* Both balancers are at generation 2 (new, one update): a walk begun on
 * one and continued on the other is stale, never a walk over the other's
 * set with a bitmap sized for the first. */
static void test_iter_other_balancer(void)
{
    const char *one[] = {"10.0.0.1:1"};
    const char *many[] = {"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1",
                          "10.0.0.4:1", "10.0.0.5:1", "10.0.0.6:1"};
    lb_balancer *a = make(LB_SELECT_FNV, one, NULL, 1);
    lb_balancer *b = make(LB_SELECT_FNV, many, NULL, 6);
    lb_iter *it = lb_iter_new();

    CHECK_EQ(lb_balancer_generation(a), lb_balancer_generation(b));
    CHECK_EQ(lb_iter_first(a, "k", 1, 64, it), 0);
    CHECK_EQ(lb_iter_next(b, it), LB_STALE);
    CHECK_EQ(lb_iter_next(a, it), LB_DECLINED);
    lb_iter_free(it);
    lb_balancer_free(a);
    lb_balancer_free(b);
}

/*
 * No select spins: every backend down and max_iterations = 2^31.  Pingora's
 * iterator would take every step (7-10 s for round robin); a walk must
 * cost O(backends) whatever the cap, for every algorithm.  Round robin's
 * counter still advances as if every step was taken: with 3 backends of
 * weight 1, the next first pick is expanded[2^31 % 3] = index 2.
 */
static void test_no_spin(void)
{
    const char *a[] = {"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"};
    const uint32_t big = 1u << 31;
    int algs[] = {LB_SELECT_ROUND_ROBIN, LB_SELECT_RANDOM, LB_SELECT_FNV,
                  LB_SELECT_CONSISTENT};

    for (size_t k = 0; k < sizeof(algs) / sizeof(algs[0]); k++) {
        lb_balancer *b = make(algs[k], a, NULL, 3);
        lb_iter *it = lb_iter_new();
        uint64_t g = lb_balancer_generation(b);
        double t0;
        int rc, walked = 0;

        for (size_t i = 0; i < 3; i++)
            lb_balancer_set_enable(b, g, i, 0);
        t0 = now_s();
        CHECK_EQ(lb_balancer_select(b, "key", 3, big, it), LB_DECLINED);
        CHECK_EQ(lb_iter_next(b, it), LB_DECLINED);
        rc = lb_iter_first(b, "key", 3, big, it);
        while (rc >= 0 && walked < 10) {
            walked++;
            rc = lb_iter_next(b, it);
        }
        CHECK_EQ(rc, LB_DECLINED);
        CHECK_EQ(walked, 3);
        /* generous for a shared, sanitised CPU; the spin took seconds */
        CHECK(now_s() - t0 < 1.0);
        if (algs[k] == LB_SELECT_ROUND_ROBIN) {
            /* select took 2^31 steps, the walk 2^31: the counter is at 2^32 */
            for (size_t i = 0; i < 3; i++)
                lb_balancer_set_enable(b, g, i, 1);
            CHECK_EQ(lb_balancer_select(b, "", 0, 1, it),
                     (int)((2ull << 31) % 3));
            CHECK_EQ(lb_balancer_select(b, "", 0, 1, it),
                     (int)(((2ull << 31) + 1) % 3));
        }
        lb_iter_free(it);
        lb_balancer_free(b);
    }
}

/*
 * A weight-only change keeps the backend's record (health, enablement,
 * id), as nginx, Envoy and Kong do: an operator's disable survives a
 * re-weight by discovery, and with start_unhealthy a re-weighted backend
 * that passed its checks stays ready.  Exact (address, weight) matches are
 * paired first; the address's other records go to its re-weighted entries
 * in weight order; an address new to the set starts afresh.
 */
static void test_reweight_keeps_record(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN, .start_unhealthy = 1};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[3] = {parse("10.0.0.1:1", 1), parse("10.0.0.2:1", 1),
                        parse("10.0.0.3:1", 1)};
    lb_health_info h[3], k;
    uint64_t g;

    CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), 1);
    g = lb_balancer_generation(b);
    CHECK_EQ(lb_balancer_observe(b, g, 0, 1, 1, 0, 0), 1);
    CHECK_EQ(lb_balancer_observe(b, g, 1, 1, 1, 0, 0), 1);
    CHECK_EQ(lb_balancer_set_enable(b, g, 0, 0), LB_OK);
    lb_balancer_health(b, 0, &h[0]);
    lb_balancer_health(b, 1, &h[1]);

    in[0].weight = 5;
    in[1].weight = 3;
    CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), 1);
    g = lb_balancer_generation(b);
    lb_balancer_health(b, 0, &k);
    CHECK_EQ(k.id, h[0].id);
    CHECK_EQ(k.enabled, 0); /* the operator's disable stays */
    CHECK_EQ(k.healthy, 1);
    lb_balancer_health(b, 1, &k);
    CHECK_EQ(k.id, h[1].id);
    CHECK_EQ(k.healthy, 1);
    CHECK_EQ(lb_balancer_ready(b, g, 1), 1); /* no round needed */
    {
        lb_iter *it = lb_iter_new();
        for (int i = 0; i < 8; i++) /* the disabled one is never picked */
            CHECK_EQ(lb_balancer_select(b, "", 0, 4, it), 1);
        lb_iter_free(it);
    }

    /* 10.0.0.2 at weights 3 and 7: the exact match keeps its record, the
     * new weight starts afresh (unhealthy) */
    in[2] = parse("10.0.0.2:1", 7);
    CHECK_EQ(lb_balancer_update(b, in, 3, NULL, NULL, &err), 1);
    lb_balancer_health(b, 1, &k); /* 10.0.0.2, weight 3 */
    CHECK_EQ(k.id, h[1].id);
    lb_balancer_health(b, 2, &h[2]); /* weight 7 */
    CHECK(h[2].id != h[1].id);
    CHECK_EQ(h[2].healthy, 0);
    /* both go, weight 4 arrives: it takes the first of the address's
     * records (weight 3's) */
    in[1].weight = 4;
    CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), 1);
    lb_balancer_health(b, 1, &k);
    CHECK_EQ(k.id, h[1].id);
    CHECK_EQ(k.healthy, 1);
    lb_balancer_free(b);
}

/* The registry: ids by name, flags, the list of names, unknown names. */
static void test_registry(void)
{
    uint32_t flags = 0;
    int n = 0;

    CHECK_EQ(lb_selection_find("round_robin", 11, &flags),
             LB_SELECT_ROUND_ROBIN);
    CHECK(flags & LB_SELECTION_KEYLESS);
    CHECK(flags & LB_SELECTION_OBSERVABLE_STEPS);
    CHECK_EQ(lb_selection_find("random", 6, &flags), LB_SELECT_RANDOM);
    CHECK_EQ(flags, LB_SELECTION_KEYLESS);
    CHECK_EQ(lb_selection_find("fnv", 3, &flags), LB_SELECT_FNV);
    CHECK_EQ(flags, 0);
    CHECK_EQ(lb_selection_find("consistent", 10, &flags), LB_SELECT_CONSISTENT);
    CHECK_EQ(flags, LB_SELECTION_POINTS | LB_SELECTION_BOUNDED);
    CHECK_EQ(lb_selection_find("fnvx", 3, NULL), LB_SELECT_FNV); /* len */
    CHECK_EQ(lb_selection_find("fnv", 2, NULL), LB_DECLINED);
    CHECK_EQ(lb_selection_find("round_robin ", 12, NULL), LB_DECLINED);
    CHECK_EQ(lb_selection_find(NULL, 0, NULL), LB_DECLINED);
    while (lb_selection_name(n)) {
        const char *name = lb_selection_name(n);
        CHECK_EQ(lb_selection_find(name, strlen(name), NULL), n);
        n++;
    }
    CHECK_EQ(n, 8);
    CHECK(lb_selection_name(-1) == NULL);
    {
        lb_config cfg = {.selection = n};
        const char *err = NULL;
        CHECK(lb_balancer_new(&cfg, &err) == NULL);
        CHECK(strstr(err, "selection") != NULL);
    }
}

int main(void)
{
    TEST(test_parse());
    TEST(test_order());
    TEST(test_fnv());
    TEST(test_ketama());
    TEST(test_round_robin());
    TEST(test_thresholds());
    TEST(test_update_keeps_health());
    TEST(test_iter_other_balancer());
    TEST(test_no_spin());
    TEST(test_reweight_keeps_record());
    TEST(test_registry());
    return tap_done("test_core");
}
