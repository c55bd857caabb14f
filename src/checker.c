/*
 * checker.c - the background health checker: one thread per process,
 * serving every balancer.
 *
 * Each balancer with a built-in check has a job: its configuration, its
 * schedule, its round in flight (at most one), the connections kept alive
 * between rounds and its queue of health-change events.  A round copies
 * the published snapshot's addresses and takes a reference on each health
 * record inside one short RCU read-side section, then runs its probes
 * (src/check/) on the thread's epoll set, one at a time or all at once,
 * each bounded by one deadline kept in a min-heap.
 *
 * Locking: one mutex, `g.lock`, guards every job and the thread's state.
 * The thread holds it while it works and drops it only to sleep in
 * epoll_wait, so when fork() takes it in the prepare handler the thread is
 * asleep and holds nothing else (no OpenSSL, no RCU read-side section, no
 * malloc lock).  Readers (select, ready) never take it; they see results
 * through the health records' atomic words.
 *
 * Lifetime: `g.users` counts periodic jobs plus callers waiting in
 * lb_balancer_check_round.  The first user starts the thread; whoever
 * drops the count to zero stops it and joins it.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "check/check.h"
#include "core.h" /* struct lb_balancer's job pointer, the fork steps */
#include "targets.h"

struct target {
    lb_backend be;        /* tg->backend, where the probe reads it */
    struct lb_target *tg; /* the core's handle (targets.h) */
    struct lb_conn kept;  /* a kept-alive connection, claimed for the round */
};

struct round {
    struct lb_checker_job *job;
    struct lb_check_cfg *cfg;
    uint64_t cfg_gen;
    bool parallel;
    size_t n, next, inflight, checked;
    struct target *t;
    struct lb_target *tg; /* n, held until the round ends */
};

/* A probe in flight, registered in the epoll set and the deadline heap. */
struct slot {
    struct lb_probe p;
    struct round *round;
    struct target *t;
    uint64_t deadline;
    size_t heap_idx;
    uint32_t reg_want; /* events registered (p.conn.epfd >= 0: registered) */
    bool done;
    struct slot *next_dead;
};

/* A caller of lb_balancer_check_round; lives on that caller's stack. */
struct waiter {
    struct waiter *next;
    bool parallel;
    bool done;
    int checked;
};

struct kept {
    uint64_t id;
    struct lb_conn conn;
};

struct lb_checker_job {
    lb_balancer *b;
    struct lb_checker_job *next; /* g.jobs */
    struct lb_check_cfg *cfg;    /* NULL: no built-in check */
    uint64_t cfg_gen;            /* bumped by every set_check */
    bool periodic, periodic_parallel, cancel;
    uint64_t period_ns, next_due;
    struct round *round;    /* in flight, or NULL */
    struct waiter *pending; /* want a round that has not started */
    struct waiter *serving; /* wait for the round in flight */
    struct kept *pool;      /* sorted by health id */
    size_t npool;
    uint64_t pool_gen; /* the cfg_gen the pool's connections belong to */
};

enum { STOPPED, RUNNING, STOPPING };

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* round done, thread stopped */
    int state;
    bool quit;
    pthread_t thread;
    unsigned users;
    int epfd, wakefd;
    struct lb_checker_job *jobs;
    struct slot **heap;
    size_t nheap, capheap;
    size_t inflight, max_inflight;
    struct slot *dead; /* finished this batch; freed after it */
} g = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .epfd = -1,
    .wakefd = -1,
};

/* A marker for the wake-up eventfd in the epoll set. */
static char wake_marker;

