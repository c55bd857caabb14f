/*
 * source.c - a balancer's discovery source: its life, its requests and
 * tickets, its status, the gate, and publishing its answers.
 *
 * Tickets: every refresh hands out the next ticket (`asked`); a request
 * that begins serves every ticket asked so far (`serving`), and its
 * result answers them (`answered`, `answer_rc`).  A good answer is
 * published by the thread with lb_balancer_update (the same path as any
 * discovery: records kept, nothing half applied) before its ticket counts
 * as answered, so a caller that waited sees the new set at once.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checker/checker.h"
#include "clock.h"
#include "discovery/discovery.h"
#include "targets.h"

struct lb_disc *lb_disc_all;

static int (*gate_fn)(lb_balancer *b);

static void release_hook(lb_balancer *b);

double lb_disc_wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Abandon the request in flight, if any; its tickets get LB_ERROR. */
static void abandon(struct lb_disc *d, const char *why)
{
    if (d->busy) {
        d->ops->abort(d, false);
        d->busy = false;
        d->io_due = 0;
        if (d->serving > d->answered) {
            d->answered = d->serving;
            d->answer_rc = LB_ERROR;
            snprintf(d->st.last_error, sizeof(d->st.last_error), "%s", why);
        }
    }
    free(d->pending);
    d->pending = NULL;
    d->has_pending = false;
    pthread_cond_broadcast(&lb_ck.cond);
}

/* Stop d and wait until the thread no longer publishes for it; drop its
 * user.  Called with lb_ck.lock held (dropped while waiting). */
static void stop_locked(struct lb_disc *d)
{
    d->started = false;
    d->due = 0;
    abandon(d, "stopped");
    while (d->publishing)
        pthread_cond_wait(&lb_ck.cond, &lb_ck.lock);
    if (d->counted) {
        d->counted = false;
        lb_ck_unuse();
    }
}

static void unlink_locked(struct lb_disc *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        lb_disc_all = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->prev = d->next = NULL;
}

static void destroy(struct lb_disc *d)
{
    if (!d)
        return;
    d->ops->free_cfg(d->cfg);
    free(d->pending);
    free(d);
}

int lb_disc_install(lb_balancer *b, const struct lb_disc_ops *ops, void *cfg,
                    const char **err)
{
    struct lb_disc *d = calloc(1, sizeof(*d)), *old;

    if (!d) {
        ops->free_cfg(cfg);
        *err = "out of memory";
        return LB_ERROR;
    }
    d->b = b;
    d->ops = ops;
    d->cfg = cfg;
    d->st.kind = ops->kind;
    pthread_mutex_lock(&lb_ck.lock);
    old = lb_balancer_disc(b);
    if (old) {
        stop_locked(old);
        unlink_locked(old);
    }
    d->next = lb_disc_all;
    if (lb_disc_all)
        lb_disc_all->prev = d;
    lb_disc_all = d;
    lb_balancer_disc_set(b, d, release_hook);
    pthread_mutex_unlock(&lb_ck.lock);
    destroy(old);
    return LB_OK;
}

/* lb_balancer_free's hook: stop, unlink and free b's source. */
static void release_hook(lb_balancer *b)
{
    struct lb_disc *d;

    pthread_mutex_lock(&lb_ck.lock);
    d = lb_balancer_disc(b);
    if (d) {
        stop_locked(d);
        unlink_locked(d);
        lb_balancer_disc_set(b, NULL, NULL);
    }
    pthread_mutex_unlock(&lb_ck.lock);
    destroy(d);
}

/* Count d as a user of the thread (started, or asked). */
static int count_locked(struct lb_disc *d, const char **err)
{
    if (d->counted)
        return LB_OK;
    if (lb_ck_use(err) != LB_OK)
        return LB_ERROR;
    d->counted = true;
    return LB_OK;
}

int lb_balancer_discovery_start(lb_balancer *b, const char **err)
{
    struct lb_disc *d;
    int rc = LB_OK;

    pthread_mutex_lock(&lb_ck.lock);
    d = lb_balancer_disc(b);
    if (!d)
        rc = LB_DECLINED;
    else if (!d->started && (rc = count_locked(d, err)) == LB_OK) {
        d->started = true;
        if (!d->busy && !d->due)
            d->due = lb_ck_now_ns();
        lb_ck_wake();
    }
    pthread_mutex_unlock(&lb_ck.lock);
    return rc;
}

