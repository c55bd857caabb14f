/*
 * schedule.c - which round starts when, and which probe launches next.
 *
 * Nothing here walks the balancers: a wake-up costs what its events cost,
 * whatever the number of jobs.
 *   - Periodic jobs wait for their next round in a heap by due time; a
 *     job leaves it while its round runs and comes back when it ends.
 *   - A request from another thread (a caller wanting a round, a cancel)
 *     puts the job on the attention list, served on the next wake-up.
 *   - Rounds that may launch a probe wait their turn in one of two FIFO
 *     queues and launch ONE probe per turn, so the cap of probes in flight
 *     is shared by turns, not handed out in list order.
 *
 * The cap keeps a reserve: an eighth of it (at least one probe) is only
 * for rounds with nothing in flight (the FIRST queue), and rounds that
 * already have probes in flight (the MORE queue) stop at the cap less the
 * reserve.  So a balancer whose backends all hang (3,000 probes each
 * holding a slot for its whole timeout) can hold at most 7/8 of the cap,
 * and the next round of any other balancer starts at once instead of
 * waiting for one of those timeouts.  A sequential round only ever has
 * one probe in flight, so it always counts as FIRST.
 */
#include "checker/checker.h"

static void queue_push(int q, struct round *r)
{
    struct round **head =
        q == LB_CK_Q_FIRST ? &lb_ck.first_head : &lb_ck.more_head;
    struct round **tail =
        q == LB_CK_Q_FIRST ? &lb_ck.first_tail : &lb_ck.more_tail;

    r->queue = q;
    r->qnext = NULL;
    r->qprev = *tail;
    if (*tail)
        (*tail)->qnext = r;
    else
        *head = r;
    *tail = r;
}

void lb_ck_queue_remove(struct round *r)
{
    struct round **head, **tail;

    if (r->queue == LB_CK_Q_NONE)
        return;
    head = r->queue == LB_CK_Q_FIRST ? &lb_ck.first_head : &lb_ck.more_head;
    tail = r->queue == LB_CK_Q_FIRST ? &lb_ck.first_tail : &lb_ck.more_tail;
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        *head = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        *tail = r->qprev;
    r->qprev = r->qnext = NULL;
    r->queue = LB_CK_Q_NONE;
}

void lb_ck_round_progress(struct round *r)
{
    if (r->next == r->n && r->inflight == 0) {
        lb_ck_round_end(r, true);
        return;
    }
    if (r->next == r->n || (!r->parallel && r->inflight > 0)) {
        lb_ck_queue_remove(r);
        return;
    }
    /* It may launch more: a turn at the tail, unless it already waits in
     * the right queue (its place is kept). */
    if (r->queue == (r->inflight ? LB_CK_Q_MORE : LB_CK_Q_FIRST))
        return;
    lb_ck_queue_remove(r);
    queue_push(r->inflight ? LB_CK_Q_MORE : LB_CK_Q_FIRST, r);
}

/* Launch probes by turns while the cap allows.  Each turn launches one
 * probe and sends the round to the back of its queue. */
static void dispatch(void)
{
    for (;;) {
        struct round *r;

        if (lb_ck.first_head && lb_ck.inflight < lb_ck.max_inflight)
            r = lb_ck.first_head;
        else if (lb_ck.more_head &&
                 lb_ck.inflight + lb_ck.reserve < lb_ck.max_inflight)
            r = lb_ck.more_head;
        else
            break;
        lb_ck_queue_remove(r);
        lb_ck_round_launch_one(r);
        lb_ck_round_progress(r);
    }
}

void lb_ck_attend(struct lb_checker_job *job)
{
    if (!job->in_attn) {
        job->in_attn = true;
        job->attn = lb_ck.attn;
        lb_ck.attn = job;
    }
    lb_ck_wake();
}

/* A caller's request: a cancel, a dropped job, or callers waiting for a
 * round of their own (started beside a periodic round in flight). */
static void serve(struct lb_checker_job *job)
{
    if ((job->cancel || job->drop) && job->periodic_round)
        lb_ck_round_abort(job->periodic_round);
    if (job->drop && job->demand_round)
        lb_ck_round_abort(job->demand_round);
    if (job->cancel) {
        job->cancel = false; /* the round ended before it was seen */
        pthread_cond_broadcast(&lb_ck.cond);
    }
    if (job->pending && !job->demand_round) {
        bool parallel = false;
        struct round *r = NULL;

        for (struct waiter *w = job->pending; w; w = w->next)
            parallel |= w->parallel;
        if (job->cfg) /* else the configuration was removed: none to run */
            r = lb_ck_round_new(job, parallel);
        job->serving = job->pending;
        job->pending = NULL;
        if (!r) {
            for (struct waiter *w = job->serving; w; w = w->next)
                w->done = true;
            job->serving = NULL;
            pthread_cond_broadcast(&lb_ck.cond);
            return;
        }
        r->periodic = false;
        job->demand_round = r;
        lb_ck_round_progress(r);
    }
}

/* A periodic job whose round is due: start it.  The next one is due one
 * period after this one began (at once when this one runs longer). */
static void start_due(struct lb_checker_job *job, uint64_t now)
{
    struct round *r = NULL;

    lb_ck_heap_remove(&lb_ck.due, &job->due);
    job->due.key = now + job->period_ns;
    /* a shared balancer's reader leaves the checks to the prober */
    if (job->cfg && lb_balancer_may_probe(job->b))
        r = lb_ck_round_new(job, job->periodic_parallel);
    if (!r) {
        /* no configuration now, not the prober, or out of memory: try
         * next period */
        lb_ck_heap_push(&lb_ck.due, &job->due);
        return;
    }
    r->periodic = true;
    job->periodic_round = r;
    lb_ck_round_progress(r);
}

void lb_ck_schedule(uint64_t now)
{
    struct lb_ck_heap_node *top;

    while (lb_ck.attn) {
        struct lb_checker_job *job = lb_ck.attn;

        lb_ck.attn = job->attn;
        job->attn = NULL;
        job->in_attn = false;
        serve(job);
    }
    while ((top = lb_ck_heap_top(&lb_ck.due)) && top->key <= now)
        start_due(lb_ck_container_of(top, struct lb_checker_job, due), now);
    dispatch();
}

int lb_ck_wait_ms(uint64_t now)
{
    struct lb_ck_heap_node *a = lb_ck_heap_top(&lb_ck.expiry);
    struct lb_ck_heap_node *b = lb_ck_heap_top(&lb_ck.due);
    uint64_t until = UINT64_MAX;

    if (a)
        until = a->key;
    if (b && b->key < until)
        until = b->key;
    if (lb_ck.attn)
        return 0;
    if (until == UINT64_MAX)
        return -1;
    if (until <= now)
        return 0;
    /* Round up: waking a little late is fine, spinning is not. */
    until = (until - now + 999999) / 1000000;
    return until > 60000 ? 60000 : (int)until;
}