static uint64_t now_ns(void);
static void cfg_unref_locked(struct lb_check_cfg *c, struct lb_check_cfg **f);
static void pool_close(struct lb_checker_job *job, bool child);
static struct lb_checker_job *job_get_locked(lb_balancer *b);
static int thread_start_locked(void);
static int use_locked(const char **err);
static void unuse_locked(void);
static void wake(void);
static void *thread_main(void *arg);
static void heap_push(struct slot *s);
static void heap_remove(struct slot *s);
static void heap_fix(size_t i);
static struct round *round_new(struct lb_checker_job *job, bool parallel);
static void round_launch(struct round *r);
static void round_end(struct round *r, bool observed);
static void round_abort(struct round *r);
static void slot_launch(struct round *r, struct target *t);
static void slot_result(struct slot *s, int rc);
static void record(struct round *r, struct target *t, bool ok, int kind,
                   int detail);
static void slot_watch(struct slot *s);
static void schedule(uint64_t now);
static void bury_dead(void);

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The last unref hands the config back through *f, so callers that can
 * free it after dropping the lock do (SSL_CTX_free takes OpenSSL's locks).
 * The thread's own rare frees under the lock (round_end, round_new's
 * failure) are safe: no thread holding an OpenSSL lock takes g.lock. */
static void cfg_unref_locked(struct lb_check_cfg *c, struct lb_check_cfg **f)
{
    *f = NULL;
    if (c && --c->refs == 0)
        *f = c;
}

/* Close the kept connections.  In a forked child the epoll set and the
 * sockets are shared with the parent: close our descriptors, touch nothing
 * else. */
static void pool_close(struct lb_checker_job *job, bool child)
{
    for (size_t i = 0; i < job->npool; i++) {
        if (child)
            job->pool[i].conn.epfd = -1;
        lb_conn_close(&job->pool[i].conn);
    }
    free(job->pool);
    job->pool = NULL;
    job->npool = 0;
}

static struct lb_checker_job *job_get_locked(lb_balancer *b)
{
    struct lb_checker_job *job = b->job;

    if (job)
        return job;
    job = calloc(1, sizeof(*job));
    if (!job)
        return NULL;
    job->b = b;
    job->next = g.jobs;
    g.jobs = job;
    __atomic_store_n(&b->job, job, __ATOMIC_RELEASE);
    return job;
}

/* ---- the thread's lifetime ---- */

static void wake(void)
{
    uint64_t one = 1;

    if (g.wakefd >= 0 && write(g.wakefd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is already non-zero, the thread will wake. */
    }
}

static int thread_start_locked(void)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &wake_marker};
    struct rlimit rl;
    sigset_t all, old;
    int rc;

    while (g.state == STOPPING)
        pthread_cond_wait(&g.cond, &g.lock);
    if (g.state == RUNNING)
        return LB_OK;
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    g.wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g.epfd < 0 || g.wakefd < 0 ||
        epoll_ctl(g.epfd, EPOLL_CTL_ADD, g.wakefd, &ev) < 0)
        goto fail;
    /* Half of the descriptor limit for probes: a parallel round of 10,000
     * backends queues what does not fit instead of failing with EMFILE,
     * and the host process keeps room for its own sockets. */
    g.max_inflight = 512;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        g.max_inflight = rl.rlim_cur / 2 > 16 ? rl.rlim_cur / 2 : 16;
    g.quit = false;
    /* The thread takes no process signals (nor SIGPIPE from a TLS write
     * on a reset socket): they stay with the host's threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&g.thread, NULL, thread_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        goto fail;
    g.state = RUNNING;
    return LB_OK;
fail:
    if (g.epfd >= 0)
        close(g.epfd);
    if (g.wakefd >= 0)
        close(g.wakefd);
    g.epfd = g.wakefd = -1;
    return LB_ERROR;
}

static int use_locked(const char **err)
{
    g.users++;
    if (thread_start_locked() != LB_OK) {
        g.users--;
        *err = "cannot start the health-check thread";
        return LB_ERROR;
    }
    return LB_OK;
}

/* The last user stops the thread and joins it, dropping the lock while it
 * waits; a new user arriving meanwhile waits for STOPPED and restarts. */
