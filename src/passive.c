/*
 * passive.c - passive health (ejections fed by reports), panic mode and
 * slow start: what the requests themselves teach the balancer.
 *
 * Ejection (Envoy's consecutive-5xx outlier detection): a record's run of
 * failed reports reaching consecutive_failures ejects it for
 * ejection_time x (times ejected), capped at max_ejection_time.  The
 * ejected bit lives in the record's health word, so select keeps its one
 * relaxed load (record.h).  The cap (max_ejection_percent of the set,
 * rounded down) is decided under b->eject_lock: the ejected records of the
 * published snapshot are counted and one more is ejected only below the
 * cap.  Every ejection happens under that lock and in the published set,
 * and a return only lowers the count, so the published set never has more
 * than the cap ejected; only an update that shrinks the set can leave more
 * (the records kept stay ejected until they return), and then nothing
 * more is ejected until enough have returned.  The lock is taken at the
 * threshold only (every consecutive_failures-th failure in a row), never
 * by select.  A count kept in a lock-free counter would have to follow
 * records in and out of the set; the count over the snapshot cannot drift.
 *
 * Return: lb_balancer_tick sweeps the published set and ends every
 * ejection whose time is up (one compare-and-swap each), and a passing
 * active check ends one early (lb_record_observe).  The sweep is driven
 * by whoever delivers events (lb's Lua drain: a timer of every nginx
 * worker, plain Lua's poll()), because the return's flip is delivered by
 * that same drain to on_health_change; select never reads a clock for it.
 *
 * Panic (Envoy's panic threshold): a per-balancer flag, recounted over the
 * published set on every change of what selection sees; select loads it
 * (relaxed) only when its first candidate is not ready.
 *
 * Slow start (Envoy's): each record keeps when it became ready; the
 * view's ramping flag tells selectors whether any window may be open, so
 * a pick reads a clock only while one is.
 */
#include <math.h>

#include "core.h"

#define RELAXED memory_order_relaxed
#define SEQ_CST memory_order_seq_cst

static void eject_locked(lb_balancer *b, struct lb_snapshot *s, size_t i,
                         uint32_t run);
static void panic_recount(lb_balancer *b);
static void push_flip(lb_balancer *b, struct lb_snapshot *s,
                      struct lb_record *r, bool healthy, uint32_t run);

void lb_passive_init(lb_balancer *b)
{
    pthread_mutex_init(&b->eject_lock, NULL);
    pthread_mutex_init(&b->panic_lock, NULL);
    atomic_init(&b->panic_seq, 0);
    b->panic_counted = 0;
    atomic_init(&b->panic, 0);
}

void lb_passive_destroy(lb_balancer *b)
{
    pthread_mutex_destroy(&b->panic_lock);
    pthread_mutex_destroy(&b->eject_lock);
}

static void push_flip(lb_balancer *b, struct lb_snapshot *s,
                      struct lb_record *r, bool healthy, uint32_t run)
{
    lb_events_flip(&b->events, r,
                   &(lb_health_event){
                       .id = lb_store_id(s->store, r),
                       .healthy = healthy,
                       .err_kind = healthy ? 0 : LB_CHECK_ERR_EJECTED,
                       .err_detail = healthy ? 0 : (int32_t)run,
                   });
}

/* ejection_time x (times ejected, this one included), capped */
static uint64_t ejection_ns(const lb_config *cfg, uint32_t ejections)
{
    double t = cfg->ejection_time * (double)(ejections + 1);

    if (t > cfg->max_ejection_time)
        t = cfg->max_ejection_time;
    return (uint64_t)(t * 1e9);
}

/* Caller holds b->eject_lock; s is the published snapshot. */
static void eject_locked(lb_balancer *b, struct lb_snapshot *s, size_t i,
                         uint32_t run)
{
    struct lb_record *r = s->rec[i];
    size_t cap = s->n * b->cfg.max_ejection_percent / 100, ejected = 0;
    bool flipped;

    for (size_t k = 0; k < s->n && ejected < cap; k++)
        if (atomic_load_explicit(&s->rec[k]->health, RELAXED) & LB_H_EJECTED)
            ejected++;
    if (ejected >= cap)
        return;
    if (!lb_record_eject(r,
                         lb_clock_ns() +
                             ejection_ns(&b->cfg, atomic_load_explicit(
                                                      &r->ejections, RELAXED)),
                         run, &flipped))
        return;
    if (flipped)
        push_flip(b, s, r, false, run);
    lb_passive_changed(b, false);
}

