/*
 * targets.h - the checker's one door into the core.
 *
 * A check round copies the published snapshot's backends with a held
 * handle on each one's record (lb_targets_get), records each result on
 * its handle (lb_target_observe: Pingora's thresholds, the flip pushed
 * onto the balancer's event queue) and gives the handles back
 * (lb_targets_put).  The checker sees no snapshot, no record layout, no
 * RCU and no event queue.
 */
#ifndef LB_TARGETS_H
#define LB_TARGETS_H

#include <stddef.h>
#include <stdint.h>

#include "lb.h"

struct lb_record;

struct lb_target {
    lb_backend backend;       /* a copy, the caller's to read */
    uint64_t id;              /* lb_health_info.id of the record */
    struct lb_record *record; /* held; opaque to the checker */
};

/*
 * Copy the published snapshot's backends into a new array of *n targets
 * (*out, NULL when the set is empty), each holding its record.  Inside
 * one short RCU read-side section that neither blocks nor waits.  Returns
 * LB_OK, or LB_ERROR with *err when out of memory (nothing held).  Any
 * thread; the caller owns the array until lb_targets_put.
 */
int lb_targets_get(lb_balancer *b, struct lb_target **out, size_t *n,
                   const char **err);

/* Release every target's record and free the array (NULL, 0: a no-op).
 * Any thread. */
void lb_targets_put(lb_balancer *b, struct lb_target *t, size_t n);

/*
 * Record one check result on a held target with Pingora's thresholds; a
 * flip is pushed onto the balancer's event queue.  Returns 1 when the
 * state flipped, 0 when not, or LB_STALE when the backend has left the
 * published set since lb_targets_get (nothing is recorded then).
 * Lock-free (one read-side section, a compare-and-swap, a lock-free push);
 * any thread.
 */
int lb_target_observe(lb_balancer *b, const struct lb_target *t, int ok,
                      uint32_t threshold, int err_kind, int err_detail);

/* The time of one check of a held target (its duration in ns, UINT64_MAX
 * when unknown) for metrics: the record's histogram and last check.
 * Relaxed atomics, any thread. */
void lb_target_check_time(const struct lb_target *t, uint64_t ns);

/*
 * Whether this process runs b's periodic checks: always for a private
 * balancer; for a shared one, only while this process holds the prober's
 * turn (lb.h, lb_balancer_shared_step).  A round asked for explicitly
 * runs anyway.  One load; any thread.
 */
int lb_balancer_may_probe(lb_balancer *b);

/*
 * The balancer's pointer to its checker job (NULL: none), and the function
 * that lb_balancer_free calls, before the balancer's records go, to stop
 * and release the job (periodic rounds, a round in flight, kept
 * connections).  The core knows the job only as this opaque pointer and
 * hook, so it never calls into src/checker/.  The getter is an acquire
 * load (a lock-free reader sees a fully built job), the setter a release
 * store; the checker serialises setters with its own lock.  Any thread.
 */
struct lb_checker_job;
struct lb_checker_job *lb_balancer_job(lb_balancer *b);
void lb_balancer_job_set(lb_balancer *b, struct lb_checker_job *job,
                         void (*release)(lb_balancer *b));

/*
 * The same for the balancer's discovery source (src/discovery/): its
 * opaque pointer and the hook lb_balancer_free calls first (before the
 * checker's job), so no source publishes into a balancer being freed.
 * Acquire load, release store; the discovery serialises setters with the
 * checker's lock.  Any thread.
 */
struct lb_disc;
struct lb_disc *lb_balancer_disc(lb_balancer *b);
void lb_balancer_disc_set(lb_balancer *b, struct lb_disc *d,
                          void (*release)(lb_balancer *b));

#endif /* LB_TARGETS_H */