static void unuse_locked(void)
{
    pthread_t t;

    if (--g.users > 0 || g.state != RUNNING)
        return;
    g.state = STOPPING;
    g.quit = true;
    wake();
    t = g.thread;
    pthread_mutex_unlock(&g.lock);
    pthread_join(t, NULL);
    pthread_mutex_lock(&g.lock);
    g.state = STOPPED;
    pthread_cond_broadcast(&g.cond);
}

/* ---- deadlines: a binary min-heap of the probes in flight ---- */

static bool heap_less(size_t a, size_t b)
{
    return g.heap[a]->deadline < g.heap[b]->deadline;
}

static void heap_swap(size_t a, size_t b)
{
    struct slot *t = g.heap[a];

    g.heap[a] = g.heap[b];
    g.heap[b] = t;
    g.heap[a]->heap_idx = a;
    g.heap[b]->heap_idx = b;
}

static void heap_fix(size_t i)
{
    while (i > 0 && heap_less(i, (i - 1) / 2)) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < g.nheap && heap_less(l, m))
            m = l;
        if (r < g.nheap && heap_less(r, m))
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
}

/* The heap has room for max_inflight slots (reserved in slot_launch). */
static void heap_push(struct slot *s)
{
    s->heap_idx = g.nheap;
    g.heap[g.nheap++] = s;
    heap_fix(s->heap_idx);
}

static void heap_remove(struct slot *s)
{
    size_t i = s->heap_idx;

    if (i == SIZE_MAX)
        return;
    s->heap_idx = SIZE_MAX;
    if (i != --g.nheap) {
        g.heap[i] = g.heap[g.nheap];
        g.heap[i]->heap_idx = i;
        heap_fix(i);
    }
}

/* ---- rounds ---- */

/* Copy the published set: addresses and one reference per health record,
 * inside one read-side section that neither blocks nor waits for I/O. */
static struct round *round_new(struct lb_checker_job *job, bool parallel)
{
    struct round *r = calloc(1, sizeof(*r));
    const char *err = NULL;
    size_t n = 0;

    if (!r)
        return NULL;
    r->job = job;
    r->cfg = job->cfg;
    r->cfg->refs++;
    r->cfg_gen = job->cfg_gen;
    r->parallel = parallel;
    if (lb_targets_get(job->b, &r->tg, &n, &err) == LB_OK) {
        r->t = calloc(n ? n : 1, sizeof(*r->t));
        if (!r->t)
            lb_targets_put(job->b, r->tg, n);
    }
    if (r->t) {
        r->n = n;
        for (size_t i = 0; i < n; i++) {
            r->t[i].be = r->tg[i].backend;
            r->t[i].tg = &r->tg[i];
            r->t[i].kept.fd = -1;
            r->t[i].kept.epfd = -1;
        }
    }
    if (!r->t) {
        struct lb_check_cfg *f;

        cfg_unref_locked(r->cfg, &f);
        lb_check_cfg_free(f);
        free(r);
        return NULL;
    }
    /* Hand each backend its kept connection; the others' servers left the
     * set (or the configuration changed) and theirs are closed. */
    if (job->npool && job->pool_gen == r->cfg_gen) {
        for (size_t i = 0; i < r->n; i++) {
            uint64_t id = r->t[i].tg->id;
            size_t lo = 0, hi = job->npool;

            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (job->pool[mid].id < id)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < job->npool && job->pool[lo].id == id &&
                job->pool[lo].conn.fd >= 0)
                lb_conn_move(&r->t[i].kept, &job->pool[lo].conn);
        }
    }
    pool_close(job, false);
    return r;
}

static int kept_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct kept *)a)->id, y = ((const struct kept *)b)->id;

    return x < y ? -1 : x > y;
}

/* Release the round: kept connections go back to the job's pool (sorted
 * by health id for the next round), references are dropped, waiters are
 * told.  Only when `observed` are the results complete. */
