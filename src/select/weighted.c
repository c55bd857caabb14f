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

    (void)cfg;
    (void)view; /* Pingora's weighted picks know nothing of load */

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
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < backends[i].weight; j++)
            w->expanded[k++] = (uint16_t)i;
    return w;
}

void lb_weighted_destroy(void *sel) { free(sel); }
