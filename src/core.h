/*
 * core.h - private types of the core: snapshots, the balancer, its event
 * queue.  Included by the core's files (the .c files of src/) only; the checker
 * reaches the core through src/targets.h, algorithms see src/select/select.h.
 */
#ifndef LB_CORE_H
#define LB_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "lb.h"
#include "rcu.h"
#include "record.h"
#include "select/select.h"
#include "shared.h"
#include "store.h"

/*
 * An immutable snapshot: what one RCU pointer publishes.  It holds one
 * reference on each of its records (released in its RCU callback, after
 * which no reader can reach them through it).
 */
struct lb_snapshot {
    lb_rcu_head rcu;
    uint64_t gen;
    size_t n;
    const struct lb_selector_ops *ops;
    void *selector;
    struct lb_store *store;     /* the records' store */
    struct lb_record **rec;     /* n records, same order as backends */
    lb_backend *backends;       /* n, sorted */
    struct lb_record_view view; /* rec[0..n), for the selector */
};

/*
 * Health-change events (src/events.c): a bounded multi-producer,
 * single-consumer ring of LB_EVENTS_MAX cells (Vyukov's bounded queue:
 * each cell's sequence number says whose turn it is), allocated on the
 * first push.  Producers never wait (one compare-and-swap on `tail`); the
 * consumer side is serialised by `lock`.  A flip that finds the ring full
 * marks its record (LB_R_RESYNC) and counts `resync`; the drain that empties
 * the ring then delivers each marked record's current state.
 */
struct lb_event_cell {
    _Atomic uint64_t seq;
    lb_health_event ev;
};

struct lb_events {
    _Atomic(struct lb_event_cell *) ring;
    _Atomic uint64_t tail;    /* next position to fill (producers) */
    uint64_t head;            /* next position to take (consumer, under lock) */
    _Atomic uint32_t resync;  /* records marked since the last scan */
    _Atomic uint64_t dropped; /* flips not queued */
    pthread_mutex_t lock;
};

struct lb_balancer {
    struct lb_snapshot *snap;   /* RCU-published; never NULL after new */
    pthread_mutex_t write_lock; /* serialises writers (update, free) */
    lb_config cfg;
    const struct lb_selector_ops *ops;
    struct lb_store *store;         /* the records (heap store) */
    struct lb_events events;        /* every flip observed through the core */
    struct lb_shared *shared;       /* the region (src/shared.h), or NULL */
    uint64_t adopted;               /* region set version published here */
    _Atomic uint64_t discovered[2]; /* discovery runs: ok, failed (private) */
    /* Passive health and panic (src/passive.c).  eject_lock decides each
     * ejection against the cap; panic_lock serialises panic recounts.
     * Both are leaves (eject_lock may take panic_lock, nothing else is
     * taken under either), neither is taken by select or report's common
     * path. */
    pthread_mutex_t eject_lock;
    pthread_mutex_t panic_lock;
    _Atomic uint64_t panic_seq; /* changes that asked for a recount */
    uint64_t panic_counted;     /* panic_seq the last recount saw (lock) */
    _Atomic uint32_t panic;     /* selection ignores health */
    struct lb_checker_job *job; /* health checks (src/checker/), or NULL */
    void (*job_release)(lb_balancer *b); /* stops and frees `job` */
    struct lb_disc *disc; /* discovery source (src/discovery/), or NULL */
    void (*disc_release)(lb_balancer *b); /* stops and frees `disc` */
    struct lb_balancer *prev, *next;      /* every balancer, for fork */
};

/* lb_backend_compare without the weight: the order of addresses alone
 * (family, address bytes or path, port).  Pure function, any thread. */
int lb_backend_compare_address(const lb_backend *a, const lb_backend *b);

/* Fork steps of the balancers, called by the one fork handler
 * (src/fork.c): every balancer's write lock and event-queue lock are held
 * across fork(), so a child never inherits one taken by another thread. */
void lb_balancers_fork_prepare(void);
void lb_balancers_fork_parent(void);
void lb_balancers_fork_child(void);

/* Record one active observation on r (reached through the published
 * snapshot inside a read-side section, or held) with Pingora's thresholds
 * and push its flip onto b's queue.  Returns 1 when it flipped, else 0.
 * Lock-free, any thread (src/balancer.c). */
