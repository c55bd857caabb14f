/*
 * thread.c - the checker thread's life and loop: started by its first
 * user, stopped and joined by its last; it sleeps in epoll_wait until a
 * socket is ready, a deadline passes or a caller wakes it.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "checker/checker.h"
#include "clock.h"
#include "discovery/discovery.h"

struct lb_checker lb_ck = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .wakefd = -1,
};

/* Markers for the wake-up eventfd and the discovery sources' own epoll
 * set (src/discovery/loop.c) in the epoll set. */
static char wake_marker;
static char disc_marker;

static void *thread_main(void *arg);

uint64_t lb_ck_now_ns(void) { return lb_clock_ns(); }

void lb_ck_wake(void)
{
    uint64_t one = 1;

    if (lb_ck.wakefd >= 0 && write(lb_ck.wakefd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, the thread will wake. */
    }
}

int lb_ck_thread_start(void)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &wake_marker};
    struct rlimit rl;
    sigset_t all, old;
    int rc;

    while (lb_ck.state == LB_CK_STOPPING)
        pthread_cond_wait(&lb_ck.cond, &lb_ck.lock);
    if (lb_ck.state == LB_CK_RUNNING)
        return LB_OK;
    lb_ck.epfd = epoll_create1(EPOLL_CLOEXEC);
    lb_ck.wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lb_ck.epfd < 0 || lb_ck.wakefd < 0 ||
        epoll_ctl(lb_ck.epfd, EPOLL_CTL_ADD, lb_ck.wakefd, &ev) < 0 ||
        lb_disc_attach(lb_ck.epfd, &disc_marker) != LB_OK)
        goto fail;
    /* Half of the descriptor limit for probes: a parallel round of 10,000
     * backends queues what does not fit instead of failing with EMFILE,
     * and the host process keeps room for its own sockets. */
    lb_ck.max_inflight = 512;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        lb_ck.max_inflight = rl.rlim_cur / 2 > 16 ? rl.rlim_cur / 2 : 16;
    /* schedule.c says why an eighth */
    lb_ck.reserve = lb_ck.max_inflight / 8;
    lb_ck.quit = false;
    /* The thread takes no process signals (nor SIGPIPE from a TLS write
     * on a reset socket): they stay with the host's threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&lb_ck.thread, NULL, thread_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        goto fail;
    lb_ck.state = LB_CK_RUNNING;
    return LB_OK;
fail:
    if (lb_ck.epfd >= 0)
        close(lb_ck.epfd);
    if (lb_ck.wakefd >= 0)
        close(lb_ck.wakefd);
    lb_ck.epfd = lb_ck.wakefd = -1;
    return LB_ERROR;
}

int lb_ck_use(const char **err)
{
    lb_ck.users++;
    if (lb_ck_thread_start() != LB_OK) {
        lb_ck.users--;
        *err = "cannot start the health-check thread";
        return LB_ERROR;
    }
    return LB_OK;
}

/* The last user stops the thread and joins it, dropping the lock while it
 * waits; a new user arriving meanwhile waits for LB_CK_STOPPED and restarts. */
void lb_ck_unuse(void)
{
    pthread_t t;

    if (--lb_ck.users > 0 || lb_ck.state != LB_CK_RUNNING)
        return;
    lb_ck.state = LB_CK_STOPPING;
    lb_ck.quit = true;
    lb_ck_wake();
    t = lb_ck.thread;
    pthread_mutex_unlock(&lb_ck.lock);
    pthread_join(t, NULL);
    pthread_mutex_lock(&lb_ck.lock);
    lb_ck.state = LB_CK_STOPPED;
    pthread_cond_broadcast(&lb_ck.cond);
}

static void *thread_main(void *arg)
{
    struct epoll_event evs[256];

    (void)arg;
    pthread_setname_np(pthread_self(), "lb-checker");
    pthread_mutex_lock(&lb_ck.lock);
    while (!lb_ck.quit) {
        uint64_t now = lb_ck_now_ns();
        int n, timeout;

        struct lb_ck_heap_node *top;

        lb_ck_schedule(now);
        /* Expired probes fail with the phase they were in. */
        now = lb_ck_now_ns();
        while ((top = lb_ck_heap_top(&lb_ck.expiry)) && top->key <= now) {
            struct slot *s = lb_ck_container_of(top, struct slot, expiry);
            struct round *r = s->round;

            lb_ck_slot_result(
                s, lb_probe_fail(&s->p, LB_CHECK_ERR_TIMEOUT, s->p.phase));
            lb_ck_round_progress(r);
        }
        lb_ck_schedule(now);
        lb_ck_bury_dead();
        /* Discovery: due requests, deadlines, answers published (the lock
         * is dropped around each publish: src/discovery/source.c). */
        lb_disc_run(now);
        now = lb_ck_now_ns();
        timeout = lb_ck_wait_ms(now);
        {
            int dt = lb_disc_wait_ms(now);
            if (dt >= 0 && (timeout < 0 || dt < timeout))
                timeout = dt;
        }
        pthread_mutex_unlock(&lb_ck.lock);
        n = epoll_wait(lb_ck.epfd, evs, 256, timeout);
        pthread_mutex_lock(&lb_ck.lock);
        for (int i = 0; i < n; i++) {
            struct slot *s = evs[i].data.ptr;
            struct round *r;
            int rc;

            if (evs[i].data.ptr == &wake_marker) {
                uint64_t v;
                if (read(lb_ck.wakefd, &v, sizeof(v)) < 0) {
                    /* EAGAIN: already drained */
                }
                continue;
            }
            if (evs[i].data.ptr == &disc_marker) {
                lb_disc_io();
                continue;
            }
            if (s->done)
                continue;
            r = s->round;
            rc = lb_probe_step(&s->p, evs[i].events);
            if (rc == LB_PROBE_AGAIN)
                lb_ck_slot_watch(s);
            else
                lb_ck_slot_result(s, rc);
            lb_ck_round_progress(r);
        }
    }
    /* Stopping with rounds in flight happens only when their users left
     * (a forked child's, or a stop that raced a free): drop them. */
    for (struct lb_checker_job *job = lb_ck.jobs; job; job = job->next) {
        if (job->periodic_round)
            lb_ck_round_abort(job->periodic_round);
        if (job->demand_round)
            lb_ck_round_abort(job->demand_round);
    }
    lb_ck_bury_dead();
    lb_disc_detach();
    close(lb_ck.epfd);
    close(lb_ck.wakefd);
    lb_ck.epfd = lb_ck.wakefd = -1;
    pthread_mutex_unlock(&lb_ck.lock);
    return NULL;
}
