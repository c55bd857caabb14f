/*
 * store.h - the record store: where a balancer's per-backend records live.
 *
 * One small interface, two implementations:
 *   heap    (store_heap.c)    records in this process's heap: every
 *                             balancer's default;
 *   shared  (shared.c)        records in a shared balancer's region, made
 *                             with mmap(MAP_SHARED) before fork(), so every
 *                             forked process reads and writes the same
 *                             records; the region holds no pointer and no
 *                             process-local id (each process has its own
 *                             handle).  Its slots live by the published
 *                             set; ref and release count one process's
 *                             holds, so the mapping outlives them.
 *
 * A record is handed out held (one reference) and stays at the same
 * address, in the same slot, until its last reference is released: a
 * snapshot that lists the backend holds one, a check target holds one.
 * Its id (lb_health_info.id) is its slot and the slot's incarnation, the
 * same in every process attached to a shared store, never reused while
 * the record lives, and below 2^53 (a Lua number).
 *
 * Threads: acquire, find and rekey are for writers (a balancer's update,
 * under its write lock); ref, release and id may be called from any thread
 * on a held record (release runs on liburcu's call_rcu thread when a
 * retired snapshot is freed, and on the checker thread).  Each store
 * serialises its slot allocation with its own lock, a leaf: no lock is
 * taken while holding it, and it is never held across fork() (every thread
 * that takes it is quiesced by an earlier step of src/fork.c).
 */
#ifndef LB_STORE_H
#define LB_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "record.h"

struct lb_store;

struct lb_store_ops {
    /* A held record for backend `key`, fresh (lb_record_init(healthy)) or,
     * in a store shared by processes, the live record another process
     * made for the same (address, weight).  NULL when out of memory or
     * capacity. */
    struct lb_record *(*acquire)(struct lb_store *st, const lb_backend *key,
                                 bool healthy);
    /* Optional (shared stores): the live record of `key`, held, or NULL. */
    struct lb_record *(*find)(struct lb_store *st, const lb_backend *key);
    /* Optional: the record now belongs to `key` (a weight-only change
     * keeps its record). */
    void (*rekey)(struct lb_store *st, struct lb_record *r,
                  const lb_backend *key);
    void (*ref)(struct lb_store *st, struct lb_record *r);
    /* Drop one reference; the last one frees the slot for reuse. */
    void (*release)(struct lb_store *st, struct lb_record *r);
    /* Optional: release each of r[0..n) (a retired snapshot's records),
     * taking the store's lock once rather than once per record: the
     * call_rcu thread releasing 10,000 records must not trade the lock
     * with a writer acquiring the next set's. */
    void (*release_many)(struct lb_store *st, struct lb_record *const *r,
                         size_t n);
    uint64_t (*id)(const struct lb_store *st, const struct lb_record *r);
    /* Optional: requests in flight on r, counted where the store keeps
     * them (a shared store: one count per process, so a process that dies
     * leaves none behind).  NULL: the record's own in_flight field. */
    void (*in_flight_add)(struct lb_store *st, struct lb_record *r,
                          int32_t delta);
    uint32_t (*in_flight)(const struct lb_store *st, const struct lb_record *r);
    /* Optional: this process's share of r's in-flight count (what its
     * in_flight_add calls added).  NULL: the record's own in_flight. */
    uint32_t (*in_flight_own)(const struct lb_store *st,
                              const struct lb_record *r);
    /* Optional: the counter of r's picks this process writes (a shared
     * store: this process's column, so no two processes write one word;
     * it also sets the store's `picks`), or NULL when there is none (the
     * process table is full).  NULL op: the record's own `picks`. */
    _Atomic uint64_t *(*picks)(struct lb_store *st, struct lb_record *r);
    /* Optional: the sum of r's pick counters (every process's column). */
    uint64_t (*picks_sum)(const struct lb_store *st, const struct lb_record *r);
    /* The owner lets go: the store (this process's handle) is freed once
     * its last held record is released, at once when none is. */
    void (*close)(struct lb_store *st);
};

struct lb_store {
    const struct lb_store_ops *ops;
    /* This process's pick counters indexed by lb_record.slot (a shared
     * store's column), set by ops->picks at the first pick and NULL again
     * whenever the process's index is cleared; always NULL in a heap
     * store.  lb_store_pick's one load on the request path. */
    _Atomic(_Atomic uint64_t *) picks;
};

