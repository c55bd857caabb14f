/*
 * least_request.c - least request with the power of k choices, weighted
 * as Envoy's LeastRequestLoadBalancer weighs hosts.
 *
 * A pick draws choice_count distinct backends uniformly (choices.h) and
 * takes the best by Envoy's score
 *
 *     weight / (in_flight + 1) ^ active_request_bias
 *
 * (ties: the first drawn).  With equal weights that is the fewer in
 * flight, Envoy's unweighted P2C; with weights, the counts settle where
 * (in_flight + 1) ^ bias is proportional to weight.  Envoy switches to an
 * EDF schedule over those scores when weights differ; the power of k
 * choices is kept here for both, so a pick stays O(k), lock-free and
 * writes nothing.  A candidate that is not ready loses to one that is
 * (lb_view_ready), so a down backend with no requests does not win every
 * comparison it enters.
 *
 * In-flight counts are lb_view_in_flight: with a shared store, every
 * process's requests, so the workers of one nginx balance as one.
 *
 * With weights and nothing in flight, the heavier candidate always wins
 * (the score is its weight): Envoy's EDF schedule would give the lighter
 * ones their weight share even then.  Under load the counts settle as
 * said above.
 *
 * The walk: first() is the power-of-k pick; next() walks the sorted list
 * from the previous candidate (i + 1, i + 2, ... mod n), so select_with
 * and the unique walk see every backend within n steps (a fresh draw
 * would never return a candidate that loses every comparison, such as
 * the lightest backend with nothing in flight).
 */
#include <math.h>
#include <stdlib.h>

#include "choices.h"

struct lr {
    uint32_t n, k;
    int unit_bias;     /* bias 1: compare with integers, no pow() */
    int equal_weights; /* every weight the same: compare counts */
    double bias;
    const struct lb_record_view *view;
    uint32_t weight[];
};

static void *lr_build(const lb_backend *backends, size_t n,
                      const lb_config *cfg, const struct lb_record_view *view,
                      const char **err)
{
    struct lr *l = malloc(sizeof(*l) + n * sizeof(l->weight[0]));

    if (!l) {
        *err = "out of memory";
        return NULL;
    }
    l->n = (uint32_t)n;
    l->k = cfg->choice_count ? cfg->choice_count : 2;
    l->bias = cfg->active_request_bias_set ? cfg->active_request_bias : 1.0;
    l->unit_bias = l->bias == 1.0;
    l->view = view;
    l->equal_weights = 1;
    for (size_t i = 0; i < n; i++) {
        l->weight[i] = backends[i].weight;
        if (backends[i].weight != backends[0].weight)
            l->equal_weights = 0;
    }
    return l;
}

static void lr_destroy(void *sel) { free(sel); }

/* Is a (weight wa, count fa) better than b?  Scores compared as
 * wa / (fa + 1)^bias > wb / (fb + 1)^bias. */
static inline int better(const struct lr *l, uint32_t wa, uint32_t fa,
                         uint32_t wb, uint32_t fb)
{
    if (l->equal_weights)
        return l->bias > 0 ? fa < fb : 0;
    if (l->unit_bias)
        return (uint64_t)wa * ((uint64_t)fb + 1) >
               (uint64_t)wb * ((uint64_t)fa + 1);
    return (double)wa / pow((double)fa + 1, l->bias) >
           (double)wb / pow((double)fb + 1, l->bias);
}

static uint32_t lr_pick(const struct lr *l)
{
    uint32_t cand[LB_MAX_CHOICE_COUNT];
    uint32_t m = lb_choices_draw(l->n, l->k, cand);
    uint32_t best = cand[0];
    uint32_t bf = lb_view_in_flight(l->view, best);
    bool br = lb_view_ready(l->view, best);

    for (uint32_t c = 1; c < m; c++) {
        uint32_t i = cand[c];
        uint32_t f = lb_view_in_flight(l->view, i);
        bool r = lb_view_ready(l->view, i);

        if ((r && !br) ||
            (r == br && better(l, l->weight[i], f, l->weight[best], bf))) {
            best = i;
            bf = f;
            br = r;
        }
    }
    return best;
}

static uint32_t lr_first(void *sel, const char *key, size_t len,
                         uint64_t *state)
{
    (void)key;
    (void)len;
    *state = lr_pick(sel);
    return (uint32_t)*state;
}

/* The sorted list from the previous candidate on (see the walk above). */
static uint32_t lr_next(void *sel, uint64_t *state)
{
    const struct lr *x = sel;
    uint64_t i = *state + 1;

    if (i >= x->n)
        i = 0;
    *state = i;
    return (uint32_t)i;
}

const struct lb_selector_ops lb_select_least_request = {
    .build = lr_build,
    .first = lr_first,
    .next = lr_next,
    .destroy = lr_destroy,
    .fork_child = lb_choices_fork_child,
};
