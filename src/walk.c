/*
 * walk.c - select and the unique iterator (Pingora's UniqueIterator).
 *
 * Readers: each call is one RCU read-side section, takes no lock, and
 * touches the published snapshot and its records with plain and relaxed
 * loads (round robin's counter is the selector's relaxed atomic add).
 *
 * Panic (src/passive.c): a walk that begins while the balancer is in
 * panic takes enabled backends whatever their health, and says so in the
 * head's `ready`.  select reads the flag (one relaxed load) only when its
 * first candidate is not ready, so the common case costs nothing more.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "iter.h"

static int iter_reserve(lb_iter *it, size_t n);
static void iter_reset(lb_iter *it);
static int iter_mark(lb_iter *it, uint32_t idx);

/* ---- iteration (Pingora's UniqueIterator) ---- */

lb_iter *lb_iter_new(void) { return calloc(1, sizeof(lb_iter)); }

void lb_iter_free(lb_iter *it)
{
    if (it) {
        free(it->seen);
        free(it);
    }
}

static int iter_reserve(lb_iter *it, size_t n)
{
    uint32_t words = (uint32_t)((n + 63) / 64);

    if (words > it->nwords) {
        uint64_t *seen = calloc(words, sizeof(uint64_t));
        if (!seen)
            return LB_ERROR;
        free(it->seen);
        it->seen = seen;
        it->nwords = words;
        it->ntouched = 0;
    }
    return LB_OK;
}

/* Clear only the words the last walk dirtied: a walk is short (bounded by
 * max_iterations and usually one step), the bitmap may be 8 KiB. */
static void iter_reset(lb_iter *it)
{
    if (it->ntouched > LB_ITER_TOUCH)
        memset(it->seen, 0, it->nwords * sizeof(uint64_t));
    else
        for (uint32_t k = 0; k < it->ntouched; k++)
            it->seen[it->touched[k]] = 0;
    it->ntouched = 0;
}

/* Returns 1 when idx is new to this walk. */
static int iter_mark(lb_iter *it, uint32_t idx)
{
    uint32_t w = idx >> 6;
    uint64_t bit = 1ull << (idx & 63);

    if (it->seen[w] & bit)
        return 0;
    if (it->seen[w] == 0) {
        if (it->ntouched < LB_ITER_TOUCH)
            it->touched[it->ntouched] = w;
        if (it->ntouched <= LB_ITER_TOUCH)
            it->ntouched++;
    }
    it->seen[w] |= bit;
    return 1;
}

/* End a walk that can yield nothing new.  Round robin's steps advance the
 * shared counter (its ops have `skip`): the steps left up to max_steps are
 * taken at once, one atomic add, so the counter moves exactly as if each had
 * been taken (as Pingora's iterator takes them), at no cost per step. */
static inline void walk_skip_rest(struct lb_snapshot *s, lb_iter *it)
{
    if (s->ops->skip && it->steps < it->max_steps) {
        s->ops->skip(s->selector, &it->state, it->max_steps - it->steps);
        it->steps = it->max_steps;
    }
}

/* Whether a walk takes r: ready, or in panic enabled. */
static inline bool walk_takes(const lb_iter *it, const struct lb_record *r)
{
    return it->panic ? lb_record_enabled(r) : lb_record_ready(r);
}

static inline uint32_t panic_now(lb_balancer *b)
{
    return atomic_load_explicit(&b->panic, memory_order_relaxed);
}

/* Any backend of s the walk takes?  n relaxed loads: cheaper than the walk
 * it saves when none is (an outage), and only taken when the first pick
 * was not ready. */
static bool any_ready(const struct lb_snapshot *s, const lb_iter *it)
{
    for (size_t i = 0; i < s->n; i++)
        if (walk_takes(it, s->rec[i]))
            return true;
    return false;
}

/* The walk's core, inside the caller's read-side section: the next unique
 * index, or LB_DECLINED once max_steps underlying steps are used. */
static inline int walk_next(struct lb_snapshot *s, lb_iter *it)
{
    /* Once every backend has been returned, no step can yield a new one:
     * stop there instead of stepping on to max_iterations (Pingora's
     * iterator would, returning nothing more), so a walk costs at most the
     * steps it takes to see every backend, however large max_iterations
     * is.  Round robin's remaining steps are taken in one (walk_skip_rest). */
    while (it->steps < it->max_steps && it->nseen < s->n) {
        uint32_t idx = s->ops->next(s->selector, &it->state);
        it->steps++;
        if (idx >= s->n)
            continue;
        if (iter_mark(it, idx)) {
            it->nseen++;
            it->head.ready = walk_takes(it, s->rec[idx]);
            return (int)idx;
        }
    }
    walk_skip_rest(s, it);
    return LB_DECLINED;
}

