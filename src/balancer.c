/*
 * balancer.c - the balancer's life (new, free, fork), its accessors, and
 * the outcomes observed through the core (observe, report), which push
 * their flips onto the balancer's own event queue (a report's ejection is
 * passive.c's).
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

static bool passive_config_ok(const lb_config *cfg, const char **err);

/* Every live balancer, so the fork handler can take their locks. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static lb_balancer *all;

/* The passive options' ranges (lb.h); NaN fails every comparison. */
static bool passive_config_ok(const lb_config *cfg, const char **err)
{
    if (cfg->consecutive_failures > LB_MAX_THRESHOLD) {
        *err = "consecutive_failures out of range (0-2^29)";
        return false;
    }
    if (cfg->consecutive_failures &&
        !(cfg->ejection_time > 0 &&
          cfg->ejection_time <= LB_MAX_EJECTION_TIME)) {
        *err = "ejection_time out of range (above 0, at most 86400 s)";
        return false;
    }
    if (cfg->consecutive_failures &&
        !(cfg->max_ejection_time >= cfg->ejection_time &&
          cfg->max_ejection_time <= LB_MAX_EJECTION_TIME)) {
        *err = "max_ejection_time out of range (ejection_time-86400 s)";
        return false;
    }
    if (cfg->max_ejection_percent > 100) {
        *err = "max_ejection_percent out of range (0-100)";
        return false;
    }
    if (!(cfg->panic_threshold >= 0 && cfg->panic_threshold <= 1)) {
        *err = "panic_threshold out of range (0-1)";
        return false;
    }
    if (!(cfg->slow_start_window >= 0 &&
          cfg->slow_start_window <= LB_MAX_SLOW_START_WINDOW)) {
        *err = "slow_start window out of range (0-3600 s)";
        return false;
    }
    if (cfg->slow_start_window > 0 && !(cfg->slow_start_aggression > 0 &&
                                        cfg->slow_start_aggression <= 100)) {
        *err = "slow_start aggression out of range (above 0, at most 100)";
        return false;
    }
    if (cfg->slow_start_window > 0 &&
        !(cfg->slow_start_min_weight > 0 && cfg->slow_start_min_weight <= 1)) {
        *err = "slow_start min_weight out of range (above 0, at most 1)";
        return false;
    }
    return true;
}

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
    if (!passive_config_ok(cfg, err) || lb_selection_check(cfg, err) != LB_OK)
        return NULL;
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
    lb_passive_init(b);
    b->snap = lb_snapshot_new(ops, &b->cfg, NULL, 0, NULL, b->store, &b->panic,
                              1, err);
    if (!b->snap) {
        lb_passive_destroy(b);
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
    if (b->shared)
        lb_shared_detach(b->shared);
    /* The store outlives the retired snapshot: it goes with the last
     * record the snapshot's RCU callback releases. */
    b->store->ops->close(b->store);
    lb_passive_destroy(b);
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
        pthread_mutex_lock(&b->eject_lock);
        pthread_mutex_lock(&b->panic_lock);
    }
}

static void balancers_unlock(void)
{
    for (lb_balancer *b = all; b; b = b->next) {
        pthread_mutex_unlock(&b->panic_lock);
        pthread_mutex_unlock(&b->eject_lock);
        pthread_mutex_unlock(&b->events.lock);
        pthread_mutex_unlock(&b->write_lock);
    }
    pthread_mutex_unlock(&all_lock);
}

void lb_balancers_fork_parent(void) { balancers_unlock(); }
void lb_balancers_fork_child(void)
{
    /* a child is a new process on every shared region: it registers on
     * its own first step */
    for (lb_balancer *b = all; b; b = b->next)
        if (b->shared)
            lb_shared_fork_child(b->shared);
    balancers_unlock();
}

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