static void round_end(struct round *r, bool observed)
{
    struct lb_checker_job *job = r->job;
    struct lb_check_cfg *f;
    size_t nk = 0;

    for (size_t i = 0; i < r->n; i++)
        if (r->t[i].kept.fd >= 0)
            nk++;
    if (nk)
        job->pool = malloc(nk * sizeof(*job->pool));
    for (size_t i = 0; i < r->n; i++) {
        struct target *t = &r->t[i];

        if (t->kept.fd >= 0) {
            if (job->pool) {
                job->pool[job->npool].id = t->tg->id;
                job->pool[job->npool].conn = t->kept;
                job->npool++;
            } else {
                lb_conn_close(&t->kept);
            }
        }
    }
    lb_targets_put(job->b, r->tg, r->n);
    if (job->npool > 1)
        qsort(job->pool, job->npool, sizeof(*job->pool), kept_cmp);
    job->pool_gen = r->cfg_gen;
    for (struct waiter *w = job->serving; w; w = w->next) {
        w->done = true;
        w->checked = observed ? (int)r->checked : 0;
    }
    job->serving = NULL;
    job->round = NULL;
    job->cancel = false; /* a cancel is for the round that just ended */
    cfg_unref_locked(r->cfg, &f);
    free(r->t);
    free(r);
    pthread_cond_broadcast(&g.cond);
    if (f) {
        /* The last reference can only be dropped here when set_check
         * replaced the config meanwhile; freeing it under the lock is
         * rare and short. */
        lb_check_cfg_free(f);
    }
}

/* Take a finished probe out of the heap and the in-flight counts; its
 * slot is freed after the batch (bury_dead). */
static void slot_retire(struct slot *s, bool ok, struct lb_conn *kept)
{
    heap_remove(s);
    s->done = true;
    lb_probe_finish(&s->p, ok, kept);
    s->round->inflight--;
    g.inflight--;
    s->next_dead = g.dead;
    g.dead = s;
}

/* Abandon a round: close its probes without recording anything.  Its
 * slots are collected first: removing one from the heap moves others
 * across positions a scan would already have passed. */
static void round_abort(struct round *r)
{
    struct slot *mine = NULL;

    for (size_t i = 0; i < g.nheap; i++)
        if (g.heap[i]->round == r) {
            g.heap[i]->next_dead = mine;
            mine = g.heap[i];
        }
    while (mine) {
        struct slot *s = mine;

        mine = s->next_dead;
        slot_retire(s, false, NULL);
    }
    r->next = r->n;
    round_end(r, false);
}

/* Pingora's thresholds on the health record, and an event when it
 * flipped. */
static void record(struct round *r, struct target *t, bool ok, int kind,
                   int detail)
{
    const struct lb_check_cfg *cfg = r->cfg;

    /* LB_STALE: the backend left the set during the round */
    (void)lb_target_observe(r->job->b, t->tg, ok,
                            ok ? cfg->success : cfg->failure, kind, detail);
    r->checked++;
}

static void slot_launch(struct round *r, struct target *t)
{
    struct slot *s = calloc(1, sizeof(*s));
    int rc;

    if (!s || g.nheap >= g.capheap) {
        free(s);
        record(r, t, false, LB_CHECK_ERR_RESOURCE, ENOMEM);
        return;
    }
    s->round = r;
    s->t = t;
    s->p.cfg = r->cfg;
    s->p.be = &t->be;
    s->heap_idx = SIZE_MAX;
    s->deadline = now_ns() + r->cfg->timeout_ns;
    r->inflight++;
    g.inflight++;
    rc = lb_probe_start(&s->p, &t->kept);
    if (rc == LB_PROBE_AGAIN) {
        heap_push(s);
        slot_watch(s);
    } else {
        slot_result(s, rc);
    }
}

/* Keep the epoll registration in step with the probe's socket and wants.
 * A socket is registered while its conn.epfd is set: closing it (a dead
 * kept connection replaced by a new one, which often gets the same
 * descriptor number) clears that. */
