/*
 * select_c.c - ns per lb_balancer_select from C, per algorithm, at 10, 100
 * and 1000 backends, every backend ready (the common path: one selector
 * lookup and one health load inside one RCU read-side section).
 *
 * Rows: select_c <algorithm>@<n> <ns>, the median of BENCH_RUNS (default
 * 5) loops of BENCH_CALLS (default 5,000,000) calls, one thread, over 4096
 * precomputed keys ("/user/<i>", as a request path would be).  The runs
 * are interleaved (run 1 of every case, then run 2, ...) so drift on a
 * shared machine spreads over all cases alike.
 *
 * Two figures per case: "select_c" calls back to back with independent
 * keys, so the CPU overlaps one call's cache misses with the next call
 * (throughput); "select_c_dep" makes each key depend on the previous
 * result, so every call waits for the one before (latency, closer to what
 * a caller that does real work between selects sees).
 *
 * Cases: every algorithm of the registry, and consistent_bounded
 * (consistent with hash_balance_factor 1.25: a sum over the in-flight
 * counts per pick).  Last, select_c_2threads: ns per pick of each of two
 * threads picking from one balancer at once (10 backends), for round_robin
 * (one shared atomic counter) and weighted_round_robin (a spinlock held
 * for the O(n) pick): the cost of sharing one sequence.
 */
#include <pthread.h>
#include <string.h>

#include "bench.h"
#include "lb.h"

#define NKEYS 4096
#define NSIZES 3
#define NALG 9

static const char *const names[NALG] = {"round_robin",
                                        "random",
                                        "fnv",
                                        "consistent",
                                        "maglev",
                                        "least_request",
                                        "peak_ewma",
                                        "weighted_round_robin",
                                        "consistent_bounded"};
static const size_t sizes[NSIZES] = {10, 100, 1000};

static char keys[NKEYS][24];
static size_t lens[NKEYS];

static lb_balancer *setup(int alg, size_t n)
{
    int bounded = strcmp(names[alg], "consistent_bounded") == 0;
    const char *sel = bounded ? "consistent" : names[alg];
    lb_config cfg = {.selection = lb_selection_find(sel, strlen(sel), NULL),
                     .hash_balance_factor = bounded ? 1.25 : 0};
    lb_backend *set = calloc(n, sizeof(*set));
    const char *err = "out of memory";
    lb_balancer *b = set ? lb_balancer_new(&cfg, &err) : NULL;

    for (size_t i = 0; b && i < n; i++) {
        char text[40];
        int len = snprintf(text, sizeof(text), "10.0.%zu.%zu:80", i / 250,
                           i % 250 + 1);
        if (lb_backend_parse(text, (size_t)len, 1, &set[i], &err) != LB_OK)
            b = NULL;
    }
    if (!b || lb_balancer_update(b, set, n, NULL, NULL, &err) != 1) {
        fprintf(stderr, "setup %s@%zu: %s\n", names[alg], n, err);
        exit(1);
    }
    free(set);
    return b;
}

static double run_once(lb_balancer *b, lb_iter *it, long calls, int dep)
{
    long sum = 0;
    int prev = 0;
    double t0 = bench_now_ns();

    if (dep) {
        for (long i = 0; i < calls; i++) {
            /* prev is >= 0 (every backend is ready); & 0 would be folded,
             * so the dependency goes through the bitmask of a load */
            int k = (int)((i + (prev & (int)(i >> 62))) & (NKEYS - 1));
            prev = lb_balancer_select(b, keys[k], lens[k],
                                      LB_DEFAULT_MAX_ITERATIONS, it);
            sum += prev;
        }
    } else {
        for (long i = 0; i < calls; i++) {
            int k = (int)(i & (NKEYS - 1));
            sum += lb_balancer_select(b, keys[k], lens[k],
                                      LB_DEFAULT_MAX_ITERATIONS, it);
        }
    }
    bench_keep(sum);
    return (bench_now_ns() - t0) / (double)calls;
}

struct pair_arg {
    lb_balancer *b;
    long calls;
    double ns;
};

static void *pair_thread(void *p)
{
    struct pair_arg *a = p;
    lb_iter *it = lb_iter_new();

    a->ns = run_once(a->b, it, a->calls, 0);
    lb_iter_free(it);
    return NULL;
}

/* ns per pick of each of two threads at once (their mean). */
static double run_pair(lb_balancer *b, long calls)
{
    struct pair_arg a[2] = {{b, calls, 0}, {b, calls, 0}};
    pthread_t t[2];

    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, pair_thread, &a[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return (a[0].ns + a[1].ns) / 2;
}

int main(void)
{
    static double t[2][NSIZES][NALG][99];
    static const char *const bench[2] = {"select_c", "select_c_dep"};
    lb_balancer *b[NSIZES][NALG];
    const char *env = getenv("BENCH_CALLS");
    long calls = env ? atol(env) : 5000000;
    int runs = bench_runs(5);
    lb_iter *it = lb_iter_new();

    for (int k = 0; k < NKEYS; k++)
        lens[k] =
            (size_t)snprintf(keys[k], sizeof(keys[k]), "/user/%d", k * 7919);
    for (int s = 0; s < NSIZES; s++)
        for (int a = 0; a < NALG; a++) {
            b[s][a] = setup(a, sizes[s]);
            run_once(b[s][a], it, calls / 10, 0); /* warm-up */
        }
    for (int r = 0; r < runs; r++)
        for (int d = 0; d < 2; d++)
            for (int s = 0; s < NSIZES; s++)
                for (int a = 0; a < NALG; a++)
                    t[d][s][a][r] = run_once(b[s][a], it, calls, d);
    for (int d = 0; d < 2; d++)
        for (int s = 0; s < NSIZES; s++)
            for (int a = 0; a < NALG; a++) {
                char cs[48], note[32];
                double med = bench_median(t[d][s][a], runs);

                snprintf(cs, sizeof(cs), "%s@%zu", names[a], sizes[s]);
                snprintf(note, sizeof(note), "min %.2f", t[d][s][a][0]);
                bench_row(bench[d], cs, med, "ns", note);
            }
    {
        static const int pair[2] = {0, 7}; /* round_robin, wrr */
        double tp[2][99];

        for (int r = 0; r < runs; r++)
            for (int k = 0; k < 2; k++)
                tp[k][r] = run_pair(b[0][pair[k]], calls / 2);
        for (int k = 0; k < 2; k++) {
            char cs[48], note[32];
            snprintf(cs, sizeof(cs), "%s@10", names[pair[k]]);
            snprintf(note, sizeof(note), "min %.2f", tp[k][0]);
            bench_row("select_c_2threads", cs, bench_median(tp[k], runs), "ns",
                      note);
        }
    }
    for (int s = 0; s < NSIZES; s++)
        for (int a = 0; a < NALG; a++)
            lb_balancer_free(b[s][a]);
    lb_iter_free(it);
    lb_quiesce();
    return 0;
}
