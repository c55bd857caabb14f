/*
 * select/weighted.h - Pingora's Weighted selection, shared by the three
 * weighted algorithms (round_robin.c, random.c, fnv.c; built by
 * weighted.c): the first pick from the weight-expanded list, the fallbacks
 * uniform over the unique list.  Private to src/select/.
 */
#ifndef LB_SELECT_WEIGHTED_H
#define LB_SELECT_WEIGHTED_H

#include "select.h"

struct lb_weighted {
    uint32_t n;                        /* unique backends */
    uint32_t total;                    /* length of the weight-expanded list */
    const struct lb_record_view *view; /* the records (slow start) */
    /* round robin only: the shared position, a relaxed atomic counter
     * (STYLE: the per-call writes on the read path are relaxed atomic
     * counters, each said where it happens: round_robin.c) */
    uint64_t counter;
    uint16_t expanded[]; /* index of the backend owning each slot */
};

/* The ops' build and destroy for the three algorithms: writers only;
 * build allocates one block (NULL with *err "out of memory"), destroy
 * frees it after the snapshot's grace period. */
void *lb_weighted_build(const lb_backend *backends, size_t n,
                        const lb_config *cfg, const struct lb_record_view *view,
                        const char **err);
void lb_weighted_destroy(void *sel);

/* Pure, lock-free: the first pick and a fallback for a walk's index. */
static inline uint32_t lb_weighted_first(const struct lb_weighted *w,
                                         uint64_t index)
{
    return w->expanded[index % w->total];
}

static inline uint32_t lb_weighted_fallback(const struct lb_weighted *w,
                                            uint64_t index)
{
    return (uint32_t)(index % w->n);
}

/*
 * Slow start for a first pick drawn from the weight-expanded list
 * (round_robin.c, random.c): the candidate is taken with probability
 * equal to its factor (lb_view_slow_start_factor), else the pick is drawn
 * again with draw(w, state), which also moves *state (round robin: the
 * next counter value; random: the next number).  Rejection sampling: a
 * backend is then first pick with probability proportional to weight x
 * factor, Envoy's effective weight, in expectation; round robin loses
 * nothing by it, since every backend that is not ramping takes each of
 * its slots as before.  The coin is a hash of *state (no shared state).
 * At most LB_RAMP_DRAWS draws (a factor is at least min_weight > 0, so
 * the cap is a bound, not a bias in practice: with min_weight 0.1 and
 * every backend at it, 0.9^32 = 3%).  Lock-free; the caller's read-side
 * section; now_ns from lb_view_slow_start_now (nonzero).
 */
#define LB_RAMP_DRAWS 32
uint32_t lb_weighted_ramp(struct lb_weighted *w, uint32_t idx, uint64_t *state,
                          uint64_t now_ns,
                          uint64_t (*draw)(struct lb_weighted *w));

#endif /* LB_SELECT_WEIGHTED_H */
