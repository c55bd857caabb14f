/*
 * random.c - uniform random picks over the weighted list (Pingora's Random).
 *
 * Pingora draws from thread_rng for the first pick and for every fallback.
 * Here each thread has its own xoshiro256** generator (choices.c: no
 * shared state, no lock), seeded from getrandom() on its first use;
 * statistical quality is ample for spreading load, and it is not meant for
 * anything secret.  A forked child reseeds: nginx workers forked from one
 * master would otherwise all draw the same sequence.
 */
#include "choices.h"
#include "weighted.h"

/* Fork step (select.h): the child's thread reseeds its generator on its
 * next draw (choices.c's, shared with the power of k choices). */
static void random_fork_child(void) { lb_choices_fork_child(); }

static inline uint64_t rng_next(void) { return lb_choices_random(); }

static uint64_t draw_next(struct lb_weighted *w)
{
    (void)w;
    return rng_next();
}

/* Slow start: a ramping candidate is taken with probability its factor,
 * else drawn again (lb_weighted_ramp). */
static uint32_t random_first(void *sel, const char *key, size_t len,
                             uint64_t *state)
{
    struct lb_weighted *w = sel;
    uint64_t now = lb_view_slow_start_now(w->view);
    uint32_t idx;

    (void)key;
    (void)len;
    *state = rng_next();
    idx = lb_weighted_first(w, *state);
    if (__builtin_expect(now != 0, 0))
        idx = lb_weighted_ramp(w, idx, state, now, draw_next);
    return idx;
}

static uint32_t random_next(void *sel, uint64_t *state)
{
    *state = rng_next();
    return lb_weighted_fallback(sel, *state);
}

const struct lb_selector_ops lb_select_random = {
    .build = lb_weighted_build,
    .first = random_first,
    .next = random_next,
    .destroy = lb_weighted_destroy,
    .fork_child = random_fork_child,
};