static void slot_watch(struct slot *s)
{
    struct epoll_event ev = {.events = s->p.want, .data.ptr = s};

    if (s->p.conn.epfd < 0) {
        if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, s->p.conn.fd, &ev) < 0) {
            slot_result(s, lb_probe_fail(&s->p, LB_CHECK_ERR_RESOURCE, errno));
            return;
        }
        s->p.conn.epfd = g.epfd;
        s->reg_want = s->p.want;
    } else if (s->p.want != s->reg_want) {
        epoll_ctl(g.epfd, EPOLL_CTL_MOD, s->p.conn.fd, &ev);
        s->reg_want = s->p.want;
    }
}

/* Record a finished probe: Pingora's thresholds on the health record, an
 * event when it flipped, the connection kept or closed. */
static void slot_result(struct slot *s, int rc)
{
    struct round *r = s->round;
    bool ok = rc == LB_PROBE_OK;

    slot_retire(s, ok, &s->t->kept);
    record(r, s->t, ok, s->p.err_kind, s->p.err_detail);
}

/* Start what the round may start now: everything (up to the process-wide
 * cap) when parallel, else the next backend once the previous is done. */
static void round_launch(struct round *r)
{
    while (r->next < r->n && g.inflight < g.max_inflight &&
           (r->parallel || r->inflight == 0))
        slot_launch(r, &r->t[r->next++]);
}

/* Start due rounds, launch queued probes, end finished rounds.  Probes may
 * finish as they start (a refused connect on loopback), so loop until
 * nothing changes. */
static void schedule(uint64_t now)
{
    bool again = true;

    while (again) {
        again = false;
        for (struct lb_checker_job *job = g.jobs; job; job = job->next) {
            struct round *r = job->round;

            if (r && job->cancel) {
                round_abort(r);
                again = true;
                continue;
            }
            if (!r && job->pending && job->cfg) {
                bool parallel = false;

                for (struct waiter *w = job->pending; w; w = w->next)
                    parallel |= w->parallel;
                r = round_new(job, parallel);
                job->serving = job->pending;
                job->pending = NULL;
                if (!r) {
                    for (struct waiter *w = job->serving; w; w = w->next)
                        w->done = true;
                    job->serving = NULL;
                    pthread_cond_broadcast(&g.cond);
                    continue;
                }
                job->round = r;
            } else if (!r && job->pending) {
                /* the configuration was removed: nothing to check */
                for (struct waiter *w = job->pending; w; w = w->next)
                    w->done = true;
                job->pending = NULL;
                pthread_cond_broadcast(&g.cond);
                continue;
            } else if (!r && job->periodic && job->cfg &&
                       now >= job->next_due) {
                r = round_new(job, job->periodic_parallel);
                job->next_due = now + job->period_ns;
                if (!r)
                    continue;
                job->round = r;
            }
            if (!r)
                continue;
            round_launch(r);
            if (r->next == r->n && r->inflight == 0) {
                round_end(r, true);
                again = true;
            }
        }
    }
}

static void bury_dead(void)
{
    while (g.dead) {
        struct slot *s = g.dead;

        g.dead = s->next_dead;
        free(s);
    }
}