void lb_balancer_discovery_stop(lb_balancer *b)
{
    struct lb_disc *d;

    pthread_mutex_lock(&lb_ck.lock);
    d = lb_balancer_disc(b);
    if (d)
        stop_locked(d);
    pthread_mutex_unlock(&lb_ck.lock);
}

int64_t lb_balancer_discovery_refresh(lb_balancer *b, const char **err)
{
    struct lb_disc *d;
    int64_t ticket;

    pthread_mutex_lock(&lb_ck.lock);
    d = lb_balancer_disc(b);
    if (!d) {
        pthread_mutex_unlock(&lb_ck.lock);
        return LB_DECLINED;
    }
    if (count_locked(d, err) != LB_OK) {
        pthread_mutex_unlock(&lb_ck.lock);
        return LB_ERROR;
    }
    ticket = ++d->asked;
    /* A request in flight began before this ticket: a DNS answer may
     * already be on its way with old data, so a new one follows it.  A
     * watch (etcd) in flight is always current: it serves the ticket with
     * its next event or, when none comes, at once (etcd.c). */
    if (!d->busy)
        d->due = lb_ck_now_ns();
    else if (d->ops->asked)
        d->ops->asked(d);
    lb_ck_wake();
    pthread_mutex_unlock(&lb_ck.lock);
    return ticket;
}

int lb_balancer_discovery_wait(lb_balancer *b, int64_t ticket, double timeout)
{
    struct lb_disc *d;
    struct timespec ts;
    int rc = LB_DECLINED;

    if (!(timeout >= 0))
        timeout = 0;
    if (timeout > LB_MAX_TIMEOUT)
        timeout = LB_MAX_TIMEOUT;
    ts = lb_deadline(timeout);
    pthread_mutex_lock(&lb_ck.lock);
    for (;;) {
        d = lb_balancer_disc(b);
        if (!d)
            break;
        if (d->answered >= ticket) {
            rc = d->answer_rc;
            /* asked once and answered: the thread need not stay for it */
            if (!d->started && !d->busy && !d->due && !d->has_pending &&
                !d->publishing && d->answered >= d->asked && d->counted) {
                d->counted = false;
                lb_ck_unuse();
            }
            break;
        }
        if (pthread_cond_timedwait(&lb_ck.cond, &lb_ck.lock, &ts) ==
            ETIMEDOUT) {
            d = lb_balancer_disc(b);
            if (d && d->answered >= ticket)
                rc = d->answer_rc;
            break;
        }
    }
    pthread_mutex_unlock(&lb_ck.lock);
    return rc;
}

int lb_balancer_discovery_status(lb_balancer *b, lb_discovery_status *out)
{
    struct lb_disc *d;
    int rc = LB_OK;

    pthread_mutex_lock(&lb_ck.lock);
    d = lb_balancer_disc(b);
    if (d) {
        *out = d->st;
        out->running = d->started;
    } else {
        memset(out, 0, sizeof(*out));
        rc = LB_DECLINED;
    }
    pthread_mutex_unlock(&lb_ck.lock);
    return rc;
}

void lb_discovery_gate_set(int (*gate)(lb_balancer *b))
{
    pthread_mutex_lock(&lb_ck.lock);
    gate_fn = gate;
    pthread_mutex_unlock(&lb_ck.lock);
}

/* ---- the kinds' side, on the checker thread ---- */

void lb_disc_count_query(struct lb_disc *d) { d->st.queries++; }

void lb_disc_answer(struct lb_disc *d, const lb_backend *set, size_t n,
                    bool has_rev, uint64_t rev)
{
    if (!d->b) {
        /* a resolution: the answer is the result, kept for the caller */
        lb_backend *copy = malloc((n ? n : 1) * sizeof(*copy));

        if (!copy) {
            lb_disc_fail(d, "out of memory", true);
            return;
        }
        if (n)
            memcpy(copy, set, n * sizeof(*copy));
        free(d->pending);
        d->pending = copy;
        d->npending = n;
        d->st.ok = 1;
        d->st.updates++;
        d->answered = d->serving;
        d->answer_rc = LB_OK;
        pthread_cond_broadcast(&lb_ck.cond);
        return;
    }
    lb_backend *copy = malloc((n ? n : 1) * sizeof(*copy));

    if (!copy) {
        lb_disc_fail(d, "out of memory", true);
        return;
    }
    if (n)
        memcpy(copy, set, n * sizeof(*copy));
    free(d->pending);
    d->pending = copy;
    d->npending = n;
    d->has_pending = true;
    d->pending_ticket = d->serving;
    d->pending_has_revision = has_rev;
    d->pending_revision = rev;
    d->pending_warned = d->warned;
    d->warned = false;
}