/* A heap store, empty.  NULL when out of memory.  Owned by the caller,
 * who ends it with close. */
struct lb_store *lb_store_heap_new(void);

/* The most slots a store holds (an id keeps 24 bits of slot). */
#define LB_STORE_MAX_SLOTS (1u << 24)

/* The shared store is the region's: src/shared.h. */

/* The common calls, for readability at the call sites: take one more hold
 * on a record found or acquired, and give holds back (the last release
 * frees the slot for reuse).  Lock-free or under the store's own lock, as
 * the implementation says; any thread; never fail. */
static inline void lb_store_ref(struct lb_store *st, struct lb_record *r)
{
    st->ops->ref(st, r);
}

static inline void lb_store_release(struct lb_store *st, struct lb_record *r)
{
    st->ops->release(st, r);
}

static inline void lb_store_release_many(struct lb_store *st,
                                         struct lb_record *const *r, size_t n)
{
    /* nothing held: the store may be gone already (closed, no records) */
    if (n == 0)
        return;
    if (st->ops->release_many)
        st->ops->release_many(st, r, n);
    else
        for (size_t i = 0; i < n; i++)
            st->ops->release(st, r[i]);
}

static inline uint64_t lb_store_id(const struct lb_store *st,
                                   const struct lb_record *r)
{
    return st->ops->id(st, r);
}

/*
 * Requests in flight on a held record: add delta (+1 acquire, -1 release;
 * a count never goes below zero) and read the total (every process's, in
 * a shared store).  Relaxed atomics, lock-free, any thread.
 */
static inline void lb_store_in_flight_add(struct lb_store *st,
                                          struct lb_record *r, int32_t delta)
{
    if (st->ops->in_flight_add) {
        st->ops->in_flight_add(st, r, delta);
        return;
    }
    lb_record_in_flight_add(&r->in_flight, delta);
}

/*
 * Count one pick of r, cheaply: a relaxed load and store of a counter only
 * this process writes, not a locked add (that lock is most of what a
 * count costs beside a select: bench/metrics.lua).  Exact while one thread
 * at a time counts picks of the store's records in a process (a Lua
 * state, an nginx worker); two threads doing it at once may lose counts,
 * nothing else.  With no counter of its own (a shared store whose process
 * table is full) the pick goes to r->selections with an atomic add.
 */
static inline void lb_store_pick(struct lb_store *st, struct lb_record *r)
{
    _Atomic uint64_t *col =
        atomic_load_explicit(&st->picks, memory_order_relaxed);
    _Atomic uint64_t *c;

    if (col)
        c = &col[r->slot];
    else if (st->ops->picks)
        c = st->ops->picks(st, r);
    else
        c = &r->picks;
    if (!c) {
        atomic_fetch_add_explicit(&r->selections, 1, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Every selection of r: the atomic count (acquires, lb_balancer_selected)
 * and the picks.  Relaxed loads, any thread. */
static inline uint64_t lb_store_selections(const struct lb_store *st,
                                           const struct lb_record *r)
{
    uint64_t n = atomic_load_explicit(&r->selections, memory_order_relaxed);

    if (st->ops->picks_sum)
        return n + st->ops->picks_sum(st, r);
    return n + atomic_load_explicit(&r->picks, memory_order_relaxed);
}

static inline uint32_t lb_store_in_flight(const struct lb_store *st,
                                          const struct lb_record *r)
{
    if (st->ops->in_flight)
        return st->ops->in_flight(st, r);
    return atomic_load_explicit(&r->in_flight, memory_order_relaxed);
}

static inline uint32_t lb_store_in_flight_own(const struct lb_store *st,
                                              const struct lb_record *r)
{
    if (st->ops->in_flight_own)
        return st->ops->in_flight_own(st, r);
    return atomic_load_explicit(&r->in_flight, memory_order_relaxed);
}

/* Slot and incarnation in one id: 24 bits of slot + 1, 29 of incarnation
 * (wraps after 2^29 reuses of one slot), so ids stay below 2^53. */
static inline uint64_t lb_store_make_id(uint32_t slot, uint32_t incarnation)
{
    return ((uint64_t)(incarnation & ((1u << 29) - 1)) << 24) |
           (uint64_t)(slot + 1);
}

#endif /* LB_STORE_H */