static int wait_ms(uint64_t now)
{
    uint64_t until = UINT64_MAX;

    if (g.nheap)
        until = g.heap[0]->deadline;
    for (struct lb_checker_job *job = g.jobs; job; job = job->next)
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

static void *thread_main(void *arg)
{
    struct epoll_event evs[256];

    (void)arg;
    pthread_setname_np(pthread_self(), "lb-checker");
    pthread_mutex_lock(&g.lock);
    while (!g.quit) {
        uint64_t now = now_ns();
        int n, timeout;

        if (g.capheap < g.max_inflight) {
            struct slot **h = realloc(g.heap, g.max_inflight * sizeof(*h));
            if (h) {
                g.heap = h;
                g.capheap = g.max_inflight;
            }
        }
        schedule(now);
        /* Expired probes fail with the phase they were in. */
        now = now_ns();
        while (g.nheap && g.heap[0]->deadline <= now) {
            struct slot *s = g.heap[0];
            slot_result(s,
                        lb_probe_fail(&s->p, LB_CHECK_ERR_TIMEOUT, s->p.phase));
        }
        schedule(now);
        bury_dead();
        timeout = wait_ms(now);
        pthread_mutex_unlock(&g.lock);
        n = epoll_wait(g.epfd, evs, 256, timeout);
        pthread_mutex_lock(&g.lock);
        for (int i = 0; i < n; i++) {
            struct slot *s = evs[i].data.ptr;
            int rc;

            if (evs[i].data.ptr == &wake_marker) {
                uint64_t v;
                if (read(g.wakefd, &v, sizeof(v)) < 0) {
                    /* EAGAIN: already drained */
                }
                continue;
            }
            if (s->done)
                continue;
            rc = lb_probe_step(&s->p, evs[i].events);
            if (rc == LB_PROBE_AGAIN)
                slot_watch(s);
            else
                slot_result(s, rc);
        }
    }
    /* Stopping with rounds in flight happens only when their users left
     * (a forked child's, or a stop that raced a free): drop them. */
    for (struct lb_checker_job *job = g.jobs; job; job = job->next)
        if (job->round)
            round_abort(job->round);
    bury_dead();
    close(g.epfd);
    close(g.wakefd);
    g.epfd = g.wakefd = -1;
    pthread_mutex_unlock(&g.lock);
    return NULL;
}

/* ---- fork ---- */

/* Take the checker's lock (the thread is then asleep in epoll_wait, holding
 * nothing), so no child inherits it held by a thread that does not exist
 * there. */
void lb_checker_fork_prepare(void) { pthread_mutex_lock(&g.lock); }

void lb_checker_fork_parent(void) { pthread_mutex_unlock(&g.lock); }

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

    for (size_t i = 0; i < g.nheap; i++) {
        struct slot *s = g.heap[i];

        s->p.conn.epfd = -1;
        lb_probe_finish(&s->p, false, NULL);
        free(s);
    }
    g.nheap = 0;
    g.inflight = 0;
    bury_dead();
    if (g.epfd >= 0)
        close(g.epfd);
    if (g.wakefd >= 0)
        close(g.wakefd);
    g.epfd = g.wakefd = -1;
    g.state = STOPPED;
    g.quit = false;
    g.users = 0;
    pthread_cond_init(&g.cond, NULL);
    for (struct lb_checker_job *job = g.jobs; job; job = job->next) {
        struct round *r = job->round;

        if (r) {
            for (size_t i = 0; i < r->n; i++) {
                r->t[i].kept.epfd = -1;
                lb_conn_close(&r->t[i].kept);
            }
            lb_targets_put(job->b, r->tg, r->n);
            cfg_unref_locked(r->cfg, &f);
            lb_check_cfg_free(f);
            free(r->t);
            free(r);
            job->round = NULL;
        }
        job->pending = job->serving = NULL;
        job->cancel = false;
        pool_close(job, true);
        if (job->periodic)
            g.users++;
    }
    if (g.users > 0)
        thread_start_locked(); /* on failure, the next user retries */
    pthread_mutex_unlock(&g.lock);
}

/* ---- public API ---- */

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
    pthread_mutex_lock(&g.lock);
    job = job_get_locked(b);
    if (!job) {
        pthread_mutex_unlock(&g.lock);
        lb_check_cfg_free(c);
        *err = "out of memory";
        return LB_ERROR;
    }
    cfg_unref_locked(job->cfg, &old);
    job->cfg = c;
    job->cfg_gen++;
    pthread_mutex_unlock(&g.lock);
    lb_check_cfg_free(old);
    return LB_OK;
}

