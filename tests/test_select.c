/*
 * test_select.c - the round-2 selection algorithms through the C API:
 * weighted_round_robin's smooth sequence (also with backends not ready,
 * and from threads at once), least_request's and peak_ewma's shares under
 * fixed counts and latencies, Maglev's table (filled, weighted, minimal
 * disruption, deterministic), bounded loads, and every algorithm under
 * the generic walk (unique, max_iterations, an outage declined in O(n)).
 * Addresses are selection data only: nothing connects.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "select/maglev.h"
#include "tap.h"
#include "util.h"

#define NMAX 1100

static int sel_id(const char *name)
{
    int id = lb_selection_find(name, strlen(name), NULL);

    if (id < 0) {
        fprintf(stderr, "no algorithm %s\n", name);
        abort();
    }
    return id;
}

static lb_balancer *make_cfg(lb_config cfg, const lb_backend *be, size_t n)
{
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);

    if (!b) {
        fprintf(stderr, "new: %s\n", err);
        abort();
    }
    if (n)
        publish_or_exit(b, be, n);
    return b;
}

/* n backends 10.0.(i/250).(i%250+1):80, weights w (NULL: 1), in sorted
 * order. */
static void backends(lb_backend *out, size_t n, const uint32_t *w)
{
    for (size_t i = 0; i < n; i++) {
        char a[32];
        snprintf(a, sizeof(a), "10.0.%zu.%zu:80", i / 250, i % 250 + 1);
        out[i] = parse_backend(a, w ? w[i] : 1);
    }
}

static lb_balancer *make(const char *sel, size_t n, const uint32_t *w)
{
    static lb_backend be[NMAX];

    backends(be, n, w);
    return make_cfg((lb_config){.selection = sel_id(sel)}, be, n);
}

/* nginx's ngx_http_upstream_get_peer over the ready backends, as a
 * reference independent of the selector's code. */
static int swrr_ref(int64_t *cw, const uint32_t *w, const int *ready, int n)
{
    int64_t total = 0;
    int best = -1;

    for (int i = 0; i < n; i++) {
        if (!ready[i])
            continue;
        cw[i] += w[i];
        total += w[i];
        if (best < 0 || cw[i] > cw[best])
            best = i;
    }
    if (best >= 0)
        cw[best] -= total;
    return best;
}

/* nginx's documented sequence for weights 5, 1, 1 (its source's comment:
 * "a a b a c a a"), and the reference with backends disabled: the others
 * keep their weights, so 1, 2, 1 with the last down splits 1:2. */
static void test_wrr_sequence(void)
{
    const uint32_t w511[] = {5, 1, 1};
    const char *want = "aabacaa";
    lb_balancer *b = make("weighted_round_robin", 3, w511);
    lb_iter *it = lb_iter_new();
    char got[15] = "";

    for (int k = 0; k < 14; k++)
        got[k] = (char)('a' + lb_balancer_select(b, "", 0, 1, it));
    CHECK(strncmp(got, want, 7) == 0 && strncmp(got + 7, want, 7) == 0);
    lb_balancer_free(b);

    {
        const uint32_t w[] = {1, 2, 1, 4, 3};
        int ready[] = {1, 1, 0, 1, 0};
        int64_t cw[5] = {0};
        int bad = 0, counts[5] = {0};
        uint64_t g;

        b = make("weighted_round_robin", 5, w);
        g = lb_balancer_generation(b);
        lb_balancer_set_enable(b, g, 2, 0);
        lb_balancer_set_enable(b, g, 4, 0);
        for (int k = 0; k < 700; k++) {
            int pick;
            if (k == 350) {
                /* one comes back: from now on it takes turns again */
                lb_balancer_set_enable(b, g, 2, 1);
                ready[2] = 1;
            }
            pick = lb_balancer_select(b, "", 0, 1, it);
            bad += pick != swrr_ref(cw, w, ready, 5);
            if (k < 350)
                counts[pick]++;
        }
        CHECK_EQ(bad, 0);
        /* 350 picks = 50 rounds of weights 1 + 2 + 4 */
        CHECK_EQ(counts[0], 50);
        CHECK_EQ(counts[1], 100);
        CHECK_EQ(counts[3], 200);
        CHECK_EQ(counts[2] + counts[4], 0);
        lb_balancer_free(b);
    }
    lb_iter_free(it);
}

