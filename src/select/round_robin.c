/*
 * round_robin.c - Pingora's RoundRobin over the weighted list.
 *
 * Pingora's algorithm ignores the key and returns a shared counter's next
 * value (fetch_add, relaxed): the first pick of each walk is
 * expanded[counter % total], and every fallback takes the next counter
 * value modulo the unique count.  The counter lives in the selector, so a
 * new backend set starts again at zero, as Pingora's rebuilt selector does.
 */
#include <stdatomic.h>

#include "weighted.h"

/* The one write of round robin's read path: a relaxed atomic counter
 * (STYLE: relaxed atomic per-backend and per-selector counters only); no
 * ordering is needed, each caller only wants a distinct value. */
static inline uint64_t counter_next(struct lb_weighted *w)
{
    return atomic_fetch_add_explicit((_Atomic uint64_t *)&w->counter, 1,
                                     memory_order_relaxed);
}

/* Slow start: a ramping backend's slot is taken with probability its
 * factor, else the next counter value's slot (lb_weighted_ramp). */
static uint32_t rr_first(void *sel, const char *key, size_t len,
                         uint64_t *state)
{
    struct lb_weighted *w = sel;
    uint64_t now = lb_view_slow_start_now(w->view);
    uint32_t idx;

    (void)key;
    (void)len;
    *state = counter_next(w);
    idx = lb_weighted_first(w, *state);
    if (__builtin_expect(now != 0, 0))
        idx = lb_weighted_ramp(w, idx, state, now, counter_next);
    return idx;
}

static uint32_t rr_next(void *sel, uint64_t *state)
{
    *state = counter_next(sel);
    return lb_weighted_fallback(sel, *state);
}

/* `steps` counter values at once: the last of them is the state next()
 * would have left. */
static void rr_skip(void *sel, uint64_t *state, uint64_t steps)
{
    struct lb_weighted *w = sel;

    *state = atomic_fetch_add_explicit((_Atomic uint64_t *)&w->counter, steps,
                                       memory_order_relaxed) +
             steps - 1;
}

const struct lb_selector_ops lb_select_round_robin = {
    .skip = rr_skip,
    .build = lb_weighted_build,
    .first = rr_first,
    .next = rr_next,
    .destroy = lb_weighted_destroy,
};
