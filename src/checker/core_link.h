/*
 * core_link.h - everything the checker needs from the core, and nothing
 * more: a copy of the published set's check targets with a held handle on
 * each backend's record, the release of those handles, one observation on
 * a held handle, the balancer's event queue and the balancer's pointer to
 * its checker job.
 *
 * src/checker/core_link.c is the only file of src/checker/ that includes
 * the core's private header; the rest of the checker sees records only as
 * opaque handles.
 */
#ifndef LB_CHECKER_CORE_LINK_H
#define LB_CHECKER_CORE_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb.h"

struct lb_checker_job;
struct lb_health; /* a backend's record, opaque outside core_link.c */
struct lb_events; /* a health-event queue, opaque outside core_link.c */

/* One backend to check: a copy of its address and a held record handle. */
struct lb_check_target {
    lb_backend be;
    uint64_t id;           /* the record's id: stable while it is held */
    struct lb_health *rec; /* held until lb_link_targets_release */
};

/*
 * Copy the published snapshot's backends of `b` into a new array (*out,
 * *n entries; at least one element is allocated, so *out is never NULL
 * on success) and take a handle on each backend's record, inside one
 * short RCU read-side section that neither blocks nor allocates under it
 * beyond the array.  Returns LB_OK, or LB_ERROR (out of memory, nothing
 * held).  Any thread that is not inside a read-side section.
 */
int lb_link_targets(lb_balancer *b, struct lb_check_target **out, size_t *n);

/* Drop the handles taken by lb_link_targets and free the array.  Any
 * thread; no RCU section needed (a record outlives its last handle). */
void lb_link_targets_release(struct lb_check_target *t, size_t n);

/*
 * Record one check result on a held handle with Pingora's thresholds
 * (`threshold` is consecutive_success when ok, else consecutive_failure)
 * and, when the state flipped, push the flip to the balancer's event
 * queue `q`.  Returns true when it flipped.  Lock-free (one
 * compare-and-swap on the record, one on the queue); any thread.
 */
bool lb_link_observe(struct lb_events *q, const struct lb_check_target *t,
                     bool ok, uint32_t threshold, int err_kind, int err_detail);

/* The balancer's pointer to its checker job (NULL: none).  The getter is
 * an acquire load, so lock-free readers (lb_balancer_events) see a fully
 * built job; the setter a release store.  Writers hold the checker's
 * lock. */
struct lb_checker_job *lb_link_job(lb_balancer *b);
void lb_link_job_set(lb_balancer *b, struct lb_checker_job *job);

/* A balancer's event queue: new (NULL when out of memory), drain (any
 * consumer thread, serialised by the queue's own lock), free (no other
 * thread uses it), and its consumer lock held across fork() by the
 * checker's fork hooks. */
struct lb_events *lb_link_events_new(void);
int lb_link_events_drain(struct lb_events *q, lb_health_event *out, int max);
void lb_link_events_free(struct lb_events *q);
void lb_link_events_lock(struct lb_events *q);
void lb_link_events_unlock(struct lb_events *q);

#endif /* LB_CHECKER_CORE_LINK_H */