/* Every algorithm: the unique walk yields each backend once, a cap of 1
 * yields one, and with every backend disabled select and the walk end
 * after one pass, however large max_iterations is (test_core's
 * test_no_spin, for the new algorithms). */
static void test_walk_generic(void)
{
    const uint32_t w[] = {1, 3, 2, 1, 5};
    const uint32_t big = 1u << 31;

    for (int id = 0; lb_selection_name(id); id++) {
        static lb_backend be[5];
        lb_balancer *b;
        lb_iter *it = lb_iter_new();
        uint64_t g;
        int rc, walked = 0, seen = 0;
        double t0;

        backends(be, 5, w);
        b = make_cfg((lb_config){.selection = id}, be, 5);
        g = lb_balancer_generation(b);
        rc = lb_iter_first(b, "k", 1, 100000, it);
        while (rc >= 0) {
            CHECK(!(seen & (1 << rc)));
            seen |= 1 << rc;
            walked++;
            rc = lb_iter_next(b, it);
        }
        CHECK_EQ(rc, LB_DECLINED);
        CHECK_EQ(walked, 5);
        CHECK_EQ(seen, 31);
        CHECK(lb_iter_first(b, "k", 1, 1, it) >= 0);
        CHECK_EQ(lb_iter_next(b, it), LB_DECLINED);

        for (size_t i = 0; i < 5; i++)
            lb_balancer_set_enable(b, g, i, 0);
        t0 = now_s();
        CHECK_EQ(lb_balancer_select(b, "key", 3, big, it), LB_DECLINED);
        CHECK_EQ(lb_iter_next(b, it), LB_DECLINED);
        walked = 0;
        rc = lb_iter_first(b, "key", 3, big, it);
        while (rc >= 0 && walked < 10) {
            walked++;
            rc = lb_iter_next(b, it);
        }
        CHECK_EQ(rc, LB_DECLINED);
        CHECK_EQ(walked, 5);
        CHECK(now_s() - t0 < 1.0); /* generous: a spin takes seconds */
        /* one back: select finds it, whatever the key */
        lb_balancer_set_enable(b, g, 3, 1);
        CHECK_EQ(lb_balancer_select(b, "key", 3, 1000, it), 3);
        lb_iter_free(it);
        lb_balancer_free(b);
    }
}

/* |observed - expected| within 5 standard deviations of a binomial: fails
 * for a wrong share, passes by chance with probability 1 - 6e-7. */
static int within(long obs, long n, double p)
{
    double sd = sqrt((double)n * p * (1 - p));
    return fabs((double)obs - (double)n * p) <= 5 * sd + 1;
}

/* Fixed in-flight counts 1, 2, 3, 4: with two distinct choices drawn
 * uniformly, backend i wins the pairs with a more loaded backend: 3, 2, 1,
 * 0 of the 6 pairs. */
