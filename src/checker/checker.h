/*
 * checker.h - the private API between the files of src/checker/, the
 * background health checker: one thread per process, serving every
 * balancer.
 *
 *   thread.c     the thread's life (start on first use, stop on last) and
 *                its loop: epoll, expiries, wake-ups
 *   heap.c       a binary min-heap (probes by deadline, jobs by due time)
 *   round.c      rounds and their slots: targets, kept connections,
 *                probes started and finished, results recorded
 *   schedule.c   which round starts when and which probe launches next:
 *                the cap of probes in flight shared by turns
 *   fork.c       the checker's fork hooks (called by the fork handler)
 *   api.c        the public functions of lb.h's health-checks section
 *
 * Each balancer with a built-in check has a job: its configuration, its
 * schedule, its rounds in flight, the connections kept alive between
 * rounds and its counts.  A round copies the published set's targets
 * (targets.h: held record handles; results go back through
 * lb_target_observe, which queues flips on the balancer's queue), then runs its
 * probes (src/check/) on the thread's epoll set, one at a time or all at once,
 * each bounded by one deadline kept in the heap.
 *
 * Locking: one mutex, `lb_ck.lock`, guards every job and the thread's
 * state; every function here is called with it held (the `_locked` suffix
 * is left off inside this folder: nothing here runs without it).  The
 * thread holds it while it works and drops it only to sleep in epoll_wait,
 * so when fork() takes it in the prepare handler the thread is asleep and
 * holds nothing else (no OpenSSL, no RCU read-side section, no malloc
 * lock).  Readers (select, ready) never take it; they see results through
 * the records' atomic words.
 *
 * Lifetime: `lb_ck.users` counts periodic jobs plus callers waiting in
 * lb_balancer_check_round.  The first user starts the thread; whoever
 * drops the count to zero stops it and joins it.
 */
#ifndef LB_CHECKER_H
#define LB_CHECKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check/check.h"
#include "targets.h"

/* A heap entry (heap.c); idx is SIZE_MAX while out of the heap. */
struct lb_ck_heap_node {
    uint64_t key;
    size_t idx;
};

struct lb_ck_heap {
    struct lb_ck_heap_node **v;
    size_t n, cap;
};

#define lb_ck_container_of(p, type, member)                                    \
    ((type *)(void *)((char *)(p)-offsetof(type, member)))

/* The queues of rounds waiting for their turn to launch a probe
 * (schedule.c). */
enum { LB_CK_Q_NONE, LB_CK_Q_FIRST, LB_CK_Q_MORE };

struct round {
    struct lb_checker_job *job;
    bool periodic; /* the job's periodic round, else on demand */
    int queue;     /* LB_CK_Q_* */
    struct round *qprev, *qnext;
    struct lb_check_cfg *cfg;
    uint64_t cfg_gen;
    bool parallel;
    size_t n, next, inflight, checked;
    struct lb_target *tg; /* n targets, handles held (targets.h) */
    struct lb_conn *kept; /* n kept-alive connections, claimed */
};

/* A probe in flight, registered in the epoll set and the deadline heap. */
struct slot {
    struct lb_probe p;
    struct round *round;
    size_t i;                      /* the target's index in the round */
    struct lb_ck_heap_node expiry; /* key: the deadline */
    uint64_t started;
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
    struct lb_checker_job *prev, *next; /* lb_ck.jobs */
    struct lb_check_cfg *cfg;           /* NULL: no built-in check */
    uint64_t cfg_gen;                   /* bumped by every set_check */
    bool periodic, periodic_parallel;
    bool cancel; /* abort the periodic round (cleared when it ended) */
    bool drop;   /* abort every round (lb_balancer_checks_free) */
    uint64_t period_ns;
    struct lb_ck_heap_node due;  /* key: the next periodic round's start */
    struct lb_checker_job *attn; /* lb_ck.attn: has a request to serve */
    bool in_attn;
    struct round *periodic_round; /* in flight, or NULL */
    struct round *demand_round;   /* lb_balancer_check_round's, or NULL */
    struct waiter *pending;       /* want a round that has not started */
    struct waiter *serving;       /* wait for the demand round */
    struct kept *pool;            /* sorted by record id */
    size_t npool;
    uint64_t pool_gen;    /* the cfg_gen the pool's connections belong to */
    lb_check_stats stats; /* counts of the results recorded */
};

enum { LB_CK_STOPPED, LB_CK_RUNNING, LB_CK_STOPPING };

struct lb_checker {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* round done, thread stopped */
    int state;
    bool quit;
    pthread_t thread;
    unsigned users;
    int epfd, wakefd;
    struct lb_checker_job *jobs;
    struct lb_checker_job *attn; /* jobs with a request (LIFO) */
    struct lb_ck_heap expiry;    /* slots in flight, by deadline */
    struct lb_ck_heap due;       /* periodic jobs between rounds, by due */
    size_t nperiodic;            /* room reserved in `due` */
    size_t inflight, max_inflight, reserve;
    struct round *first_head, *first_tail; /* rounds with none in flight */
    struct round *more_head, *more_tail;   /* rounds wanting more */
    struct slot *dead; /* finished this batch; freed after it */
};

