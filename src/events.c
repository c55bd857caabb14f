/*
 * events.c - the balancer's bounded health-change queue (see core.h).
 *
 * Vyukov's bounded MPMC queue, used with one consumer at a time: cell i
 * starts with seq = i; a producer that reads seq == pos claims pos with a
 * compare-and-swap of tail, fills the cell and publishes seq = pos + 1; the
 * consumer takes a cell whose seq == pos + 1 and hands it back to the
 * producers of the next lap with seq = pos + LB_EVENTS_MAX.  A producer
 * that has claimed a cell but not yet published it stops the drain there:
 * that event and the ones after it come with the next drain.
 *
 * The marks (LB_R_RESYNC) keep the newest state right when the ring is
 * full: a flip of a marked record queues nothing, since the drain reads the
 * record itself.  The drain clears a mark before it reads the state
 * (sequentially consistent on both sides), so a flip after the read either
 * finds the mark cleared and queues its event, or is seen by the read.
 */
#include <stdlib.h>

#include "core.h"

#define CAP LB_EVENTS_MAX
#define SEQ_CST memory_order_seq_cst
#define RELAXED memory_order_relaxed

void lb_events_init(struct lb_events *q)
{
    atomic_init(&q->ring, NULL);
    atomic_init(&q->tail, 0);
    q->head = 0;
    atomic_init(&q->resync, 0);
    atomic_init(&q->dropped, 0);
    pthread_mutex_init(&q->lock, NULL);
}

/* The ring, made by the first producer (a racing one frees its copy). */
static struct lb_event_cell *ring_get(struct lb_events *q)
{
    struct lb_event_cell *r = atomic_load_explicit(&q->ring, SEQ_CST);
    struct lb_event_cell *expected = NULL;

    if (r)
        return r;
    r = malloc(CAP * sizeof(*r));
    if (!r)
        return NULL;
    for (uint64_t i = 0; i < CAP; i++)
        atomic_init(&r[i].seq, i);
    if (!atomic_compare_exchange_strong_explicit(&q->ring, &expected, r,
                                                 SEQ_CST, SEQ_CST)) {
        free(r);
        r = expected;
    }
    return r;
}

static bool ring_push(struct lb_events *q, const lb_health_event *ev)
{
    struct lb_event_cell *ring = ring_get(q), *c;
    uint64_t pos;

    if (!ring)
        return false;
    pos = atomic_load_explicit(&q->tail, RELAXED);
    for (;;) {
        int64_t dif;

        c = &ring[pos % CAP];
        dif = (int64_t)(atomic_load_explicit(&c->seq, memory_order_acquire) -
                        pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&q->tail, &pos, pos + 1,
                                                      RELAXED, RELAXED))
                break;
        } else if (dif < 0) {
            return false; /* full: the consumer has not freed this cell */
        } else {
            pos = atomic_load_explicit(&q->tail, RELAXED);
        }
    }
    c->ev = *ev;
    atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
    return true;
}

void lb_events_flip(struct lb_events *q, struct lb_record *r,
                    const lb_health_event *ev)
{
    /* every flip passes here: the record's count for metrics */
    atomic_fetch_add_explicit(&r->flips, 1, RELAXED);
    if (!(atomic_load_explicit(&r->event_flags, SEQ_CST) & LB_R_RESYNC) &&
        ring_push(q, ev))
        return;
    atomic_fetch_add_explicit(&q->dropped, 1, RELAXED);
    if (!(atomic_fetch_or_explicit(&r->event_flags, LB_R_RESYNC, SEQ_CST) &
          LB_R_RESYNC))
        atomic_fetch_add_explicit(&q->resync, 1, SEQ_CST);
}

/* Caller holds q->lock. */
static int ring_take_locked(struct lb_events *q, lb_health_event *out, int max)
{
    struct lb_event_cell *ring = atomic_load_explicit(&q->ring, SEQ_CST);
    int k = 0;

    if (!ring)
        return 0;
    while (k < max) {
        struct lb_event_cell *c = &ring[q->head % CAP];

        if (atomic_load_explicit(&c->seq, memory_order_acquire) != q->head + 1)
            break;
        out[k++] = c->ev;
        atomic_store_explicit(&c->seq, q->head + CAP, memory_order_release);
        q->head++;
    }
    return k;
}

/* Caller holds q->lock: the current state of each marked record of s. */
static int resync_locked(struct lb_events *q, const struct lb_snapshot *s,
                         lb_health_event *out, int max)
{
    int k = 0;

    if (atomic_exchange_explicit(&q->resync, 0, SEQ_CST) == 0)
        return 0;
    for (size_t i = 0; i < s->n; i++) {
        struct lb_record *r = s->rec[i];
        lb_health_info h;

        if (!(atomic_load_explicit(&r->event_flags, RELAXED) & LB_R_RESYNC))
            continue;
        if (k == max) {
            /* no room: the marks left are for the next drain */
            atomic_fetch_add_explicit(&q->resync, 1, SEQ_CST);
            break;
        }
        atomic_fetch_and_explicit(&r->event_flags, ~LB_R_RESYNC, SEQ_CST);
        lb_record_health_get(r, &h);
        /* health as selection sees it: an ejection is a flip too */
        h.healthy = h.healthy && !h.ejected;
        out[k++] = (lb_health_event){
            .id = lb_store_id(s->store, r),
            .healthy = h.healthy,
            .err_kind = h.healthy ? 0 : h.err_kind,
            .err_detail = h.healthy ? 0 : h.err_detail,
        };
    }
    return k;
}

int lb_events_drain(struct lb_events *q, const struct lb_snapshot *s,
                    lb_health_event *out, int max)
{
    int k;

    if (max <= 0)
        return 0;
    pthread_mutex_lock(&q->lock);
    k = ring_take_locked(q, out, max);
    if (k < max)
        k += resync_locked(q, s, out + k, max - k);
    pthread_mutex_unlock(&q->lock);
    return k;
}

void lb_events_destroy(struct lb_events *q)
{
    free(atomic_load_explicit(&q->ring, RELAXED));
    pthread_mutex_destroy(&q->lock);
}
