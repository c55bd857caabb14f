/*
 * weighted.c - Pingora's Weighted selection, shared by round_robin.c,
 * random.c and fnv.c.
 *
 * Each backend appears `weight` times in the expanded list, in the sorted
 * order of the backend array (Pingora builds it from a BTreeSet).  The first
 * pick of a walk is expanded[index % total]; the fallbacks are uniform over
 * the unique list, index % n, each index derived from the previous one by
 * the algorithm.  Indices are u16 as in Pingora (at most 65535 backends).
 */
#include <stdlib.h>

#include "weighted.h"

void *lb_weighted_build(const lb_backend *backends, size_t n,
                        const lb_config *cfg, const struct lb_record_view *view,
                        const char **err)
{
    struct lb_weighted *w;
    size_t total = 0, k = 0;

    (void)cfg; /* Pingora's weighted picks know nothing of load; the view
                  serves slow start only */

    for (size_t i = 0; i < n; i++)
        total += backends[i].weight;
    w = malloc(sizeof(*w) + total * sizeof(w->expanded[0]));
    if (!w) {
        *err = "out of memory";
        return NULL;
    }
    w->n = (uint32_t)n;
    w->total = (uint32_t)total;
    w->counter = 0;
    w->view = view;
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < backends[i].weight; j++)
            w->expanded[k++] = (uint16_t)i;
    return w;
}

void lb_weighted_destroy(void *sel) { free(sel); }

/* splitmix64's finaliser: a well-mixed 64-bit value of any state */
static inline uint64_t mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t lb_weighted_ramp(struct lb_weighted *w, uint32_t idx, uint64_t *state,
                          uint64_t now_ns,
                          uint64_t (*draw)(struct lb_weighted *w))
{
    for (int k = 1; k < LB_RAMP_DRAWS; k++) {
        double f = lb_view_slow_start_factor(w->view, idx, now_ns);
        /* 53 bits of the hash as a uniform number in [0, 1) */
        if (f >= 1.0 || (double)(mix(*state) >> 11) * 0x1p-53 < f)
            break;
        *state = draw(w);
        idx = lb_weighted_first(w, *state);
    }
    return idx;
}
