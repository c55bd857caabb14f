/*
 * peak_ewma.c - peak EWMA of latency with the power of k choices
 * (Finagle's PeakEwma balancer; linkerd's and tower's PeakEwma).
 *
 * A backend's cost is its peak EWMA of reported latency (record.h: a
 * sample above the decayed cost replaces it at once, one below is
 * averaged in, and the cost decays toward zero with time constant
 * ewma_decay, default 10 s) times (in_flight + 1), divided by its weight.
 * A pick draws choice_count distinct backends (choices.h) and takes the
 * cheapest; a candidate that is not ready loses to one that is.
 *
 * A backend with no sample yet costs 0 and is tried first, unless it has
 * requests in flight: then, as in Finagle, it costs a penalty (above any
 * measured cost) plus its count, so a new backend gets its first requests
 * but is not flooded before the first of them answers.
 *
 * The cost is decayed at read (lb_view_latency_ns computes it, writing
 * nothing), so the select path stays free of writes; one clock read
 * (CLOCK_MONOTONIC_COARSE) per pick.
 *
 * The walk, as least_request's: first() is the power-of-k pick, next()
 * walks the sorted list from the previous candidate.
 */
#include <stdlib.h>

#include "choices.h"

/* Finagle's penalty is Long.MaxValue >> 16 nanoseconds; here any cost a
 * sample can reach (268 s, record.h, times 2^32 requests) is below it. */
#define PENALTY 1e30

struct pe {
    uint32_t n, k;
    double decay_ms;
    const struct lb_record_view *view;
    uint32_t weight[];
};

static void *pe_build(const lb_backend *backends, size_t n,
                      const lb_config *cfg, const struct lb_record_view *view,
                      const char **err)
{
    struct pe *p = malloc(sizeof(*p) + n * sizeof(p->weight[0]));

    if (!p) {
        *err = "out of memory";
        return NULL;
    }
    p->n = (uint32_t)n;
    p->k = cfg->choice_count ? cfg->choice_count : 2;
    p->decay_ms = (cfg->ewma_decay > 0 ? cfg->ewma_decay : 10.0) * 1e3;
    p->view = view;
    for (size_t i = 0; i < n; i++)
        p->weight[i] = backends[i].weight;
    return p;
}

static void pe_destroy(void *sel) { free(sel); }

static double cost(const struct pe *p, uint32_t i, uint64_t now_ms)
{
    uint64_t lat = lb_view_latency_ns(p->view, i, now_ms, p->decay_ms);
    uint32_t f = lb_view_in_flight(p->view, i);

    if (lat == 0)
        return f ? PENALTY + f : 0;
    return (double)lat * ((double)f + 1) / p->weight[i];
}

static uint32_t pe_pick(const struct pe *p)
{
    uint32_t cand[LB_MAX_CHOICE_COUNT];
    uint32_t m = lb_choices_draw(p->n, p->k, cand);
    uint64_t now = lb_record_now_ms();
    uint32_t best = cand[0];
    double bc = cost(p, best, now);
    bool br = lb_view_ready(p->view, best);

    for (uint32_t c = 1; c < m; c++) {
        uint32_t i = cand[c];
        bool r = lb_view_ready(p->view, i);
        double ci;

        if (!r && br)
            continue;
        ci = cost(p, i, now);
        if ((r && !br) || ci < bc) {
            best = i;
            bc = ci;
            br = r;
        }
    }
    return best;
}

static uint32_t pe_first(void *sel, const char *key, size_t len,
                         uint64_t *state)
{
    (void)key;
    (void)len;
    *state = pe_pick(sel);
    return (uint32_t)*state;
}

/* The sorted list from the previous candidate on (see the walk above). */
static uint32_t pe_next(void *sel, uint64_t *state)
{
    const struct pe *x = sel;
    uint64_t i = *state + 1;

    if (i >= x->n)
        i = 0;
    *state = i;
    return (uint32_t)i;
}

const struct lb_selector_ops lb_select_peak_ewma = {
    .build = pe_build,
    .first = pe_first,
    .next = pe_next,
    .destroy = pe_destroy,
    .fork_child = lb_choices_fork_child,
};
