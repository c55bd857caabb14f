/*
 * build.c - time to build a snapshot: lb_balancer_update with a set none
 * of whose backends are in the published one (so every health record is
 * new, the whole selector is built, and the old snapshot is retired).
 *
 * Rows: build <algorithm>@<n> <ms>, the median of BENCH_RUNS (default 9)
 * updates, alternating between two disjoint sets of n IPv4 backends of
 * weight 1 (for consistent: 160 points each, as nginx and pingora-ketama).
 * Freeing the retired snapshot happens on liburcu's call_rcu thread and is
 * not part of the figure; lb_quiesce() between runs keeps it from
 * overlapping the next one.  The figure is wall time and includes the
 * page faults of the fresh arrays (a 1000-backend ring is about 1 MB);
 * the note gives the fastest run.
 *
 * Every algorithm of the registry is built; maglev with its default table
 * (65537 slots), also at 10,000 backends.
 */
#include <string.h>

#include "bench.h"
#include "lb.h"

static lb_backend *make_set(size_t n, int which)
{
    lb_backend *set = calloc(n, sizeof(*set));
    const char *err;

    if (!set)
        abort();
    for (size_t i = 0; i < n; i++) {
        char text[40];
        int len = snprintf(text, sizeof(text), "10.%d.%zu.%zu:%d", which,
                           i / 250, i % 250 + 1, 8000 + (int)(i % 7));

        if (lb_backend_parse(text, (size_t)len, 1, &set[i], &err) != LB_OK) {
            fprintf(stderr, "parse %s: %s\n", text, err);
            exit(1);
        }
    }
    return set;
}

int main(void)
{
    static const size_t sizes[] = {10, 1000, 10000};
    int runs = bench_runs(9);

    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        size_t n = sizes[s];
        lb_backend *set[2] = {make_set(n, 1), make_set(n, 2)};

        for (int alg = 0; lb_selection_name(alg); alg++) {
            lb_config cfg = {.selection = alg};
            const char *err;
            lb_balancer *b = lb_balancer_new(&cfg, &err);
            double t[99], med;
            char cs[48], note[32];

            if (!b) {
                fprintf(stderr, "new: %s\n", err);
                return 1;
            }
            /* warm-up: allocator, crc tables */
            lb_balancer_update(b, set[1], n, NULL, NULL, &err);
            for (int r = 0; r < runs; r++) {
                double t0;
                int rc;

                lb_quiesce();
                t0 = bench_now_ns();
                rc = lb_balancer_update(b, set[r % 2], n, NULL, NULL, &err);
                t[r] = (bench_now_ns() - t0) / 1e6;
                if (rc != 1) {
                    fprintf(stderr, "update: %d %s\n", rc, err);
                    return 1;
                }
            }
            snprintf(cs, sizeof(cs), "%s@%zu", lb_selection_name(alg), n);
            med = bench_median(t, runs);
            snprintf(note, sizeof(note), "min %.3f", t[0]);
            bench_row("build", cs, med, "ms", note);
            lb_balancer_free(b);
        }
        free(set[0]);
        free(set[1]);
    }
    lb_quiesce();
    return 0;
}