/* Set up a walk whose first candidate is already known, with its
 * readiness (the selector's first() may have a side effect, round robin's
 * counter, so it is called exactly once per walk by the callers). */
static inline int walk_begin(struct lb_snapshot *s, lb_iter *it, uint32_t first,
                             int ready, uint32_t max)
{
    if (iter_reserve(it, s->n) != LB_OK)
        return LB_ERROR;
    it->steps = 1;
    it->nseen = 1;
    it->max_steps = max;
    iter_reset(it);
    iter_mark(it, first);
    it->head.ready = ready;
    return (int)first;
}

int lb_iter_first(lb_balancer *b, const char *key, size_t len,
                  uint32_t max_iterations, lb_iter *it)
{
    struct lb_snapshot *s;
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    it->head.gen = s->gen;
    it->owner = b;
    it->head.ready = 0;
    it->max_steps = 0;
    it->panic = panic_now(b);
    if (s->n > 0 && max_iterations > 0) {
        uint32_t first = s->ops->first(s->selector, key, len, &it->state);
        rc = walk_begin(s, it, first, walk_takes(it, s->rec[first]),
                        max_iterations);
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_iter_next(lb_balancer *b, lb_iter *it)
{
    int rc;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen != it->head.gen || it->owner != b)
            rc = LB_STALE;
        else
            rc = walk_next(s, it);
    }
    lb_rcu_read_unlock();
    return rc;
}

/* select's walk inside the caller's read-side section on snapshot s.
 * The common case, a ready first candidate, touches neither the bitmap nor
 * the walk's position: one selector lookup and one health load. */
static inline int select_in(lb_balancer *b, struct lb_snapshot *s,
                            const char *key, size_t len,
                            uint32_t max_iterations, lb_iter *it)
{
    uint32_t first;
    int rc;

    it->head.gen = s->gen;
    it->owner = b;
    /* End the iterator's previous walk: it->head.gen now names this snapshot,
     * and an lb_iter_next continuing that walk here would mark indices in
     * a bitmap sized for another set (walk_begin starts select's own). */
    it->max_steps = 0;
    if (s->n == 0 || max_iterations == 0)
        return LB_DECLINED;
    first = s->ops->first(s->selector, key, len, &it->state);
    if (lb_record_ready(s->rec[first])) {
        it->head.ready = 1;
        return (int)first;
    }
    it->panic = panic_now(b);
    rc =
        walk_begin(s, it, first, walk_takes(it, s->rec[first]), max_iterations);
    if (rc >= 0 && !it->head.ready && !any_ready(s, it)) {
        /* An outage: nothing to find, whatever the cap.  The walk is over
         * (lb_iter_next declines), with round robin's steps taken. */
        walk_skip_rest(s, it);
        it->max_steps = it->steps;
        rc = LB_DECLINED;
    }
    while (rc >= 0 && !it->head.ready)
        rc = walk_next(s, it);
    return rc;
}

int lb_balancer_select(lb_balancer *b, const char *key, size_t len,
                       uint32_t max_iterations, lb_iter *it)
{
    int rc;

    lb_rcu_read_lock();
    rc = select_in(b, lb_rcu_deref(&b->snap), key, len, max_iterations, it);
    lb_rcu_read_unlock();
    return rc;
}

/* The pick is counted on the record of the snapshot it was made in, inside
 * the same read-side section, so no second call has to find the record
 * again.  The selection is lb_store_pick's plain add to a counter this
 * process alone writes (with `shared`, its own column: two workers adding
 * to one word of the region cost 2.7x a select, bench/metrics.lua); in
 * flight goes where the store keeps it, as lb_balancer_in_flight_add puts
 * it. */
int lb_balancer_select_counted(lb_balancer *b, uint64_t gen, const char *key,
                               size_t len, uint32_t max_iterations,
                               int in_flight, lb_iter *it)
{
    struct lb_snapshot *s;
    int rc;

    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    rc = select_in(b, s, key, len, max_iterations, it);
    if (rc >= 0 && s->gen == gen) {
        lb_store_pick(s->store, s->rec[rc]);
        if (in_flight)
            lb_store_in_flight_add(s->store, s->rec[rc], 1);
    }
    lb_rcu_read_unlock();
    return rc;
}
