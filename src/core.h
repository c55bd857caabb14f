/*
 * core.h - private types of the core: health records and snapshots.
 */
#ifndef LB_CORE_H
#define LB_CORE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "lb.h"
#include "rcu.h"
#include "select/select.h"

/*
 * A health record: one 64-bit word updated by compare-and-swap, so a flip
 * is one atomic store seen by readers without rebuilding the snapshot.
 *
 *   bit 0       healthy
 *   bit 1       enabled
 *   bits 2..31  consecutive opposite observations (Pingora's counter)
 *   bits 32..39 kind of the last error (LB_CHECK_ERR_*)
 *   bits 40..63 detail of the last error (errno, HTTP status), 24 bits
 *
 * Records are reference counted: every snapshot that lists the backend
 * holds one reference, and so does a check in flight.  Readers reach a
 * record only through a snapshot, and a snapshot drops its references in
 * its RCU callback, so the last unref can free at once.
 */
struct lb_health {
    _Atomic uint64_t word;
    _Atomic uint32_t refs;
    uint64_t id;
};

#define LB_H_HEALTHY 1ull
#define LB_H_ENABLED 2ull
#define LB_H_COUNT_SHIFT 2
#define LB_H_COUNT_MASK (0x3fffffffull << LB_H_COUNT_SHIFT)
#define LB_H_KIND_SHIFT 32
#define LB_H_DETAIL_SHIFT 40

struct lb_health *lb_health_new(bool healthy);
void lb_health_ref(struct lb_health *h);
void lb_health_unref(struct lb_health *h);
void lb_health_set_enable(struct lb_health *h, bool enable);
/* Pingora's observe_health.  Returns true when the state flipped. */
bool lb_health_observe(struct lb_health *h, bool ok, uint32_t threshold,
                       int err_kind, int err_detail);
void lb_health_info_get(const struct lb_health *h, lb_health_info *out);

static inline bool lb_health_ready(const struct lb_health *h)
{
    uint64_t w = atomic_load_explicit(&h->word, memory_order_relaxed);
    return (w & (LB_H_HEALTHY | LB_H_ENABLED)) == (LB_H_HEALTHY | LB_H_ENABLED);
}

/* lb_backend_compare without the weight: the order of addresses alone
 * (family, address bytes or path, port).  Pure function, any thread. */
int lb_backend_compare_address(const lb_backend *a, const lb_backend *b);

/* An immutable snapshot: what one RCU pointer publishes. */
struct lb_snapshot {
    lb_rcu_head rcu;
    uint64_t gen;
    size_t n;
    const struct lb_selector_ops *ops;
    void *selector;
    struct lb_health **health; /* n records, same order as backends */
    lb_backend *backends;      /* n, sorted */
};

struct lb_balancer {
    struct lb_snapshot *snap;   /* RCU-published; never NULL after new */
    pthread_mutex_t write_lock; /* serialises writers (update, free) */
    lb_config cfg;
    const struct lb_selector_ops *ops;
    struct lb_checker_job *job; /* health checks (src/checker.c), or NULL */
    struct lb_balancer *prev, *next; /* every balancer, for fork */
};

/* Fork steps of the balancers, called by the one fork handler
 * (src/fork.c): every balancer's write lock is held across fork(), so a
 * child never inherits one taken by a writer thread. */
void lb_balancers_fork_prepare(void);
void lb_balancers_fork_parent(void);
void lb_balancers_fork_child(void);

/* Stop and release everything the checker holds for the balancer
 * (src/checker.c): periodic rounds, a round in flight, kept-alive
 * connections, the configuration and the event queue; a no-op when it has
 * none.  Called by lb_balancer_free before the snapshot goes, when no other
 * thread uses `b`. */
void lb_balancer_checks_free(lb_balancer *b);

/*
 * Health-change events (src/events.c): a multi-producer, single-consumer
 * queue.  Producers push with one compare-and-swap on a stack head (never
 * a lock: the checker thread must not wait for the Lua thread); the
 * consumer takes the whole stack with one exchange, reverses it into FIFO
 * order and serves from that private list under `lock`, which only
 * consumers take.  Taking the whole stack at once is what makes the pop
 * side free of ABA.
 */
struct lb_event_node;

struct lb_events {
    _Atomic(struct lb_event_node *) head;
    struct lb_event_node *ready; /* FIFO, under lock */
    pthread_mutex_t lock;
};

void lb_events_init(struct lb_events *q);
/* Any thread, lock-free.  False when out of memory (the event is lost,
 * the health record itself is still right). */
bool lb_events_push(struct lb_events *q, const lb_health_event *ev);
/* Consumer side: up to max events, oldest first. */
int lb_events_drain(struct lb_events *q, lb_health_event *out, int max);
/* Free every queued event; no other thread may use q. */
void lb_events_destroy(struct lb_events *q);

/* Build a snapshot of sorted, unique backends with the given health
 * records (references are taken over by the snapshot).  NULL with *err. */
struct lb_snapshot *lb_snapshot_new(const struct lb_selector_ops *ops,
                                    const lb_config *cfg,
                                    const lb_backend *sorted, size_t n,
                                    struct lb_health **health, uint64_t gen,
                                    const char **err);
/* Free after a grace period (call_rcu); drops the health references. */
void lb_snapshot_retire(struct lb_snapshot *s);

/* Fork steps of the checker (src/checker.c: its lock and the event
 * queues), called in order by the one fork handler, src/fork.c. */
void lb_checker_fork_prepare(void);
void lb_checker_fork_parent(void);
void lb_checker_fork_child(void);

#endif /* LB_CORE_H */