void lb_passive_report(lb_balancer *b, struct lb_snapshot *s, size_t i, bool ok,
                       uint64_t latency_ns)
{
    uint32_t cf = b->cfg.consecutive_failures;
    uint32_t run = lb_record_report(s->rec[i], ok, latency_ns);

    if (latency_ns != UINT64_MAX) /* peak EWMA (peak_ewma's cost) */
        lb_record_latency_peak(
            s->rec[i], latency_ns, lb_record_now_ms(),
            (b->cfg.ewma_decay > 0 ? b->cfg.ewma_decay : 10.0) * 1e3);
    if (ok || cf == 0 || run < cf || run % cf != 0)
        return;
    if (atomic_load_explicit(&s->rec[i]->health, RELAXED) & LB_H_EJECTED)
        return;
    /* With `shared`, every process ejects from the same records: the cap
     * is decided under the region's lock (tried for 10 ms on this path; a
     * busy region leaves the decision to the next failure of the run). */
    if (b->shared && lb_shared_lock(b->shared, 0.01) != 0)
        return;
    pthread_mutex_lock(&b->eject_lock);
    /* the cap is the published set's: a report that raced with an update
     * leaves the decision to the next failure, in the new set */
    if (lb_rcu_deref(&b->snap) == s)
        eject_locked(b, s, i, run);
    pthread_mutex_unlock(&b->eject_lock);
    if (b->shared)
        lb_shared_unlock(b->shared);
}

/* Ready records over enabled ones, against the threshold.  The recount
 * that loads panic_seq after a change's increment (an acquire of the
 * increments' release sequence) sees that change's record. */
static void panic_recount(lb_balancer *b)
{
    uint64_t seq = atomic_fetch_add_explicit(&b->panic_seq, 1, SEQ_CST) + 1;

    pthread_mutex_lock(&b->panic_lock);
    if (b->panic_counted < seq) {
        uint64_t upto = atomic_load_explicit(&b->panic_seq, SEQ_CST);
        size_t enabled = 0, ready = 0;

        lb_rcu_read_lock();
        {
            struct lb_snapshot *s = lb_rcu_deref(&b->snap);
            for (size_t k = 0; k < s->n; k++) {
                enabled += lb_record_enabled(s->rec[k]);
                ready += lb_record_ready(s->rec[k]);
            }
        }
        lb_rcu_read_unlock();
        atomic_store_explicit(&b->panic,
                              enabled > 0 &&
                                  (double)ready <
                                      b->cfg.panic_threshold * (double)enabled,
                              RELAXED);
        b->panic_counted = upto;
    }
    pthread_mutex_unlock(&b->panic_lock);
}

void lb_passive_changed(lb_balancer *b, bool up)
{
    if (up && b->cfg.slow_start_window > 0) {
        lb_rcu_read_lock();
        atomic_store_explicit(&lb_rcu_deref(&b->snap)->view.ramping, 1,
                              SEQ_CST);
        lb_rcu_read_unlock();
    }
    if (b->cfg.panic_threshold > 0)
        panic_recount(b);
}

/* Lower the ramping flag, then look: a record made ready before the flag
 * was raised again had stored its time first (seq_cst both sides), so
 * either this sweep sees that time or the flag is raised after it. */
static void ramp_sweep(struct lb_snapshot *s)
{
    uint64_t now;

    if (!s->view.slow_window_ns ||
        !atomic_load_explicit(&s->view.ramping, RELAXED))
        return;
    atomic_store_explicit(&s->view.ramping, 0, SEQ_CST);
    now = lb_clock_coarse_ns();
    for (size_t k = 0; k < s->n; k++) {
        uint64_t since =
            atomic_load_explicit(&s->rec[k]->ready_since_ns, SEQ_CST);
        if (now < since + s->view.slow_window_ns) {
            atomic_store_explicit(&s->view.ramping, 1, SEQ_CST);
            return;
        }
    }
}

int lb_balancer_tick(lb_balancer *b)
{
    int returned = 0, up = 0;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        uint64_t now = lb_clock_ns();

        for (size_t k = 0; k < s->n; k++) {
            struct lb_record *r = s->rec[k];
            bool flipped;

            if (!(atomic_load_explicit(&r->health, RELAXED) & LB_H_EJECTED) ||
                !lb_record_unject(r, now, &flipped))
                continue;
            returned++;
            if (flipped) {
                push_flip(b, s, r, true, 0);
                up = 1;
            }
        }
        if (up && s->view.slow_window_ns)
            atomic_store_explicit(&s->view.ramping, 1, SEQ_CST);
        ramp_sweep(s);
    }
    lb_rcu_read_unlock();
    if (b->cfg.panic_threshold > 0)
        panic_recount(b);
    return returned;
}

int lb_balancer_panic(lb_balancer *b)
{
    return (int)atomic_load_explicit(&b->panic, RELAXED);
}

double lb_view_slow_start_factor(const struct lb_record_view *v, size_t i,
                                 uint64_t now_ns)
{
    uint64_t since =
        atomic_load_explicit(&v->records[i]->ready_since_ns, RELAXED);
    double f;

    if (now_ns >= since + v->slow_window_ns)
        return 1.0;
    f = now_ns > since ? (double)(now_ns - since) / (double)v->slow_window_ns
                       : 0.0;
    if (v->slow_exponent != 1.0)
        f = pow(f, v->slow_exponent);
    return f < v->slow_min_weight ? v->slow_min_weight : f;
}