static void test_lr_distribution(void)
{
    lb_balancer *b = make("least_request", 4, NULL);
    uint64_t g = lb_balancer_generation(b);
    lb_iter *it = lb_iter_new();
    long counts[4] = {0};
    const long n = 60000;

    for (int i = 0; i < 4; i++)
        lb_balancer_in_flight_add(b, g, (size_t)i, i + 1);
    for (long k = 0; k < n; k++)
        counts[lb_balancer_select(b, "", 0, 1, it)]++;
    CHECK(within(counts[0], n, 3.0 / 6));
    CHECK(within(counts[1], n, 2.0 / 6));
    CHECK(within(counts[2], n, 1.0 / 6));
    CHECK_EQ(counts[3], 0);
    printf("# least_request 1,2,3,4 in flight: %ld %ld %ld %ld of %ld\n",
           counts[0], counts[1], counts[2], counts[3], n);
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* 10,000 acquires without release keep the counts within a few of each
 * other; a backend that holds many requests gets almost nothing new; with
 * weights 1 and 3 the counts settle at 1:3 (Envoy's weight / (n + 1)). */
static void test_lr_acquire(void)
{
    lb_balancer *b = make("least_request", 10, NULL);
    uint64_t g = lb_balancer_generation(b);
    lb_iter *it = lb_iter_new();
    lb_record_info info;
    uint32_t lo = UINT32_MAX, hi = 0, loaded_before;

    lb_balancer_in_flight_add(b, g, 0, 5000);
    for (int k = 0; k < 10000; k++) {
        int i = lb_balancer_select(b, "", 0, 1, it);
        lb_balancer_in_flight_add(b, g, (size_t)i, 1);
    }
    lb_balancer_record(b, 0, &info);
    loaded_before = info.in_flight;
    for (size_t i = 1; i < 10; i++) {
        lb_balancer_record(b, i, &info);
        lo = info.in_flight < lo ? info.in_flight : lo;
        hi = info.in_flight > hi ? info.in_flight : hi;
    }
    printf("# least_request 10,000 acquires on 9 + 1 loaded: %u..%u, loaded "
           "%u\n",
           lo, hi, loaded_before);
    /* two choices: the gap grows as log log n, a few in practice (4 in
     * about one run of ten here) */
    CHECK(hi - lo <= 6);
    CHECK(loaded_before <= 5000 + 10000 / 100); /* under 1% of the picks */
    lb_balancer_free(b);

    {
        const uint32_t w[] = {1, 3};
        b = make("least_request", 2, w);
        g = lb_balancer_generation(b);
        for (int k = 0; k < 4000; k++) {
            int i = lb_balancer_select(b, "", 0, 1, it);
            lb_balancer_in_flight_add(b, g, (size_t)i, 1);
        }
        lb_balancer_record(b, 0, &info);
        printf("# least_request weights 1, 3: %u and %u in flight\n",
               info.in_flight, 4000 - info.in_flight);
        CHECK(info.in_flight >= 990 && info.in_flight <= 1010);
        lb_balancer_free(b);
    }
    lb_iter_free(it);
}

/* Finagle's peak EWMA: a peak is taken at once, a lower sample is averaged
 * in by the time since the last one, and the cost decays at read. */
static void test_peak_record(void)
{
    struct lb_record r;
    const double tau = 10000; /* ms */
    uint64_t v;

    lb_record_init(&r, true);
    CHECK_EQ(lb_record_latency_peak_get(&r, 5000, tau), 0);
    lb_record_latency_peak(&r, 100000000, 5000, tau); /* 100 ms at 5 s */
    CHECK_EQ(lb_record_latency_peak_get(&r, 5000, tau), 100000000);
    /* one time constant later: e^-1 of it */
    v = lb_record_latency_peak_get(&r, 15000, tau);
    CHECK(llabs((long long)v - 36787944) < 2000);
    /* a peak replaces the cost at once */
    lb_record_latency_peak(&r, 300000000, 6000, tau);
    CHECK_EQ(lb_record_latency_peak_get(&r, 6000, tau), 300000000);
    /* a lower sample 1 s later: 300 e^-0.1 + 10 (1 - e^-0.1) ms */
    lb_record_latency_peak(&r, 10000000, 7000, tau);
    v = lb_record_latency_peak_get(&r, 7000, tau);
    CHECK(llabs((long long)v - (long long)(300e6 * exp(-0.1) +
                                           10e6 * (1 - exp(-0.1)))) < 2000);
    /* long silence: decayed, but still "answered" (>= 1 ns) */
    CHECK_EQ(lb_record_latency_peak_get(&r, 7000 + 100 * 10000, tau), 1);
    /* a clock a tick behind the stamp is no time, not 2.2 years */
    CHECK_EQ(lb_record_latency_peak_get(&r, 6999, tau), v);
}

/* A backend reporting 500 ms against 1 ms gets < 10% of the picks; a new
 * one with no sample is tried first, but not flooded while its first
 * requests are in flight (Finagle's penalty). */
static void test_peak_ewma_shares(void)
{
    const char *err = NULL;
    lb_balancer *b = make("peak_ewma", 4, NULL);
    uint64_t g = lb_balancer_generation(b);
    lb_iter *it = lb_iter_new();
    long counts[4] = {0};
    const long n = 20000;

    for (int k = 0; k < 20; k++) {
        CHECK_EQ(lb_balancer_report(b, g, 0, 1, 0.5, &err), LB_OK);
        lb_balancer_report(b, g, 1, 1, 0.001, &err);
        lb_balancer_report(b, g, 2, 1, 0.001, &err);
    }
    /* backend 3 never answered and has nothing in flight: cost 0 */
    for (long k = 0; k < n; k++)
        counts[lb_balancer_select(b, "", 0, 1, it)]++;
    printf("# peak_ewma 500 ms, 1 ms, 1 ms, no sample: %ld %ld %ld %ld\n",
           counts[0], counts[1], counts[2], counts[3]);
    CHECK(counts[0] < n / 10);
    CHECK(within(counts[3], n, 3.0 / 6)); /* wins every pair it is in */
    /* one request in flight on it, still no sample: it loses every pair */
    lb_balancer_in_flight_add(b, g, 3, 1);
    memset(counts, 0, sizeof(counts));
    for (long k = 0; k < n; k++)
        counts[lb_balancer_select(b, "", 0, 1, it)]++;
    CHECK_EQ(counts[3], 0);
    /* the fast ones split evenly */
    CHECK(within(counts[1], counts[1] + counts[2], 0.5));
    lb_iter_free(it);
    lb_balancer_free(b);
}

static int cmp_backend(const void *a, const void *b)
{
    return lb_backend_compare(a, b);
}

/* Build a Maglev selector straight from the ops (no snapshot): the table
 * the core would publish for these sorted backends. */
static void *maglev_of(const lb_backend *be, size_t n, uint32_t m)
{
    const struct lb_selection_row *row = lb_selection_at(sel_id("maglev"));
    lb_config cfg = {.selection = sel_id("maglev"), .table_size = m};
    struct lb_record_view view = {0};
    const char *err = NULL;
    void *sel = row->ops->build(be, n, &cfg, &view, &err);

    if (!sel) {
        fprintf(stderr, "maglev build: %s\n", err);
        abort();
    }
    return sel;
}

static void maglev_free(void *sel)
{
    lb_selection_at(sel_id("maglev"))->ops->destroy(sel);
}

/* Every slot filled; each backend's share within 1% of its weight share
 * for M = 65537 (10 and 100 backends), and within two slots of it at
 * 1000 backends (where one slot is 1.7% of a weight-1 backend's ~60: a
 * share is its weight share of M rounded, give or take a slot). */
static void test_maglev_table(void)
{
    static lb_backend be[NMAX];
    static uint32_t w[NMAX];
    static long count[NMAX];
    const size_t sizes[] = {10, 100, 1000};

    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        uint64_t wsum = 0;
        uint32_t m;
        const uint16_t *t;
        void *sel;
        int empty = 0, off = 0;
        double worst = 0, worst_slots = 0;

        for (size_t i = 0; i < n; i++) {
            w[i] = n == 10 ? (uint32_t)(1 + i % 5) : (i % 7 == 0 ? 10 : 1);
            if (n == 100)
                w[i] = (uint32_t)(1 + i % 4);
            wsum += w[i];
            count[i] = 0;
        }
        backends(be, n, w);
        qsort(be, n, sizeof(be[0]), cmp_backend);
        for (size_t i = 0; i < n; i++)
            w[i] = be[i].weight;
        sel = maglev_of(be, n, 65537);
        t = lb_maglev_table(sel, &m);
        CHECK_EQ(m, 65537);
        for (uint32_t j = 0; j < m; j++) {
            if (t[j] >= n)
                empty++;
            else
                count[t[j]]++;
        }
        CHECK_EQ(empty, 0);
        for (size_t i = 0; i < n; i++) {
            double share = (double)count[i] / m;
            double want = (double)w[i] / (double)wsum;
            double rel = fabs(share - want) / want;
            double slots = fabs((double)count[i] - want * m);
            worst = rel > worst ? rel : worst;
            worst_slots = slots > worst_slots ? slots : worst_slots;
            off += n < 1000 ? rel > 0.01 : slots > 2.0;
        }
        printf("# maglev %zu backends, M 65537: worst share off by %.3f%% "
               "(%.2f slots)\n",
               n, worst * 100, worst_slots);
        CHECK_EQ(off, 0);
        maglev_free(sel);
    }
}

/* Removing one of N backends moves about 1/N of the table: its own slots,
 * and few of the others'. */
static void test_maglev_disruption(void)
{
    static lb_backend be[101], less[100];
    const size_t n = 100;
    uint32_t m, m2;
    void *a, *b;
    const uint16_t *ta, *tb;
    long moved = 0, own = 0;

    backends(be, n, NULL);
    qsort(be, n, sizeof(be[0]), cmp_backend);
    /* remove backend 37; the others keep their address, not their index */
    memcpy(less, be, 37 * sizeof(be[0]));
    memcpy(less + 37, be + 38, (n - 38) * sizeof(be[0]));
    a = maglev_of(be, n, 65537);
    b = maglev_of(less, n - 1, 65537);
    ta = lb_maglev_table(a, &m);
    tb = lb_maglev_table(b, &m2);
    CHECK_EQ(m, m2);
    for (uint32_t j = 0; j < m; j++) {
        const char *before = be[ta[j]].addr, *after = less[tb[j]].addr;
        if (ta[j] == 37)
            own++;
        else if (strcmp(before, after) != 0)
            moved++;
    }
    printf("# maglev remove 1 of 100: its %ld slots (%.2f%%) move, and %ld "
           "(%.2f%%) others\n",
           own, 100.0 * (double)own / m, moved, 100.0 * (double)moved / m);
    CHECK(own > 0);
    /* the paper's Figure 8 shape: a small multiple of 1/N at most */
    CHECK((double)(own + moved) / m < 2.5 / n);
    maglev_free(a);
    maglev_free(b);
}

/* Deterministic: two balancers given the set in different orders pick
 * alike for every key; a bad table_size is a clear error, and a set
 * larger than the table is refused with the previous set kept. */
static void test_maglev_api(void)
{
    static lb_backend be[50], rev[50];
    lb_balancer *a, *b;
    lb_iter *it = lb_iter_new();
    const char *err = NULL;
    int differ = 0;

    backends(be, 50, NULL);
    for (int i = 0; i < 50; i++)
        rev[i] = be[49 - i];
    a = make_cfg((lb_config){.selection = sel_id("maglev")}, be, 50);
    b = make_cfg((lb_config){.selection = sel_id("maglev"), .table_size = 0},
                 rev, 50);
    for (int k = 0; k < 2000; k++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "/k/%d", k);
        int x = lb_balancer_select(a, key, (size_t)n, 1, it);
        differ += x != lb_balancer_select(b, key, (size_t)n, 1, it);
    }
    CHECK_EQ(differ, 0);
    lb_balancer_free(a);
    lb_balancer_free(b);

    {
        lb_config cfg = {.selection = sel_id("maglev"), .table_size = 65536};
        CHECK(lb_balancer_new(&cfg, &err) == NULL);
        CHECK(strstr(err, "table_size") && strstr(err, "prime"));
        cfg.table_size = 7;
        a = make_cfg(cfg, be, 5);
        CHECK_EQ(lb_balancer_update(a, be, 8, NULL, NULL, &err), LB_ERROR);
        CHECK(strstr(err, "table_size") != NULL);
        CHECK_EQ(lb_balancer_count(a), 5);
        lb_balancer_free(a);
        cfg.selection = sel_id("fnv");
        CHECK(lb_balancer_new(&cfg, &err) == NULL);
        CHECK(strstr(err, "table_size applies to maglev") != NULL);
    }
    lb_iter_free(it);
}