void lb_disc_fail(struct lb_disc *d, const char *msg, bool fatal)
{
    d->st.errors++;
    snprintf(d->st.last_error, sizeof(d->st.last_error), "%s", msg);
    if (!fatal) {
        d->warned = true;
        return;
    }
    if (d->b)
        lb_balancer_discovery_count(d->b, 0);
    d->st.ok = 0;
    if (d->serving > d->answered && !d->has_pending) {
        d->answered = d->serving;
        d->answer_rc = LB_ERROR;
        pthread_cond_broadcast(&lb_ck.cond);
    }
}

void lb_disc_end(struct lb_disc *d, bool ok, double next_s, double cap_s)
{
    uint64_t now = lb_ck_now_ns();
    double wait;

    d->busy = false;
    d->io_due = 0;
    if (ok) {
        d->failures = 0;
        wait = next_s;
    } else {
        d->failures++;
        wait = 0.25 * ldexp(1.0, d->failures < 20 ? (int)d->failures - 1 : 19);
        if (wait > cap_s)
            wait = cap_s;
    }
    if (d->asked > d->serving)
        wait = 0; /* asked again while this one ran */
    else if (!d->started) {
        d->due = 0; /* asked once: done */
        return;
    }
    d->due = now + (uint64_t)(wait * 1e9);
}

/* Begin d's request when due (and the gate allows it). */
static void maybe_begin(struct lb_disc *d, uint64_t now)
{
    if (d->busy || !d->due || d->due > now || d->publishing)
        return;
    /* Not this process: ask later.  A shared balancer's source runs in
     * its prober only (lb_balancer_may_probe, targets.h), unless a ticket
     * was asked here explicitly (update()), as an explicit check round
     * runs anyway; the gate, when set, has the last word. */
    if (d->b && ((gate_fn && !gate_fn(d->b)) ||
                 (d->asked <= d->answered && !lb_balancer_may_probe(d->b)))) {
        d->due = now + 1000000000u;
        return;
    }
    d->due = 0;
    d->busy = true;
    d->serving = d->asked;
    d->warned = false;
    d->ops->begin(d, now);
}

void lb_disc_publish(struct lb_disc *d)
{
    lb_backend *set = d->pending;
    size_t n = d->npending, count;
    int64_t ticket = d->pending_ticket;
    bool has_rev = d->pending_has_revision, warned = d->pending_warned;
    uint64_t rev = d->pending_revision;
    const char *err = NULL;
    int rc;

    d->pending = NULL;
    d->has_pending = false;
    d->publishing = true;
    pthread_mutex_unlock(&lb_ck.lock);
    rc = lb_balancer_update(d->b, set, n, NULL, &count, &err);
    pthread_mutex_lock(&lb_ck.lock);
    d->publishing = false;
    free(set);
    lb_balancer_discovery_count(d->b, rc >= 0);
    if (rc < 0) {
        d->st.ok = 0;
        d->st.errors++;
        snprintf(d->st.last_error, sizeof(d->st.last_error), "update: %s",
                 err ? err : "failed");
    } else {
        d->st.ok = 1;
        if (!warned)
            d->st.last_error[0] = '\0';
        d->st.updated_at = lb_disc_wall();
        d->st.updates++;
        if (has_rev) {
            d->st.has_revision = 1;
            d->st.revision = rev;
        }
    }
    if (ticket > d->answered) {
        d->answered = ticket;
        d->answer_rc = rc < 0 ? LB_ERROR : LB_OK;
    }
    pthread_cond_broadcast(&lb_ck.cond);
}