int lb_balancer_observe_record(lb_balancer *b, struct lb_store *st,
                               struct lb_record *r, int ok, uint32_t threshold,
                               int err_kind, int err_detail);

/*
 * The shared update (src/update.c): publish sorted[0..m) (unique, each
 * entry's enable applied) into b's region, relative to the region's set
 * (not this process's snapshot, which may lag), then adopt it here.
 * Caller holds b->write_lock.  Returns 1 (published), 0 (same set: only
 * the enables applied, adopted here if this process lagged), or LB_ERROR
 * with *err (capacity, out of memory): the region and this process keep
 * their previous set.
 */
int lb_update_shared(lb_balancer *b, const lb_backend *sorted, size_t m,
                     const char **err);

/*
 * Make backends[0..n) of the region (sorted, with their slots), version v,
 * this process's published snapshot.  Caller holds b->write_lock.  LB_OK
 * or LB_ERROR with *err (out of memory: the previous snapshot stays).
 */
int lb_shared_adopt(lb_balancer *b, const lb_backend *backends,
                    const uint32_t *slots, size_t n, uint64_t v,
                    const char **err);

/* ---- passive health, panic, slow start (src/passive.c) ---- */

/* The balancer's passive state: locks made, not in panic.  Destroy: no
 * other thread uses b. */
void lb_passive_init(lb_balancer *b);
void lb_passive_destroy(lb_balancer *b);

/*
 * A report on record i of s (the published snapshot, in the caller's
 * read-side section): counts it and, at every consecutive_failures-th
 * failure in a row, asks for an ejection (under b->eject_lock, only when
 * s is still the published snapshot, so the cap is counted over the set
 * selection uses).  Lock-free otherwise; any thread.
 */
void lb_passive_report(lb_balancer *b, struct lb_snapshot *s, size_t i, bool ok,
                       uint64_t latency_ns);

/*
 * Something changed what selection sees (a flip, an enablement, a new
 * set): `up` a record of b became ready (slow start's ramping flag of the
 * published view is raised, seq_cst, after the record's ready_since was
 * stored), and panic is recounted when b has a panic threshold (O(n)
 * under b->panic_lock; concurrent changes share one recount).  Any
 * thread, inside a read-side section or not (it takes its own).
 */
void lb_passive_changed(lb_balancer *b, bool up);

/* ---- events (src/events.c) ---- */

/* An empty queue (no ring yet).  The caller owns q. */
void lb_events_init(struct lb_events *q);

/*
 * Queue the flip `ev` of record r.  Lock-free, any thread, never waits.
 * When r is already marked, nothing is queued (the drain will deliver its
 * current state); when the ring is full (or cannot be allocated), r is
 * marked.  Either way the flip counts as dropped.
 */
void lb_events_flip(struct lb_events *q, struct lb_record *r,
                    const lb_health_event *ev);

/*
 * Consumer side: up to max events, the ring's oldest first, then the
 * current state of marked records among s's (the published snapshot, in
 * the caller's read-side section).  Takes q->lock.
 */
int lb_events_drain(struct lb_events *q, const struct lb_snapshot *s,
                    lb_health_event *out, int max);

/* Free the ring; no other thread may use q. */
void lb_events_destroy(struct lb_events *q);

/* ---- snapshots (src/snapshot.c) ---- */

/* Build a snapshot of sorted, unique backends with their records (the
 * references are taken over by the snapshot on success; on failure the
 * caller still holds them).  `panic` is the balancer's panic flag, which
 * the view shows the selector (lb_view_ready).  Writers only; NULL with
 * *err. */
struct lb_snapshot *
lb_snapshot_new(const struct lb_selector_ops *ops, const lb_config *cfg,
                const lb_backend *sorted, size_t n, struct lb_record **rec,
                struct lb_store *store, const _Atomic uint32_t *panic,
                uint64_t gen, const char **err);

/* Free after a grace period (call_rcu): the selector, then the record
 * references.  Writers only, once per snapshot. */
void lb_snapshot_retire(struct lb_snapshot *s);

/* Index of `rec` among s's backends of r's address `key` (the address
 * group, found by binary search), or -1 when s no longer lists it.
 * Inside a read-side section.  O(log n + group). */
long lb_snapshot_find_record(const struct lb_snapshot *s, const lb_backend *key,
                             const struct lb_record *rec);

#endif /* LB_CORE_H */
