/*
 * balancer.c - the balancer's life (new, free, fork), its accessors, and
 * the outcomes observed through the core (observe, report), which push
 * their flips onto the balancer's own event queue.
 *
 * Writers (update.c, free) hold b->write_lock and build aside; readers
 * (walk.c, the accessors here) run inside one RCU read-side section each,
 * take no lock and allocate nothing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "iter.h"

/* Every live balancer, so the fork handler can take their locks. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static lb_balancer *all;

lb_balancer *lb_balancer_new(const lb_config *cfg, const char **err)
{
    lb_balancer *b;
    const struct lb_selection_row *row = lb_selection_at(cfg->selection);
    const struct lb_selector_ops *ops = row ? row->ops : NULL;

    if (!ops) {
        *err = "unknown selection algorithm";
        return NULL;
    }
    if (cfg->point_multiple > LB_MAX_POINT_MULTIPLE) {
        *err = "point_multiple out of range (1-1000)";
        return NULL;
    }
    lb_rcu_init();
    b = calloc(1, sizeof(*b));
    if (!b) {
        *err = "out of memory";
        return NULL;
    }
    b->cfg = *cfg;
    if (b->cfg.point_multiple == 0)
        b->cfg.point_multiple = 160;
    b->ops = ops;
    b->store = lb_store_heap_new();
    if (!b->store) {
        free(b);
        *err = "out of memory";
        return NULL;
    }
    pthread_mutex_init(&b->write_lock, NULL);
    lb_events_init(&b->events);
    b->snap = lb_snapshot_new(ops, &b->cfg, NULL, 0, NULL, b->store, 1, err);
    if (!b->snap) {
        lb_events_destroy(&b->events);
        pthread_mutex_destroy(&b->write_lock);
        b->store->ops->close(b->store);
        free(b);
        return NULL;
    }
    lb_tsan_release(b->snap);
    pthread_mutex_lock(&all_lock);
    b->next = all;
    if (all)
        all->prev = b;
    all = b;
    pthread_mutex_unlock(&all_lock);
    return b;
}

void lb_balancer_free(lb_balancer *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&all_lock);
    if (b->prev)
        b->prev->next = b->next;
    else
        all = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&all_lock);
    /* the discovery source first (it publishes into b), then the
     * checker's job: its rounds hold records of b */
    if (b->disc_release)
        b->disc_release(b);
    if (b->job_release)
        b->job_release(b);
    pthread_mutex_lock(&b->write_lock);
    lb_snapshot_retire(b->snap);
    b->snap = NULL;
    pthread_mutex_unlock(&b->write_lock);
    /* The store outlives the retired snapshot: it goes with the last
     * record the snapshot's RCU callback releases. */
    b->store->ops->close(b->store);
    lb_events_destroy(&b->events);
    pthread_mutex_destroy(&b->write_lock);
    free(b);
}

void lb_balancers_fork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (lb_balancer *b = all; b; b = b->next) {
        pthread_mutex_lock(&b->write_lock);
        pthread_mutex_lock(&b->events.lock);
    }
}

static void balancers_unlock(void)
{
    for (lb_balancer *b = all; b; b = b->next) {
        pthread_mutex_unlock(&b->events.lock);
        pthread_mutex_unlock(&b->write_lock);
    }
    pthread_mutex_unlock(&all_lock);
}

void lb_balancers_fork_parent(void) { balancers_unlock(); }
void lb_balancers_fork_child(void) { balancers_unlock(); }

size_t lb_balancer_count(lb_balancer *b)
{
    size_t n;

    lb_rcu_read_lock();
    n = lb_rcu_deref(&b->snap)->n;
    lb_rcu_read_unlock();
    return n;
}

uint64_t lb_balancer_generation(lb_balancer *b)
{
    uint64_t g;

    lb_rcu_read_lock();
    g = lb_rcu_deref(&b->snap)->gen;
    lb_rcu_read_unlock();
    return g;
}

int lb_balancer_backend(lb_balancer *b, size_t i, lb_backend *out)
{
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n) {
            *out = s->backends[i];
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_health(lb_balancer *b, size_t i, lb_health_info *out)
{
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n) {
            lb_record_health_get(s->rec[i], out);
            out->id = lb_store_id(s->store, s->rec[i]);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_record(lb_balancer *b, size_t i, lb_record_info *out)
{
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n) {
            lb_record_info_get(s->rec[i], out);
            out->id = lb_store_id(s->store, s->rec[i]);
            out->in_flight = lb_store_in_flight(s->store, s->rec[i]);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_ready(lb_balancer *b, uint64_t gen, size_t i)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n)
            rc = lb_record_ready(s->rec[i]);
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_set_enable(lb_balancer *b, uint64_t gen, size_t i, int enable)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_record_set_enable(s->rec[i], enable != 0);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

/* The one place an active observation becomes a flip on the queue: the
 * checker (targets.c) and lb_balancer_observe both come here.  Inside the
 * caller's read-side section or with r held.  Returns 1 when it flipped. */
int lb_balancer_observe_record(lb_balancer *b, struct lb_store *st,
                               struct lb_record *r, int ok, uint32_t threshold,
                               int err_kind, int err_detail)
{
    if (ok)
        err_kind = err_detail = 0;
    if (!lb_record_observe(r, ok != 0, threshold, err_kind, err_detail))
        return 0;
    lb_events_flip(&b->events, r,
                   &(lb_health_event){
                       .id = lb_store_id(st, r),
                       .healthy = ok != 0,
                       .err_kind = err_kind,
                       .err_detail = err_detail,
                   });
    return 1;
}

int lb_balancer_observe(lb_balancer *b, uint64_t gen, size_t i, int ok,
                        uint32_t threshold, int err_kind, int err_detail)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n)
            rc = lb_balancer_observe_record(b, s->store, s->rec[i], ok,
                                            threshold, err_kind, err_detail);
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_report(lb_balancer *b, uint64_t gen, size_t i, int result,
                       double latency, const char **err)
{
    uint64_t ns = UINT64_MAX;
    int rc = LB_STALE;

    if (result != 0 && result != 1) {
        *err = "report result must be 0 (failure) or 1 (success)";
        return LB_ERROR;
    }
    if (latency >= 0) {
        if (!isfinite(latency) || latency > 1e6) {
            *err = "report latency out of range (0-1e6 seconds)";
            return LB_ERROR;
        }
        ns = (uint64_t)(latency * 1e9);
    } else if (isnan(latency)) {
        *err = "report latency is not a number";
        return LB_ERROR;
    }
    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_record_report(s->rec[i], result == 1, ns);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_in_flight_add(lb_balancer *b, uint64_t gen, size_t i, int delta)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_store_in_flight_add(s->store, s->rec[i], delta);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_events(lb_balancer *b, lb_health_event *out, int max)
{
    int k;

    lb_rcu_read_lock();
    k = lb_events_drain(&b->events, lb_rcu_deref(&b->snap), out, max);
    lb_rcu_read_unlock();
    return k;
}

uint64_t lb_balancer_events_dropped(lb_balancer *b)
{
    return atomic_load_explicit(&b->events.dropped, memory_order_relaxed);
}