/* The one checker of the process (thread.c). */
extern struct lb_checker lb_ck __attribute__((visibility("hidden")));

/*
 * Contracts, for every function below: the caller holds lb_ck.lock
 * (except lb_ck_now_ns, pure).  Functions that touch slots, rounds in
 * flight, the epoll set or the queues run on the checker thread only
 * (rounds, heap of slots, schedule), or in a forked child before the
 * thread restarts (fork.c); the others (use, unuse, wake, attend, the due
 * heap, the pool close) also on callers' threads.  None takes an RCU
 * read-side section except lb_ck_round_new, briefly, through targets.h.
 * Nothing here fails except where a result says so.
 */

/* api.c: stop and release everything the checker holds for `b` (periodic
 * rounds, a round in flight and its targets, kept-alive connections, the
 * configuration); a no-op when it has none.  Handed to the core with the
 * job (lb_balancer_job_set), which calls it from lb_balancer_free when no
 * other thread uses `b`.  Takes lb_ck.lock itself: the one function here
 * called without it. */
void lb_balancer_checks_free(lb_balancer *b);

/* thread.c */
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t lb_ck_now_ns(void);
/* Wake the thread from epoll_wait (an eventfd write; never blocks). */
void lb_ck_wake(void);
/* Start the thread unless it runs (waiting for one stopping to be
 * joined); takes the cap of probes from RLIMIT_NOFILE.  LB_OK or LB_ERROR
 * (nothing started, descriptors closed). */
int lb_ck_thread_start(void);
/* Count a user (starting the thread), or LB_ERROR with *err. */
int lb_ck_use(const char **err);
/* Drop a user; the last one stops and joins the thread, dropping the
 * lock while it waits. */
void lb_ck_unuse(void);

/* heap.c: push needs room (lb_ck_heap_reserve: LB_OK or LB_ERROR, out of
 * memory); remove and update accept a node out of the heap. */
int lb_ck_heap_reserve(struct lb_ck_heap *h, size_t n);
void lb_ck_heap_push(struct lb_ck_heap *h, struct lb_ck_heap_node *x);
void lb_ck_heap_remove(struct lb_ck_heap *h, struct lb_ck_heap_node *x);
void lb_ck_heap_update(struct lb_ck_heap *h, struct lb_ck_heap_node *x,
                       uint64_t key);
struct lb_ck_heap_node *lb_ck_heap_top(const struct lb_ck_heap *h);

/* round.c */
/* The last unref hands the config back through *f, so callers that can
 * free it after dropping the lock do (SSL_CTX_free takes OpenSSL's locks). */
void lb_ck_cfg_unref(struct lb_check_cfg *c, struct lb_check_cfg **f);
/* Close the job's kept connections (in a forked child: our descriptors
 * only, never the epoll set shared with the parent). */
void lb_ck_pool_close(struct lb_checker_job *job, bool child);
/* A round over the published set: the targets' handles held, the job's
 * kept connections claimed, a config reference taken.  NULL when out of
 * memory (nothing held). */
struct round *lb_ck_round_new(struct lb_checker_job *job, bool parallel);
/* Launch the round's next probe (the caller checked it has one and the
 * cap has room).  The probe may finish at once. */
void lb_ck_round_launch_one(struct round *r);
/* Free a round whose slots are gone (no waiter told, no pool fed). */
void lb_ck_round_free(struct round *r);
/* Release the round and tell its waiters; results are complete only when
 * `observed`.  A periodic round puts its job back in the due heap, a
 * demand round serves the callers that queued meanwhile next. */
void lb_ck_round_end(struct round *r, bool observed);
/* Abandon a round: close its probes, record nothing more, end it. */
void lb_ck_round_abort(struct round *r);
/* A probe finished with rc (LB_PROBE_OK / LB_PROBE_FAIL): record it.  The
 * round lives on: the caller then calls lb_ck_round_progress. */
void lb_ck_slot_result(struct slot *s, int rc);
/* Keep the epoll registration in step with the probe's wants. */
void lb_ck_slot_watch(struct slot *s);
/* Free the slots finished in this batch. */
void lb_ck_bury_dead(void);

/* schedule.c */
/* Serve the jobs' requests, start due rounds, launch probes by turns. */
void lb_ck_schedule(uint64_t now);
/* After a probe of r launched or finished: end r when it is complete,
 * else give it its turn in a queue when it may launch more.  r may be
 * freed. */
void lb_ck_round_progress(struct round *r);
/* Take r out of its queue (a no-op when it is in none). */
void lb_ck_queue_remove(struct round *r);
/* Ask the thread to look at the job (a request to serve); wakes it. */
void lb_ck_attend(struct lb_checker_job *job);
/* Milliseconds epoll_wait may sleep (-1: nothing is due). */
int lb_ck_wait_ms(uint64_t now);

#endif /* LB_CHECKER_H */
