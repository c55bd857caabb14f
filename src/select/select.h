/*
 * select/select.h - the selection algorithms' ops table and their registry.
 *
 * One file per algorithm under src/select/, each ending with its ops table;
 * one row per algorithm in src/select/registry.c (name, flags, ops).  A
 * selector is built for one sorted backend array and never changes after
 * (round robin's counter aside); it knows nothing of health.  The core walks
 * it with first/next on indices into the snapshot's backend array and does
 * the health filtering, the unique filter and the step cap (Pingora's
 * UniqueIterator).
 *
 * Dependencies: this folder includes lb.h and its own headers only; the
 * core (src/) includes this header, never the other way round.
 */
#ifndef LB_SELECT_H
#define LB_SELECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "clock.h"
#include "lb.h"

/*
 * The per-backend records, read-only, as a selector may see them: what
 * least-request, peak EWMA and bounded loads need (in flight, latency).
 * records[i] is backend i's record (struct lb_record, src/record.h, read
 * with relaxed atomic loads: figures that move while a pick is made, never
 * torn).  The view lives in the snapshot beside the backend array the
 * selector is built for, so it stays valid for the selector's life.
 */
struct lb_record;
struct lb_store;
struct lb_record_view {
    struct lb_record *const *records; /* n, same order as the backends */
    size_t n;
    struct lb_store *store; /* the records' store */
    /* Slow start (lb_config.slow_start_*), fixed at build: window in ns
     * (0: off), the exponent 1 / aggression, the least factor. */
    uint64_t slow_window_ns;
    double slow_exponent;
    double slow_min_weight;
    /* Nonzero while some backend of the view may be within its window:
     * raised (seq_cst) when one becomes ready, at build when slow start is
     * on, and lowered by the sweep (lb_balancer_tick) once every window
     * is over.  The one mutable field of a view. */
    _Atomic uint32_t ramping;
    /* The balancer's panic flag (lb_config.panic_threshold), or NULL: in
     * panic lb_view_ready takes every enabled backend as ready. */
    const _Atomic uint32_t *panic;
};

/* Requests in flight on backend i of the view (every process's, with a
 * shared store): relaxed loads, lock-free, any thread, in the caller's
 * read-side section (src/snapshot.c). */
uint32_t lb_view_in_flight(const struct lb_record_view *v, size_t i);

/*
 * Slow start for a weighted pick.  lb_view_slow_start_now is 0 when no
 * backend of the view is ramping up (the common case: one relaxed load,
 * no clock), else the coarse monotonic clock in ns to pass to
 * lb_view_slow_start_factor, which gives backend i's weight factor at
 * that time, Envoy's max(min_weight, (t / window) ^ (1 / aggression)),
 * in [min_weight, 1] (1 once its window is over).  A selector scales
 * backend i's weight by the factor (least_request, peak_ewma, smooth
 * weighted round robin) or, where the first pick comes from a
 * precomputed weight-expanded list, accepts the candidate with that
 * probability and draws again (lb_weighted_ramp).  Lock-free, any
 * thread, in the caller's read-side section (src/passive.c).
 */
static inline uint64_t lb_view_slow_start_now(const struct lb_record_view *v)
{
    if (__builtin_expect(
            !atomic_load_explicit(&v->ramping, memory_order_relaxed), 1))
        return 0;
    return lb_clock_coarse_ns();
}

double lb_view_slow_start_factor(const struct lb_record_view *v, size_t i,
                                 uint64_t now_ns);

/* Whether backend i of the view is ready (healthy and enabled, or only
 * enabled while the balancer is in panic), as the walk judges it: for
 * algorithms whose order itself depends on readiness (weighted_round_robin
 * skips a backend that is not ready before adding its weight, as nginx skips a
 * `down` server; the power-of-k choices prefer a ready candidate).  One relaxed
 * load, lock-free, any thread, in the caller's read-side section
 * (src/snapshot.c). */
bool lb_view_ready(const struct lb_record_view *v, size_t i);

/* Backend i's peak EWMA of latency in nanoseconds, decayed to `now_ms`
 * (lb_view_now_ms) with time constant decay_ms, as Finagle's PeakEwma
 * reads it; 0 when no latency was ever reported, at least 1 after.  Pure
 * (one relaxed load, no write), lock-free, any thread, in the caller's
 * read-side section (src/snapshot.c, src/record.c). */
uint64_t lb_view_latency_ns(const struct lb_record_view *v, size_t i,
                            uint64_t now_ms, double decay_ms);

/* The clock of lb_view_latency_ns: CLOCK_MONOTONIC_COARSE in
 * milliseconds (src/record.c).  Any thread. */
uint64_t lb_record_now_ms(void);

struct lb_selector_ops {
    /* Build for backends[0..n) (sorted, n >= 0), with `view` over the same
     * backends' records (the selector may keep the pointer).  NULL with
     * *err on failure (a static string).  Called by writers only (under
     * the balancer's write lock), may allocate. */
    void *(*build)(const lb_backend *backends, size_t n, const lb_config *cfg,
                   const struct lb_record_view *view, const char **err);
    /* First candidate index for the key; *state is the walk position that
     * next() continues from.  Only called when n > 0, inside the caller's
     * RCU read-side section, from any number of threads at once.
     * Lock-free, no allocation. */
    uint32_t (*first)(void *sel, const char *key, size_t len, uint64_t *state);
    /* The next index of the algorithm's raw sequence (duplicates included).
     * Same contract as first. */
    uint32_t (*next)(void *sel, uint64_t *state);
    /* Optional: steps have an effect others can see (round robin's shared
     * counter).  Advance *state as `steps` calls of next() would, for a
     * walk that ends before max_iterations because it can find nothing
     * new: Pingora's iterator would take those steps.  Lock-free, O(1). */
    void (*skip)(void *sel, uint64_t *state, uint64_t steps);
    /* Free a selector build returned; called after the snapshot's grace
     * period (liburcu's call_rcu thread), when no reader can hold it. */
    void (*destroy)(void *sel);
    /* Optional fork steps of the algorithm, called by the one fork handler
     * (src/fork.c) at the place its lock order gives them: prepare takes
     * the algorithm's process-wide locks (Ketama's spare arrays), parent
     * and child release them; child also resets per-process state (the
     * random generators' seed).  Run on the forking thread only. */
    void (*fork_prepare)(void);
    void (*fork_parent)(void);
    void (*fork_child)(void);
};

/* A registry row (src/select/registry.c).  The row's position is the id
 * lb_config.selection takes. */
struct lb_selection_row {
    const char *name;
    uint32_t flags; /* LB_SELECTION_* */
    const struct lb_selector_ops *ops;
};

/* The row of id `selection`, or NULL when there is none.  Pure, any
 * thread. */
const struct lb_selection_row *lb_selection_at(int selection);

/* Check cfg's selection options against its algorithm's row (an option
 * the algorithm does not take, a value out of range, a table_size that is
 * not a prime): LB_OK, or LB_ERROR with *err (static) naming the option.
 * Checks that need the backend set (table_size >= the count) are the
 * build's.  Pure, any thread (lb_balancer_new). */
int lb_selection_check(const lb_config *cfg, const char **err);

#endif /* LB_SELECT_H */
