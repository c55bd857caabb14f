/*
 * test_lifecycle.c - create, update, select, destroy, many times over.
 *
 * Under the asan variant (LeakSanitizer on) every snapshot, selector,
 * health record and iterator must be gone at exit.  Retired snapshots are
 * freed by liburcu's call_rcu thread after a grace period, so the test
 * ends with lb_quiesce(): after it, anything still allocated is a leak and
 * no longer reachable through liburcu's queue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lb.h"
#include "tap.h"

#define CYCLES 300
#define MAX_SET 200

static uint64_t rng = 88172645463325252ull;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void make_backend(uint32_t k, lb_backend *out)
{
    char text[64];
    const char *err;
    int len;

    /* a mix of families, so every comparison path of the sort runs */
    switch (k % 3) {
    case 0:
        len = snprintf(text, sizeof(text), "10.0.%u.%u:%u", k / 250 % 250,
                       k % 250, 8000 + k % 7);
        break;
    case 1:
        len = snprintf(text, sizeof(text), "[fd00::%x]:%u", k, 9000 + k % 5);
        break;
    default:
        len = snprintf(text, sizeof(text), "unix:/tmp/lb-life-%u.sock", k);
        break;
    }
    if (lb_backend_parse(text, (size_t)len, 1 + k % 4, out, &err) != LB_OK) {
        fprintf(stderr, "parse %s: %s\n", text, err);
        abort();
    }
}

/* One update with a random overlapping set; returns its size. */
static size_t random_update(lb_balancer *b, lb_backend *in, uint32_t *order)
{
    static const size_t sizes[] = {0, 1, 2, 5, 17, 64, MAX_SET};
    size_t n = sizes[next_rand() % (sizeof(sizes) / sizeof(sizes[0]))];
    uint32_t first = (uint32_t)(next_rand() % 50);
    size_t count = 0;
    const char *err = NULL;
    int rc;

    for (size_t i = 0; i < n; i++)
        make_backend(first + (uint32_t)i, &in[i]);
    rc = lb_balancer_update(b, in, n, order, &count, &err);
    CHECK(rc == 0 || rc == 1);
    CHECK_EQ(count, n);
    CHECK_EQ(lb_balancer_count(b), n);
    return n;
}

static void exercise(lb_balancer *b, lb_iter *it, size_t n)
{
    char key[16];

    for (int k = 0; k < 20; k++) {
        int len = snprintf(key, sizeof(key), "key-%d", k);
        int idx = lb_balancer_select(b, key, (size_t)len, 8, it);

        if (n == 0) {
            CHECK_EQ(idx, LB_DECLINED);
            continue;
        }
        CHECK(idx >= 0 && (size_t)idx < n);
        if (k % 4 == 0) {
            int steps = 0;

            for (idx = lb_iter_first(b, key, (size_t)len, 64, it); idx >= 0;
                 idx = lb_iter_next(b, it))
                steps++;
            CHECK_EQ(idx, LB_DECLINED);
            CHECK(steps >= 1 && (size_t)steps <= n);
        }
    }
    if (n > 0) {
        uint64_t gen = lb_balancer_generation(b);
        size_t i = next_rand() % n;
        lb_health_info hi;
        int rc;

        CHECK_EQ(lb_balancer_set_enable(b, gen, i, 0), LB_OK);
        CHECK_EQ(lb_balancer_ready(b, gen, i), 0);
        rc = lb_balancer_observe(b, gen, i, 0, 1, 1, 111);

        CHECK(rc == 0 || rc == 1);
        CHECK_EQ(lb_balancer_health(b, i, &hi), LB_OK);
        CHECK_EQ(hi.healthy, 0);
        CHECK_EQ(hi.err_detail, 111);
        CHECK_EQ(lb_balancer_observe(b, gen, i, 1, 1, 0, 0), 1);
        CHECK_EQ(lb_balancer_set_enable(b, gen, i, 1), LB_OK);
        CHECK_EQ(lb_balancer_ready(b, gen, i), 1);
    }
}

int main(void)
{
    static lb_backend in[MAX_SET];
    static uint32_t order[MAX_SET];
    const char *err = NULL;
    lb_config bad = {.selection = 42};

    /* failures build nothing */
    CHECK(lb_balancer_new(&bad, &err) == NULL);
    bad = (lb_config){.selection = LB_SELECT_CONSISTENT,
                      .point_multiple = LB_MAX_POINT_MULTIPLE + 1};
    CHECK(lb_balancer_new(&bad, &err) == NULL);

    for (int c = 0; c < CYCLES; c++) {
        lb_config cfg = {.selection = c % 4,
                         .point_multiple = c % 8 == 3 ? 40 : 0,
                         .start_unhealthy = c % 16 == 5};
        lb_balancer *b = lb_balancer_new(&cfg, &err);
        lb_iter *it = c % 2 ? lb_iter_new() : NULL;
        int updates = (int)(next_rand() % 5);

        CHECK(b != NULL);
        if (!b)
            continue;
        if (!it)
            it = lb_iter_new();
        for (int u = 0; u < updates; u++) {
            size_t n = random_update(b, in, order);

            if (!cfg.start_unhealthy)
                exercise(b, it, n);
        }
        /* a failed update leaves the published set alone */
        if (c % 10 == 0) {
            size_t before = lb_balancer_count(b);
            uint64_t gen = lb_balancer_generation(b);

            make_backend(7, &in[0]);
            in[0].weight = LB_MAX_WEIGHT + 1;
            CHECK_EQ(lb_balancer_update(b, in, 1, NULL, NULL, &err), LB_ERROR);
            CHECK_EQ(lb_balancer_count(b), before);
            CHECK_EQ(lb_balancer_generation(b), gen);
        }
        /* a ring over the point cap is refused (consistent only) */
        if (cfg.selection == LB_SELECT_CONSISTENT && c % 12 == 3) {
            lb_config big = {.selection = LB_SELECT_CONSISTENT,
                             .point_multiple = LB_MAX_POINT_MULTIPLE};
            lb_balancer *r = lb_balancer_new(&big, &err);

            CHECK(r != NULL);
            for (int i = 0; i < 17; i++) {
                make_backend((uint32_t)i * 3, &in[i]);
                in[i].weight = LB_MAX_WEIGHT;
            }
            CHECK_EQ(lb_balancer_update(r, in, 17, NULL, NULL, &err), LB_ERROR);
            CHECK_EQ(lb_balancer_count(r), 0);
            lb_balancer_free(r);
        }
        lb_iter_free(it);
        lb_balancer_free(b);
        if (c % 50 == 49)
            lb_quiesce();
    }
    lb_balancer_free(NULL);
    lb_iter_free(NULL);
    lb_quiesce();
    return tap_done("test_lifecycle");
}
