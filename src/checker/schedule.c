/*
 * schedule.c - which round starts when, and when the thread must wake.
 */
#include "checker/checker.h"

void lb_ck_schedule(uint64_t now)
{
    bool again = true;

    while (again) {
        again = false;
        for (struct lb_checker_job *job = lb_ck.jobs; job; job = job->next) {
            struct round *r = job->round;

            if (r && job->cancel) {
                lb_ck_round_abort(r);
                again = true;
                continue;
            }
            if (!r && job->pending && job->cfg) {
                bool parallel = false;

                for (struct waiter *w = job->pending; w; w = w->next)
                    parallel |= w->parallel;
                r = lb_ck_round_new(job, parallel);
                job->serving = job->pending;
                job->pending = NULL;
                if (!r) {
                    for (struct waiter *w = job->serving; w; w = w->next)
                        w->done = true;
                    job->serving = NULL;
                    pthread_cond_broadcast(&lb_ck.cond);
                    continue;
                }
                job->round = r;
            } else if (!r && job->pending) {
                /* the configuration was removed: nothing to check */
                for (struct waiter *w = job->pending; w; w = w->next)
                    w->done = true;
                job->pending = NULL;
                pthread_cond_broadcast(&lb_ck.cond);
                continue;
            } else if (!r && job->periodic && job->cfg &&
                       now >= job->next_due) {
                r = lb_ck_round_new(job, job->periodic_parallel);
                job->next_due = now + job->period_ns;
                if (!r)
                    continue;
                job->round = r;
            }
            if (!r)
                continue;
            lb_ck_round_launch(r);
            if (r->next == r->n && r->inflight == 0) {
                lb_ck_round_end(r, true);
                again = true;
            }
        }
    }
}


int lb_ck_wait_ms(uint64_t now)
{
    uint64_t until = UINT64_MAX;

    if (lb_ck.nheap)
        until = lb_ck.heap[0]->deadline;
    for (struct lb_checker_job *job = lb_ck.jobs; job; job = job->next)
        if (!job->round && job->periodic && job->cfg && job->next_due < until)
            until = job->next_due;
    if (until == UINT64_MAX)
        return -1;
    if (until <= now)
        return 0;
    /* Round up: waking a little late is fine, spinning is not. */
    until = (until - now + 999999) / 1000000;
    return until > 60000 ? 60000 : (int)until;
}