void lb_disc_run(uint64_t now)
{
    struct lb_disc *d;
    bool again = true;

    for (d = lb_disc_all; d; d = d->next) {
        maybe_begin(d, now);
        if (d->busy && d->io_due && d->io_due <= now) {
            d->io_due = 0;
            d->ops->timer(d, now);
        }
    }
    /* Publishing drops the lock: the list may change meanwhile, so each
     * publish starts the scan again. */
    while (again) {
        again = false;
        for (d = lb_disc_all; d; d = d->next) {
            if (d->has_pending && !d->publishing) {
                lb_disc_publish(d);
                again = true;
                break;
            }
        }
    }
}

int lb_disc_wait_ms(uint64_t now)
{
    uint64_t first = UINT64_MAX;

    for (struct lb_disc *d = lb_disc_all; d; d = d->next) {
        if (d->has_pending && !d->publishing)
            return 0;
        if (!d->busy && d->due && d->due < first)
            first = d->due;
        if (d->busy && d->io_due && d->io_due < first)
            first = d->io_due;
    }
    if (first == UINT64_MAX)
        return -1;
    if (first <= now)
        return 0;
    /* round up: waking a millisecond early would spin */
    return (int)((first - now + 999999) / 1000000 > 86400000
                     ? 86400000
                     : (first - now + 999999) / 1000000);
}

int lb_disc_link_resolve(struct lb_disc *d, const char **err)
{
    pthread_mutex_lock(&lb_ck.lock);
    if (count_locked(d, err) != LB_OK) {
        pthread_mutex_unlock(&lb_ck.lock);
        return LB_ERROR;
    }
    d->next = lb_disc_all;
    if (lb_disc_all)
        lb_disc_all->prev = d;
    lb_disc_all = d;
    d->asked = 1;
    d->due = lb_ck_now_ns();
    lb_ck_wake();
    pthread_mutex_unlock(&lb_ck.lock);
    return LB_OK;
}

void lb_disc_unlink_resolve(struct lb_disc *d)
{
    pthread_mutex_lock(&lb_ck.lock);
    stop_locked(d);
    unlink_locked(d);
    pthread_mutex_unlock(&lb_ck.lock);
    destroy(d);
}

/* ---- lb_resolve (resolve.c starts one) ---- */

int lb_resolve_result(lb_resolve *r, lb_backend *out, int max, const char **err)
{
    struct lb_disc *d = (struct lb_disc *)r;
    int rc;

    pthread_mutex_lock(&lb_ck.lock);
    if (d->answered < 1)
        rc = LB_DECLINED;
    else if (d->answer_rc != LB_OK) {
        *err = d->st.last_error[0] ? d->st.last_error : "resolution failed";
        rc = LB_ERROR;
    } else {
        rc = (int)d->npending;
        for (int i = 0; i < rc && i < max; i++)
            out[i] = d->pending[i];
    }
    pthread_mutex_unlock(&lb_ck.lock);
    return rc;
}

int lb_resolve_wait(lb_resolve *r, double timeout)
{
    struct lb_disc *d = (struct lb_disc *)r;
    struct timespec ts;
    int rc;

    if (!(timeout >= 0))
        timeout = 0;
    if (timeout > LB_MAX_TIMEOUT)
        timeout = LB_MAX_TIMEOUT;
    ts = lb_deadline(timeout);
    pthread_mutex_lock(&lb_ck.lock);
    while (d->answered < 1 &&
           pthread_cond_timedwait(&lb_ck.cond, &lb_ck.lock, &ts) != ETIMEDOUT)
        ;
    rc = d->answered >= 1 ? LB_OK : LB_DECLINED;
    pthread_mutex_unlock(&lb_ck.lock);
    return rc;
}

void lb_resolve_free(lb_resolve *r)
{
    if (r)
        lb_disc_unlink_resolve((struct lb_disc *)r);
}

void lb_disc_fork_child(void)
{
    lb_disc_loop_fork_child();
    for (struct lb_disc *d = lb_disc_all; d; d = d->next) {
        if (d->busy)
            d->ops->abort(d, true);
        d->busy = d->publishing = false;
        d->io_due = 0;
        free(d->pending);
        d->pending = NULL;
        d->has_pending = false;
        d->counted = false;
        d->answered = d->asked; /* no waiter survived the fork */
        if (d->started) {
            d->counted = true;
            lb_ck.users++;
            d->due = lb_ck_now_ns();
        } else
            d->due = 0;
    }
}