/* Bounded loads on a hot key: every acquire of the same key, none
 * released; no backend ever holds more than ceil(c x mean). */
static void test_bounded_hot_key(void)
{
    static lb_backend be[10];
    const double c = 1.25;
    lb_config cfg = {.selection = LB_SELECT_CONSISTENT,
                     .hash_balance_factor = c};
    lb_balancer *b, *plain;
    lb_iter *it = lb_iter_new();
    uint64_t g;
    uint32_t in[10] = {0};
    int over = 0, first, differ = 0;

    backends(be, 10, NULL);
    b = make_cfg(cfg, be, 10);
    plain = make_cfg((lb_config){.selection = LB_SELECT_CONSISTENT}, be, 10);
    g = lb_balancer_generation(b);
    /* with nothing in flight, the ring's own choice for every key */
    for (int k = 0; k < 1000; k++) {
        char key[16];
        int n = snprintf(key, sizeof(key), "/k/%d", k);
        int x = lb_balancer_select(b, key, (size_t)n, 1, it);
        differ += x != lb_balancer_select(plain, key, (size_t)n, 1, it);
    }
    CHECK_EQ(differ, 0);
    first = lb_balancer_select(plain, "hot", 3, 1, it);
    for (int k = 1; k <= 2000; k++) {
        int i = lb_balancer_select(b, "hot", 3, 1, it);
        uint32_t bound = (uint32_t)ceil(c * k / 10.0);
        lb_balancer_in_flight_add(b, g, (size_t)i, 1);
        in[i]++;
        for (int j = 0; j < 10; j++)
            over += in[j] > bound;
        if (k == 1)
            CHECK_EQ(i, first);
    }
    CHECK_EQ(over, 0);
    /* the key's own backend is full, at the bound */
    CHECK_EQ(in[first], (uint32_t)ceil(c * 2000 / 10.0));
    lb_balancer_free(b);
    lb_balancer_free(plain);
    {
        const char *err = NULL;
        cfg.hash_balance_factor = 0.9;
        CHECK(lb_balancer_new(&cfg, &err) == NULL);
        CHECK(strstr(err, "hash_balance_factor") != NULL);
    }
    lb_iter_free(it);
}

