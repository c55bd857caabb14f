/*
 * api.c - the public functions of lb.h's health-checks section.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checker/checker.h"

static struct lb_checker_job *job_get_locked(lb_balancer *b)
{
    struct lb_checker_job *job = lb_balancer_job(b);

    if (job)
        return job;
    job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->b = b;
    job->due.idx = SIZE_MAX;
    job->next = lb_ck.jobs;
    if (lb_ck.jobs)
        lb_ck.jobs->prev = job;
    lb_ck.jobs = job;
    lb_balancer_job_set(b, job, lb_balancer_checks_free);
    return job;
}

int lb_balancer_set_check(lb_balancer *b, const lb_check_config *cfg,
                          const char **err)
{
    struct lb_check_cfg *c = NULL, *old;
    struct lb_checker_job *job;

    if (cfg && cfg->kind != LB_CHECK_NONE) {
        c = lb_check_cfg_new(cfg, err);
        if (!c)
            return LB_ERROR;
    }
    pthread_mutex_lock(&lb_ck.lock);
    job = job_get_locked(b);
    if (!job) {
        pthread_mutex_unlock(&lb_ck.lock);
        lb_check_cfg_free(c);
        *err = "out of memory";
        return LB_ERROR;
    }
    lb_ck_cfg_unref(job->cfg, &old);
    job->cfg = c;
    job->cfg_gen++;
    pthread_mutex_unlock(&lb_ck.lock);
    lb_check_cfg_free(old);
    return LB_OK;
}

int lb_balancer_check_round(lb_balancer *b, int parallel, const char **err)
{
    struct waiter w = {.parallel = parallel != 0};
    struct lb_checker_job *job;

    pthread_mutex_lock(&lb_ck.lock);
    job = lb_balancer_job(b);
    if (!job || !job->cfg) {
        pthread_mutex_unlock(&lb_ck.lock);
        return LB_DECLINED;
    }
    if (lb_ck_use(err) != LB_OK) {
        pthread_mutex_unlock(&lb_ck.lock);
        return LB_ERROR;
    }
    w.next = job->pending;
    job->pending = &w;
    lb_ck_attend(job);
    while (!w.done)
        pthread_cond_wait(&lb_ck.cond, &lb_ck.lock);
    lb_ck_unuse();
    pthread_mutex_unlock(&lb_ck.lock);
    return w.checked;
}

int lb_balancer_checks_start(lb_balancer *b, double frequency, int parallel,
                             const char **err)
{
    struct lb_checker_job *job;
    uint64_t period;

    if (!(frequency > 0) || !isfinite(frequency) ||
        frequency > LB_MAX_FREQUENCY) {
        *err = "health check frequency out of range";
        return LB_ERROR;
    }
    pthread_mutex_lock(&lb_ck.lock);
    job = lb_balancer_job(b);
    if (!job || !job->cfg) {
        pthread_mutex_unlock(&lb_ck.lock);
        return LB_DECLINED;
    }
    period = (uint64_t)(frequency * 1e9);
    if (period == 0)
        period = 1;
    if (!job->periodic) {
        /* room in the due heap for every periodic job, so a round's end
         * can always put its job back */
        if (lb_ck_heap_reserve(&lb_ck.due, lb_ck.nperiodic + 1) != LB_OK) {
            pthread_mutex_unlock(&lb_ck.lock);
            *err = "out of memory";
            return LB_ERROR;
        }
        if (lb_ck_use(err) != LB_OK) {
            pthread_mutex_unlock(&lb_ck.lock);
            return LB_ERROR;
        }
        lb_ck.nperiodic++;
        job->periodic = true;
        job->due.key = lb_ck_now_ns();
        if (!job->periodic_round)
            lb_ck_heap_push(&lb_ck.due, &job->due);
    } else {
        /* the next round is due one new period after the last one began */
        lb_ck_heap_update(&lb_ck.due, &job->due,
                          job->due.key - job->period_ns + period);
    }
    job->period_ns = period;
    job->periodic_parallel = parallel != 0;
    lb_ck_wake();
    pthread_mutex_unlock(&lb_ck.lock);
    return LB_OK;
}

/* Caller holds lb_ck.lock and is a user (so the thread runs to see the
 * cancel).  Only the periodic round is abandoned: a demand round belongs
 * to the callers waiting for it. */
static void stop_periodic_locked(struct lb_checker_job *job)
{
    if (!job->periodic)
        return;
    job->periodic = false;
    lb_ck.nperiodic--;
    lb_ck_heap_remove(&lb_ck.due, &job->due);
    if (job->periodic_round) {
        job->cancel = true;
        lb_ck_attend(job);
        /* cleared when the round ended (or was seen already gone) */
        while (job->cancel)
            pthread_cond_wait(&lb_ck.cond, &lb_ck.lock);
    }
    /* kept-alive connections are not held open while nothing checks */
    if (!job->demand_round)
        lb_ck_pool_close(job, false);
    lb_ck_unuse();
}

void lb_balancer_checks_stop(lb_balancer *b)
{
    struct lb_checker_job *job;

    pthread_mutex_lock(&lb_ck.lock);
    job = lb_balancer_job(b);
    if (job)
        stop_periodic_locked(job);
    pthread_mutex_unlock(&lb_ck.lock);
}

void lb_balancer_checks_free(lb_balancer *b)
{
    struct lb_checker_job *job, **pp;
    struct lb_check_cfg *f;

    pthread_mutex_lock(&lb_ck.lock);
    job = lb_balancer_job(b);
    if (!job) {
        pthread_mutex_unlock(&lb_ck.lock);
        return;
    }
    stop_periodic_locked(job);
    /* No caller may still wait on this balancer (lb_balancer_free's
     * contract), so a round left in flight has no user: when the thread
     * still runs for others, have it dropped; else the thread dropped it
     * when it stopped. */
    if ((job->periodic_round || job->demand_round) &&
        lb_ck.state == LB_CK_RUNNING) {
        job->drop = true;
        lb_ck_attend(job);
        while ((job->periodic_round || job->demand_round) &&
               lb_ck.state == LB_CK_RUNNING)
            pthread_cond_wait(&lb_ck.cond, &lb_ck.lock);
    }
    if (job->in_attn) {
        for (pp = &lb_ck.attn; *pp != job; pp = &(*pp)->attn)
            ;
        *pp = job->attn;
        job->in_attn = false;
    }
    if (job->prev)
        job->prev->next = job->next;
    else
        lb_ck.jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    lb_ck_pool_close(job, false);
    lb_ck_cfg_unref(job->cfg, &f);
    lb_balancer_job_set(b, NULL, NULL);
    pthread_mutex_unlock(&lb_ck.lock);
    lb_check_cfg_free(f);
    free(job);
}

int lb_balancer_check_stats(lb_balancer *b, lb_check_stats *out)
{
    struct lb_checker_job *job;
    int rc = LB_DECLINED;

    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&lb_ck.lock);
    job = lb_balancer_job(b);
    if (job) {
        *out = job->stats;
        rc = LB_OK;
    }
    pthread_mutex_unlock(&lb_ck.lock);
    return rc;
}
