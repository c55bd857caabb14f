/*
 * selector.h - the selection algorithms' ops table.
 *
 * One file per algorithm under src/select/, each ending with its ops table.
 * A selector is built for one sorted backend array and never changes after
 * (round robin's counter aside); it knows nothing of health.  The core walks
 * it with first/next on indices into the snapshot's backend array and does
 * the health filtering, the unique filter and the step cap (Pingora's
 * UniqueIterator).
 */
#ifndef LB_SELECTOR_H
#define LB_SELECTOR_H

#include "lb.h"

struct lb_selector_ops {
    const char *name;
    /* Build for backends[0..n) (sorted, n >= 0).  NULL with *err on
     * failure (a static string).  Called by writers only. */
    void *(*build)(const lb_backend *backends, size_t n, const lb_config *cfg,
                   const char **err);
    /* First candidate index for the key; *state is the walk position that
     * next() continues from.  Only called when n > 0.  Lock-free, no
     * allocation. */
    uint32_t (*first)(void *sel, const char *key, size_t len, uint64_t *state);
    uint32_t (*next)(void *sel, uint64_t *state);
    /* Optional: steps have an effect others can see (round robin's shared
     * counter).  Advance *state as `steps` calls of next() would, for a
     * walk that ends before max_iterations because it can find nothing
     * new: Pingora's iterator would take those steps.  Lock-free, O(1). */
    void (*skip)(void *sel, uint64_t *state, uint64_t steps);
    void (*destroy)(void *sel);
};

extern const struct lb_selector_ops lb_select_round_robin;
extern const struct lb_selector_ops lb_select_random;
extern const struct lb_selector_ops lb_select_fnv;
extern const struct lb_selector_ops lb_select_consistent;

const struct lb_selector_ops *lb_selector_by_id(int selection);

/* Fork hooks, called in order by the one pthread_atfork handler of
 * src/rcu.c: the lock of Ketama's spare arrays, and the random generators'
 * reseed in the child. */
void lb_ketama_fork_prepare(void);
void lb_ketama_fork_parent(void);
void lb_ketama_fork_child(void);
void lb_random_fork_child(void);

/* Shared by the three weighted algorithms (src/select/weighted.c):
 * Pingora's Weighted, the first pick from the weight-expanded list, the
 * fallbacks uniform over the unique list. */
struct lb_weighted {
    uint32_t n;          /* unique backends */
    uint32_t total;      /* length of the weight-expanded list */
    uint64_t counter;    /* round robin only: atomic, the one write on the
                            read path */
    uint16_t expanded[]; /* index of the backend owning each slot */
};

void *lb_weighted_build(const lb_backend *backends, size_t n,
                        const lb_config *cfg, const char **err);
void lb_weighted_destroy(void *sel);

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

#endif /* LB_SELECTOR_H */