/* weighted_round_robin from 4 threads at once: one sequence, so after a
 * whole number of rounds every backend has exactly its weight's share. */
struct wrr_arg {
    lb_balancer *b;
    long counts[4];
};

static void *wrr_thread(void *p)
{
    struct wrr_arg *a = p;
    lb_iter *it = lb_iter_new();

    for (int k = 0; k < 49000; k++) {
        int i = lb_balancer_select(a->b, "", 0, 1, it);
        if (i >= 0 && i < 4)
            a->counts[i]++;
    }
    lb_iter_free(it);
    return NULL;
}

static void test_wrr_threads(void)
{
    const uint32_t w[] = {3, 2, 1, 1};
    lb_balancer *b = make("weighted_round_robin", 4, w);
    struct wrr_arg args[4];
    pthread_t t[4];
    long total[4] = {0};
    double t0 = now_s();

    for (int i = 0; i < 4; i++) {
        memset(&args[i], 0, sizeof(args[i]));
        args[i].b = b;
        pthread_create(&t[i], NULL, wrr_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        for (int j = 0; j < 4; j++)
            total[j] += args[i].counts[j];
    }
    printf("# weighted_round_robin 4 threads x 49000 picks: %ld %ld %ld %ld "
           "in %.3f s\n",
           total[0], total[1], total[2], total[3], now_s() - t0);
    /* 196,000 picks = 28,000 rounds of 3 + 2 + 1 + 1 */
    CHECK_EQ(total[0], 84000);
    CHECK_EQ(total[1], 56000);
    CHECK_EQ(total[2], 28000);
    CHECK_EQ(total[3], 28000);
    lb_balancer_free(b);
}

/* The power-of-k draws after fork: a child must not repeat its parent's
 * sequence (nginx workers forked from one master would all pick alike).
 * With 16 idle backends of equal weight, least_request's pick is the
 * better of two random draws: 64 picks from the parent and from the child,
 * both from the generator state at fork, must differ. */
static void test_choices_after_fork(void)
{
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer cannot start threads in the child of a threaded
     * process (liburcu restarts its call_rcu worker there), as in
     * test_fork.c: plain and ASan builds only. */
    printf("# fork check skipped under ThreadSanitizer\n");
    return;
#endif
    lb_balancer *b = make("least_request", 16, NULL);
    lb_iter *it = lb_iter_new();
    uint8_t mine[64], theirs[64];
    int fds[2], status = 0;
    pid_t pid;

    for (int k = 0; k < 10; k++) /* this thread's generator is seeded */
        lb_balancer_select(b, "", 0, 1, it);
    CHECK(pipe(fds) == 0);
    pid = fork();
    if (pid == 0) {
        for (int k = 0; k < 64; k++)
            mine[k] = (uint8_t)lb_balancer_select(b, "", 0, 1, it);
        _exit(write(fds[1], mine, sizeof(mine)) == sizeof(mine) ? 0 : 1);
    }
    CHECK(pid > 0);
    close(fds[1]); /* a child that dies early gives end of file, not a hang */
    for (int k = 0; k < 64; k++)
        mine[k] = (uint8_t)lb_balancer_select(b, "", 0, 1, it);
    CHECK(read(fds[0], theirs, sizeof(theirs)) == (ssize_t)sizeof(theirs));
    CHECK(wait_child(pid, 30, &status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(memcmp(mine, theirs, sizeof(mine)) != 0);
    close(fds[0]);
    lb_iter_free(it);
    lb_balancer_free(b);
}

int main(void)
{
    TEST(test_wrr_sequence());
    TEST(test_walk_generic());
    TEST(test_lr_distribution());
    TEST(test_lr_acquire());
    TEST(test_peak_record());
    TEST(test_peak_ewma_shares());
    TEST(test_maglev_table());
    TEST(test_maglev_disruption());
    TEST(test_maglev_api());
    TEST(test_bounded_hot_key());
    TEST(test_choices_after_fork());
    TEST(test_wrr_threads());
    lb_quiesce();
    return tap_done("test_select");
}
