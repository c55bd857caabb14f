/*
 * core_link.c - the checker's one door into the core (see core_link.h):
 * the snapshot, the health records, the event queue and b->job are
 * touched here and nowhere else in src/checker/.
 */
#include <stdlib.h>

#include "checker/core_link.h"
#include "core.h"

int lb_link_targets(lb_balancer *b, struct lb_check_target **out, size_t *n)
{
    struct lb_check_target *t;
    struct lb_snapshot *s;

    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    t = calloc(s->n ? s->n : 1, sizeof(*t));
    if (t) {
        *n = s->n;
        for (size_t i = 0; i < s->n; i++) {
            t[i].be = s->backends[i];
            t[i].rec = s->health[i];
            t[i].id = s->health[i]->id;
            lb_health_ref(s->health[i]);
        }
    }
    lb_rcu_read_unlock();
    if (!t)
        return LB_ERROR;
    *out = t;
    return LB_OK;
}

void lb_link_targets_release(struct lb_check_target *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        lb_health_unref(t[i].rec);
    free(t);
}

bool lb_link_observe(struct lb_events *q, const struct lb_check_target *t,
                     bool ok, uint32_t threshold, int err_kind, int err_detail)
{
    lb_health_event ev = {.id = t->id, .healthy = ok};

    if (ok)
        err_kind = err_detail = 0;
    if (!lb_health_observe(t->rec, ok, threshold, err_kind, err_detail))
        return false;
    ev.err_kind = err_kind;
    ev.err_detail = err_detail;
    lb_events_push(q, &ev);
    return true;
}

struct lb_checker_job *lb_link_job(lb_balancer *b)
{
    return __atomic_load_n(&b->job, __ATOMIC_ACQUIRE);
}

void lb_link_job_set(lb_balancer *b, struct lb_checker_job *job)
{
    __atomic_store_n(&b->job, job, __ATOMIC_RELEASE);
}

struct lb_events *lb_link_events_new(void)
{
    struct lb_events *q = malloc(sizeof(*q));

    if (q)
        lb_events_init(q);
    return q;
}

int lb_link_events_drain(struct lb_events *q, lb_health_event *out, int max)
{
    return lb_events_drain(q, out, max);
}

void lb_link_events_free(struct lb_events *q)
{
    if (!q)
        return;
    lb_events_destroy(q);
    free(q);
}

void lb_link_events_lock(struct lb_events *q) { pthread_mutex_lock(&q->lock); }

void lb_link_events_unlock(struct lb_events *q)
{
    pthread_mutex_unlock(&q->lock);
}