int lb_balancer_check_round(lb_balancer *b, int parallel, const char **err)
{
    struct waiter w = {.parallel = parallel != 0};
    struct lb_checker_job *job;

    pthread_mutex_lock(&g.lock);
    job = b->job;
    if (!job || !job->cfg) {
        pthread_mutex_unlock(&g.lock);
        return LB_DECLINED;
    }
    if (use_locked(err) != LB_OK) {
        pthread_mutex_unlock(&g.lock);
        return LB_ERROR;
    }
    w.next = job->pending;
    job->pending = &w;
    wake();
    while (!w.done)
        pthread_cond_wait(&g.cond, &g.lock);
    unuse_locked();
    pthread_mutex_unlock(&g.lock);
    return w.checked;
}

int lb_balancer_checks_start(lb_balancer *b, double frequency, int parallel,
                             const char **err)
{
    struct lb_checker_job *job;
    uint64_t period;

    if (!(frequency > 0) || !isfinite(frequency) || frequency > 1e6) {
        *err = "health check frequency out of range";
        return LB_ERROR;
    }
    pthread_mutex_lock(&g.lock);
    job = b->job;
    if (!job || !job->cfg) {
        pthread_mutex_unlock(&g.lock);
        return LB_DECLINED;
    }
    period = (uint64_t)(frequency * 1e9);
    if (period == 0)
        period = 1;
    if (!job->periodic) {
        if (use_locked(err) != LB_OK) {
            pthread_mutex_unlock(&g.lock);
            return LB_ERROR;
        }
        job->periodic = true;
        job->next_due = now_ns();
    } else {
        /* the next round is due one new period after the last one began */
        job->next_due = job->next_due - job->period_ns + period;
    }
    job->period_ns = period;
    job->periodic_parallel = parallel != 0;
    wake();
    pthread_mutex_unlock(&g.lock);
    return LB_OK;
}

/* Caller holds g.lock and is a user (so the thread runs to see cancel). */
static void stop_periodic_locked(struct lb_checker_job *job, bool force)
{
    if (!job->periodic)
        return;
    job->periodic = false;
    if (job->round && (force || !job->serving)) {
        job->cancel = true;
        wake();
        /* round_end clears it: a round queued callers started meanwhile
         * is theirs, and runs on */
        while (job->cancel)
            pthread_cond_wait(&g.cond, &g.lock);
    }
    /* kept-alive connections are not held open while nothing checks */
    if (!job->round)
        pool_close(job, false);
    unuse_locked();
}

void lb_balancer_checks_stop(lb_balancer *b)
{
    pthread_mutex_lock(&g.lock);
    if (b->job)
        stop_periodic_locked(b->job, false);
    pthread_mutex_unlock(&g.lock);
}

void lb_balancer_checks_free(lb_balancer *b)
{
    struct lb_checker_job *job, **pp;
    struct lb_check_cfg *f;

    pthread_mutex_lock(&g.lock);
    job = b->job;
    if (!job) {
        pthread_mutex_unlock(&g.lock);
        return;
    }
    stop_periodic_locked(job, true);
    /* No caller may still wait on this balancer (lb_balancer_free's
     * contract), so a round left in flight has no user: when the thread
     * still runs for others, have it dropped; else the thread dropped it
     * when it stopped. */
    if (job->round && g.state == RUNNING) {
        job->cancel = true;
        wake();
        while (job->round && g.state == RUNNING)
            pthread_cond_wait(&g.cond, &g.lock);
    }
    for (pp = &g.jobs; *pp; pp = &(*pp)->next) {
        if (*pp == job) {
            *pp = job->next;
            break;
        }
    }
    pool_close(job, false);
    cfg_unref_locked(job->cfg, &f);
    __atomic_store_n(&b->job, NULL, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g.lock);
    lb_check_cfg_free(f);
    free(job);
}
