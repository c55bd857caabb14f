/*
 * fork.c - the checker's fork hooks, called in order by the library's one
 * fork handler (src/fork.c).
 */
#include <stdlib.h>
#include <unistd.h>

#include "checker/checker.h"
#include "checker/fork.h"
#include "discovery/discovery.h"

/* Take the checker's lock (the thread is then asleep in epoll_wait, holding
 * nothing), so no child inherits it held by a thread that does not exist
 * there.  The event queues are the balancers' (the core's fork step holds
 * their locks). */
void lb_checker_fork_prepare(void) { pthread_mutex_lock(&lb_ck.lock); }

void lb_checker_fork_parent(void) { pthread_mutex_unlock(&lb_ck.lock); }

/*
 * In the child only the forking thread exists: the checker thread and every
 * caller waiting for a round are gone.  Drop the rounds they ran (closing
 * our copies of their sockets, never touching the epoll set, which is
 * shared with the parent), forget the waiters, and restart the thread when
 * a balancer had periodic checks running.
 */
void lb_checker_fork_child(void)
{
    struct lb_check_cfg *f;

    for (size_t i = 0; i < lb_ck.expiry.n; i++) {
        struct slot *s =
            lb_ck_container_of(lb_ck.expiry.v[i], struct slot, expiry);

        s->p.conn.epfd = -1;
        lb_probe_finish(&s->p, false, NULL);
        free(s);
    }
    lb_ck.expiry.n = 0;
    lb_ck.inflight = 0;
    lb_ck.first_head = lb_ck.first_tail = NULL;
    lb_ck.more_head = lb_ck.more_tail = NULL;
    lb_ck.attn = NULL;
    /* rebuilt below: every periodic job waits for its next round */
    for (size_t i = 0; i < lb_ck.due.n; i++)
        lb_ck.due.v[i]->idx = SIZE_MAX;
    lb_ck.due.n = 0;
    lb_ck_bury_dead();
    if (lb_ck.epfd >= 0)
        close(lb_ck.epfd);
    if (lb_ck.wakefd >= 0)
        close(lb_ck.wakefd);
    lb_ck.epfd = lb_ck.wakefd = -1;
    lb_ck.state = LB_CK_STOPPED;
    lb_ck.quit = false;
    lb_ck.users = 0;
    pthread_cond_init(&lb_ck.cond, NULL);
    for (struct lb_checker_job *job = lb_ck.jobs; job; job = job->next) {
        struct round *rs[2] = {job->periodic_round, job->demand_round};

        for (int k = 0; k < 2; k++) {
            struct round *r = rs[k];

            if (!r)
                continue;
            for (size_t i = 0; i < r->n; i++) {
                r->kept[i].epfd = -1;
                lb_conn_close(&r->kept[i]);
            }
            lb_ck_cfg_unref(r->cfg, &f);
            lb_check_cfg_free(f);
            lb_ck_round_free(r);
        }
        job->periodic_round = job->demand_round = NULL;
        job->pending = job->serving = NULL;
        job->cancel = job->drop = false;
        job->attn = NULL;
        job->in_attn = false;
        lb_ck_pool_close(job, true);
        if (job->periodic) {
            lb_ck.users++;
            lb_ck_heap_push(&lb_ck.due, &job->due);
        }
    }
    /* discovery sources: requests dropped, started ones count again */
    lb_disc_fork_child();
    if (lb_ck.users > 0)
        lb_ck_thread_start(); /* on failure, the next user retries */
    pthread_mutex_unlock(&lb_ck.lock);
}
