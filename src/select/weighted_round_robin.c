/*
 * weighted_round_robin.c - nginx's smooth weighted round robin
 * (ngx_http_upstream_get_peer in ngx_http_upstream_round_robin.c).
 *
 * Every pick adds each ready backend's weight to its current weight, takes
 * the backend with the largest current weight (ties: the first in sorted
 * order, nginx's strict `>` over its configuration order) and subtracts
 * the total of the weights added from the winner.  A backend that is not
 * ready is skipped before its weight is added, exactly as nginx skips a
 * `down` server: the others keep their weights, and the sequence is the
 * one nginx gives with that server marked down.  With weights 5, 1, 1 the
 * sequence is a a b a c a a (the smooth one), not a a a a a b c.
 *
 * Concurrency.  nginx keeps the current weights per worker, unlocked, or
 * under a write lock held for the whole O(n) pick when the upstream has a
 * shared `zone`.  Here picks come from any number of threads at once and
 * must see one sequence, so the current weights sit behind one small
 * spinlock per selector held for the O(n) pick (n relaxed readiness loads
 * and adds): lock-free schemes cannot give nginx's sequence (a pick reads
 * and writes every backend's current weight), and per-thread state would
 * give each thread its own sequence, i.e. a share off by up to one round
 * per thread.  Measured (bench/select_c.c, one run on 2 shared cores): one
 * thread 47 ns per pick at 10 backends, 0.32 us at 100, 3.2 us at 1000
 * (nginx's own pick is the same O(n) loop); two threads at once 110 ns
 * each at 10 backends, against 79 ns for round robin's shared counter.
 *
 * The lock word carries the process's fork epoch: a child forked while
 * another thread held the lock (that thread does not exist in the child)
 * sees a lock of an older epoch and takes it over; the current weights it
 * then reads may be one pick's update short, which only shifts the
 * sequence.  No fork handler has to know every selector.
 *
 * The walk: first() is the smooth pick; next() walks the sorted list from
 * the backend picked (i + 1, i + 2, ... mod n) without touching the
 * current weights, so select_with's rejections and the unique walk leave
 * the sequence other callers see as it was, and see every backend within
 * n steps.
 */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "select.h"

struct wrr {
    _Atomic uint64_t lock; /* (fork epoch << 1) | held */
    uint32_t n;
    const struct lb_record_view *view;
    int64_t *current; /* n current weights, under the lock */
    uint32_t weight[];
};

/* Incremented in a forked child only (its one thread), read relaxed by
 * every lock taker. */
static _Atomic uint64_t fork_epoch;

static void wrr_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_epoch, 1, memory_order_relaxed);
}

/* Test-and-test-and-set with a yield after a spell of spinning: the lock
 * is held for one O(n) loop, but a holder preempted on a shared CPU must
 * not make the others burn their slice. */
static uint64_t wrr_lock(struct wrr *w)
{
    uint64_t e = atomic_load_explicit(&fork_epoch, memory_order_relaxed);

    for (unsigned spins = 0;; spins++) {
        uint64_t v = atomic_load_explicit(&w->lock, memory_order_relaxed);

        if ((!(v & 1) || (v >> 1) != e) &&
            atomic_compare_exchange_weak_explicit(&w->lock, &v, (e << 1) | 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return e;
        if (spins >= 64) {
            sched_yield();
            spins = 0;
        }
    }
}

static void wrr_unlock(struct wrr *w, uint64_t e)
{
    atomic_store_explicit(&w->lock, e << 1, memory_order_release);
}

static void *wrr_build(const lb_backend *backends, size_t n,
                       const lb_config *cfg, const struct lb_record_view *view,
                       const char **err)
{
    struct wrr *w = calloc(1, sizeof(*w) + n * sizeof(w->weight[0]));

    (void)cfg;
    if (w)
        w->current = calloc(n ? n : 1, sizeof(w->current[0]));
    if (!w || !w->current) {
        free(w);
        *err = "out of memory";
        return NULL;
    }
    w->n = (uint32_t)n;
    w->view = view;
    for (size_t i = 0; i < n; i++)
        w->weight[i] = backends[i].weight;
    return w;
}

static void wrr_destroy(void *sel)
{
    struct wrr *w = sel;

    free(w->current);
    free(w);
}

/* ngx_http_upstream_get_peer's loop (its effective_weight is the weight:
 * lb has no max_fails).  With no ready backend it returns backend 0 and
 * changes nothing: the walk then finds nothing ready. */
static uint32_t wrr_first(void *sel, const char *key, size_t len,
                          uint64_t *state)
{
    struct wrr *w = sel;
    int64_t total = 0;
    uint32_t best = UINT32_MAX;
    uint64_t e;

    (void)key;
    (void)len;
    e = wrr_lock(w);
    for (uint32_t i = 0; i < w->n; i++) {
        if (!lb_view_ready(w->view, i))
            continue;
        w->current[i] += w->weight[i];
        total += w->weight[i];
        if (best == UINT32_MAX || w->current[i] > w->current[best])
            best = i;
    }
    if (best != UINT32_MAX)
        w->current[best] -= total;
    wrr_unlock(w, e);
    if (best == UINT32_MAX)
        best = 0;
    *state = best;
    return best;
}

static uint32_t wrr_next(void *sel, uint64_t *state)
{
    struct wrr *w = sel;
    uint64_t i = *state + 1;

    if (i >= w->n)
        i = 0;
    *state = i;
    return (uint32_t)i;
}

const struct lb_selector_ops lb_select_weighted_round_robin = {
    .build = wrr_build,
    .first = wrr_first,
    .next = wrr_next,
    .destroy = wrr_destroy,
    .fork_child = wrr_fork_child,
};