void lb_balancer_tally(lb_balancer *b, lb_tally *out)
{
    memset(out, 0, sizeof(*out));
    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        out->backends = (uint32_t)s->n;
        for (size_t k = 0; k < s->n; k++) {
            const struct lb_record *r = s->rec[k];
            uint64_t w = atomic_load_explicit(&r->health, memory_order_relaxed);
            uint64_t at =
                atomic_load_explicit(&r->last_check_ms, memory_order_relaxed);

            if ((w & LB_H_READY_MASK) == (LB_H_HEALTHY | LB_H_ENABLED))
                out->ready++;
            else if (!(w & LB_H_ENABLED))
                out->disabled++;
            else if (!(w & LB_H_HEALTHY))
                out->unhealthy++;
            else
                out->ejected++;
            if (at) {
                out->checked++;
                if (at > out->last_check_ms)
                    out->last_check_ms = at;
            }
        }
    }
    lb_rcu_read_unlock();
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
            out->selections = lb_store_selections(s->store, s->rec[i]);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_stats(lb_balancer *b, size_t i, lb_record_stats *out)
{
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n) {
            lb_record_stats_get(s->rec[i], out);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

/* The record of backend i of the published snapshot when its generation
 * is `gen`, else NULL.  Inside the caller's read-side section. */
static struct lb_record *record_at(lb_balancer *b, uint64_t gen, size_t i)
{
    struct lb_snapshot *s = lb_rcu_deref(&b->snap);

    return s->gen == gen && i < s->n ? s->rec[i] : NULL;
}

int lb_balancer_check_time(lb_balancer *b, uint64_t gen, size_t i,
                           double seconds)
{
    int rc = LB_STALE;
    uint64_t ns = UINT64_MAX;

    if (seconds >= 0 && seconds < 1e6)
        ns = (uint64_t)(seconds * 1e9);
    lb_rcu_read_lock();
    {
        struct lb_record *r = record_at(b, gen, i);
        if (r) {
            lb_record_check_time(r, ns);
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
    bool up = false;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            up = lb_record_set_enable(s->rec[i], enable != 0);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    if (rc == LB_OK)
        lb_passive_changed(b, up);
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
    if (!lb_record_observe(r, ok != 0, threshold, err_kind, err_detail, NULL))
        return 0;
    lb_passive_changed(b, ok != 0);
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

/* A report's latency in ns (UINT64_MAX: unknown), or LB_ERROR. */
static int report_args(int result, double latency, uint64_t *ns,
                       const char **err)
{
    *ns = UINT64_MAX;
    if (result != 0 && result != 1) {
        *err = "report result must be 0 (failure) or 1 (success)";
        return LB_ERROR;
    }
    if (latency >= 0) {
        if (!isfinite(latency) || latency > 1e6) {
            *err = "report latency out of range (0-1e6 seconds)";
            return LB_ERROR;
        }
        *ns = (uint64_t)(latency * 1e9);
    } else if (isnan(latency)) {
        *err = "report latency is not a number";
        return LB_ERROR;
    }
    return LB_OK;
}

int lb_balancer_report(lb_balancer *b, uint64_t gen, size_t i, int result,
                       double latency, const char **err)
{
    uint64_t ns;
    int rc = LB_STALE;

    if (report_args(result, latency, &ns, err) != LB_OK)
        return LB_ERROR;
    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_passive_report(b, s, i, result == 1, ns);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_release(lb_balancer *b, uint64_t gen, size_t i, int result,
                        double latency, const char **err)
{
    uint64_t ns = UINT64_MAX;
    int rc = LB_STALE;

    if (result != -1 && report_args(result, latency, &ns, err) != LB_OK)
        return LB_ERROR;
    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_store_in_flight_add(s->store, s->rec[i], -1);
            if (result != -1)
                lb_passive_report(b, s, i, result == 1, ns);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

uint32_t lb_balancer_in_flight_own(lb_balancer *b, uint64_t gen, size_t i)
{
    uint32_t n = 0;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n)
            n = lb_store_in_flight_own(s->store, s->rec[i]);
    }
    lb_rcu_read_unlock();
    return n;
}

int lb_balancer_in_flight_add(lb_balancer *b, uint64_t gen, size_t i, int delta)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_store_in_flight_add(s->store, s->rec[i], delta);
            if (delta > 0) /* an acquire is a selection */
                atomic_fetch_add_explicit(&s->rec[i]->selections,
                                          (uint64_t)delta,
                                          memory_order_relaxed);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_selected(lb_balancer *b, uint64_t gen, size_t i)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_record *r = record_at(b, gen, i);
        if (r) {
            atomic_fetch_add_explicit(&r->selections, 1, memory_order_relaxed);
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
