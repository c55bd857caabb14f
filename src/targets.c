/*
 * targets.c - the checker's door into the core (see targets.h).
 */
#include <stdlib.h>

#include "core.h"
#include "targets.h"

int lb_targets_get(lb_balancer *b, struct lb_target **out, size_t *n,
                   const char **err)
{
    struct lb_snapshot *s;
    struct lb_target *t;
    int rc = LB_OK;

    *out = NULL;
    *n = 0;
    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    t = s->n ? malloc(s->n * sizeof(*t)) : NULL;
    if (s->n && !t) {
        *err = "out of memory";
        rc = LB_ERROR;
    } else {
        for (size_t i = 0; i < s->n; i++) {
            t[i].backend = s->backends[i];
            t[i].record = s->rec[i];
            t[i].id = lb_store_id(s->store, s->rec[i]);
            lb_store_ref(s->store, s->rec[i]);
        }
        *out = t;
        *n = s->n;
    }
    lb_rcu_read_unlock();
    return rc;
}

void lb_targets_put(lb_balancer *b, struct lb_target *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        lb_store_release(b->store, t[i].record);
    free(t);
}

int lb_target_observe(lb_balancer *b, const struct lb_target *t, int ok,
                      uint32_t threshold, int err_kind, int err_detail)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (lb_snapshot_find_record(s, &t->backend, t->record) >= 0)
            rc = lb_balancer_observe_record(b, s->store, t->record, ok,
                                            threshold, err_kind, err_detail);
    }
    lb_rcu_read_unlock();
    return rc;
}

struct lb_checker_job *lb_balancer_job(lb_balancer *b)
{
    return __atomic_load_n(&b->job, __ATOMIC_ACQUIRE);
}

void lb_balancer_job_set(lb_balancer *b, struct lb_checker_job *job,
                         void (*release)(lb_balancer *b))
{
    b->job_release = release;
    __atomic_store_n(&b->job, job, __ATOMIC_RELEASE);
}

int lb_balancer_may_probe(lb_balancer *b)
{
    return lb_balancer_role(b) != LB_ROLE_READER;
}

void lb_target_check_time(const struct lb_target *t, uint64_t ns)
{
    lb_record_check_time(t->record, ns);
}

struct lb_disc *lb_balancer_disc(lb_balancer *b)
{
    return __atomic_load_n(&b->disc, __ATOMIC_ACQUIRE);
}

void lb_balancer_disc_set(lb_balancer *b, struct lb_disc *d,
                          void (*release)(lb_balancer *b))
{
    b->disc_release = release;
    __atomic_store_n(&b->disc, d, __ATOMIC_RELEASE);
}
