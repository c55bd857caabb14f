/*
 * round.c - rounds and their slots: a round copies the published set's
 * targets and hands each backend its kept connection; a slot is one probe
 * in flight; a finished probe is recorded with Pingora's thresholds and
 * its connection kept or closed.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>

#include "checker/checker.h"

static void slot_launch(struct round *r, size_t i);
static void record(struct round *r, size_t i, bool ok, int kind, int detail,
                   uint64_t started);

/* The thread's own rare frees under the lock (lb_ck_round_end,
 * lb_ck_round_new's failure) are safe: no thread holding an OpenSSL lock
 * takes lb_ck.lock. */
void lb_ck_cfg_unref(struct lb_check_cfg *c, struct lb_check_cfg **f)
{
    *f = NULL;
    if (c && --c->refs == 0)
        *f = c;
}

/* Close the kept connections.  In a forked child the epoll set and the
 * sockets are shared with the parent: close our descriptors, touch nothing
 * else. */
void lb_ck_pool_close(struct lb_checker_job *job, bool child)
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

/* ---- rounds ---- */

/* Copy the published set (targets.h), then hand each backend its kept
 * connection; the others' servers left the set (or the configuration
 * changed) and theirs are closed. */
struct round *lb_ck_round_new(struct lb_checker_job *job, bool parallel)
{
    struct round *r = calloc(1, sizeof(*r));
    const char *err = NULL;

    if (!r)
        return NULL;
    if (lb_targets_get(job->b, &r->tg, &r->n, &err) != LB_OK) {
        free(r);
        return NULL;
    }
    r->kept = calloc(r->n ? r->n : 1, sizeof(*r->kept));
    if (!r->kept) {
        lb_targets_put(job->b, r->tg, r->n);
        free(r);
        return NULL;
    }
    for (size_t i = 0; i < r->n; i++) {
        r->kept[i].fd = -1;
        r->kept[i].epfd = -1;
    }
    r->job = job;
    r->cfg = job->cfg;
    r->cfg->refs++;
    r->cfg_gen = job->cfg_gen;
    r->parallel = parallel;
    if (job->npool && job->pool_gen == r->cfg_gen) {
        for (size_t i = 0; i < r->n; i++) {
            uint64_t id = r->tg[i].id;
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
                lb_conn_move(&r->kept[i], &job->pool[lo].conn);
        }
    }
    lb_ck_pool_close(job, false);
    return r;
}

/* Free what the round holds once its slots are gone: the handles, the
 * arrays, the round. */
void lb_ck_round_free(struct round *r)
{
    lb_targets_put(r->job->b, r->tg, r->n);
    free(r->kept);
    free(r);
}

static int kept_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct kept *)a)->id, y = ((const struct kept *)b)->id;

    return x < y ? -1 : x > y;
}

/* Give the round's kept connections back to the job's pool, sorted by
 * record id for the next round's lookups.  Two rounds of one job (a
 * periodic and a demand round) may both give some back: the pool then
 * keeps one connection per record, and only connections of the newer
 * configuration. */
static void pool_give_back(struct lb_checker_job *job, struct round *r)
{
    struct kept *pool;
    size_t nk = 0, n, w;

    if (job->npool && job->pool_gen != r->cfg_gen) {
        if (job->pool_gen > r->cfg_gen) {
            for (size_t i = 0; i < r->n; i++)
                lb_conn_close(&r->kept[i]);
            return;
        }
        lb_ck_pool_close(job, false);
    }
    for (size_t i = 0; i < r->n; i++)
        if (r->kept[i].fd >= 0)
            nk++;
    if (!nk)
        return;
    pool = realloc(job->pool, (job->npool + nk) * sizeof(*pool));
    if (!pool) {
        for (size_t i = 0; i < r->n; i++)
            lb_conn_close(&r->kept[i]);
        return;
    }
    n = job->npool;
    for (size_t i = 0; i < r->n; i++) {
        if (r->kept[i].fd < 0)
            continue;
        pool[n].id = r->tg[i].id;
        pool[n].conn = r->kept[i];
        r->kept[i].fd = -1;
        r->kept[i].ssl = NULL;
        n++;
    }
    qsort(pool, n, sizeof(*pool), kept_cmp);
    for (size_t i = w = 0; i < n; i++) {
        if (w && pool[w - 1].id == pool[i].id)
            lb_conn_close(&pool[i].conn);
        else
            pool[w++] = pool[i];
    }
    job->pool = pool;
    job->npool = w;
    job->pool_gen = r->cfg_gen;
}

/* Release the round: kept connections go back to the job's pool, handles
 * are dropped, waiters are told, a periodic job waits for its next round
 * in the due heap.  Only when `observed` are the results complete. */
void lb_ck_round_end(struct round *r, bool observed)
{
    struct lb_checker_job *job = r->job;
    struct lb_check_cfg *f;

    lb_ck_queue_remove(r);
    pool_give_back(job, r);
    if (r->periodic) {
        job->periodic_round = NULL;
        job->cancel = false; /* a cancel is for the round that just ended */
        if (job->periodic)
            lb_ck_heap_push(&lb_ck.due, &job->due);
    } else {
        for (struct waiter *w = job->serving; w; w = w->next) {
            w->done = true;
            w->checked = observed ? (int)r->checked : 0;
        }
        job->serving = NULL;
        job->demand_round = NULL;
        if (job->pending)
            lb_ck_attend(job);
    }
    lb_ck_cfg_unref(r->cfg, &f);
    lb_ck_round_free(r);
    pthread_cond_broadcast(&lb_ck.cond);
    if (f) {
        /* The last reference can only be dropped here when set_check
         * replaced the config meanwhile; freeing it under the lock is
         * rare and short. */
        lb_check_cfg_free(f);
    }
}

/* Take a finished probe out of the heap and the in-flight counts; its
 * slot is freed after the batch (lb_ck_bury_dead). */
static void slot_retire(struct slot *s, bool ok, struct lb_conn *kept)
{
    lb_ck_heap_remove(&lb_ck.expiry, &s->expiry);
    s->done = true;
    lb_probe_finish(&s->p, ok, kept);
    s->round->inflight--;
    lb_ck.inflight--;
    s->next_dead = lb_ck.dead;
    lb_ck.dead = s;
}

/* Abandon a round: close its probes without recording anything.  Its
 * slots are collected first: removing one from the heap moves others
 * across positions a scan would already have passed. */
void lb_ck_round_abort(struct round *r)
{
    struct slot *mine = NULL;

    for (size_t i = 0; i < lb_ck.expiry.n; i++) {
        struct slot *s =
            lb_ck_container_of(lb_ck.expiry.v[i], struct slot, expiry);

        if (s->round == r) {
            s->next_dead = mine;
            mine = s;
        }
    }
    while (mine) {
        struct slot *s = mine;

        mine = s->next_dead;
        slot_retire(s, false, NULL);
    }
    r->next = r->n;
    lb_ck_round_end(r, false);
}

/* A check that could not even start for want of descriptors or memory in
 * this process: no verdict on the backend (lb.h, lb_check_stats). */
static bool skipped(bool ok, int kind, int detail)
{
    return !ok && kind == LB_CHECK_ERR_RESOURCE &&
           (detail == EMFILE || detail == ENFILE || detail == ENOMEM ||
            detail == ENOBUFS || detail == ENOSPC);
}

/* Pingora's thresholds on the record; a flip goes to the balancer's event
 * queue (targets.h).  A skipped check leaves the record as it was; the
 * next round checks the backend again. */
static void record(struct round *r, size_t i, bool ok, int kind, int detail,
                   uint64_t started)
{
    const struct lb_check_cfg *cfg = r->cfg;

    if (skipped(ok, kind, detail)) {
        r->job->stats.skipped++;
        return;
    }
    /* LB_STALE: the backend left the set during the round */
    lb_target_check_time(&r->tg[i],
                         started ? lb_ck_now_ns() - started : UINT64_MAX);
    (void)lb_target_observe(r->job->b, &r->tg[i], ok,
                            ok ? cfg->success : cfg->failure, kind, detail);
    if (ok)
        r->job->stats.ok++;
    else
        r->job->stats.failed++;
    r->checked++;
}

/*
 * reuse_connection: a kept connection proves that one server process still
 * answers on it, not that the backend still accepts connections (a unix
 * socket deleted, a listener closed by a restart that left old workers
 * draining).  So a kept connection is replaced by a fresh one once it has
 * served LB_CK_REUSE_ROUNDS checks AND is LB_CK_REUSE_NS old, whichever
 * comes later: at short periods a fresh connection about once a second,
 * at long ones every third round, so a dead listener is found within
 * max(1 s, 3 periods) plus a timeout, and reuse still saves most
 * connections.
 */
#define LB_CK_REUSE_ROUNDS 3
#define LB_CK_REUSE_NS 1000000000ull

static void kept_expire(struct lb_conn *kept, uint64_t now)
{
    if (kept->fd >= 0 && kept->uses >= LB_CK_REUSE_ROUNDS &&
        now - kept->born_ns >= LB_CK_REUSE_NS)
        lb_conn_close(kept);
}

static void slot_launch(struct round *r, size_t i)
{
    struct slot *s = calloc(1, sizeof(*s));
    int rc;

    if (!s || lb_ck_heap_reserve(&lb_ck.expiry, lb_ck.expiry.n + 1) != LB_OK) {
        free(s);
        record(r, i, false, LB_CHECK_ERR_RESOURCE, ENOMEM, 0);
        return;
    }
    s->round = r;
    s->i = i;
    s->p.cfg = r->cfg;
    s->p.be = &r->tg[i].backend;
    s->expiry.idx = SIZE_MAX;
    s->started = lb_ck_now_ns();
    s->expiry.key = s->started + r->cfg->timeout_ns;
    kept_expire(&r->kept[i], s->started);
    r->inflight++;
    lb_ck.inflight++;
    rc = lb_probe_start(&s->p, &r->kept[i]);
    if (rc == LB_PROBE_AGAIN) {
        lb_ck_heap_push(&lb_ck.expiry, &s->expiry);
        lb_ck_slot_watch(s);
    } else {
        lb_ck_slot_result(s, rc);
    }
}

/* Keep the epoll registration in step with the probe's socket and wants.
 * A socket is registered while its conn.epfd is set: closing it (a dead
 * kept connection replaced by a new one, which often gets the same
 * descriptor number) clears that. */
void lb_ck_slot_watch(struct slot *s)
{
    struct epoll_event ev = {.events = s->p.want, .data.ptr = s};

    if (s->p.conn.epfd < 0) {
        if (epoll_ctl(lb_ck.epfd, EPOLL_CTL_ADD, s->p.conn.fd, &ev) < 0) {
            lb_ck_slot_result(
                s, lb_probe_fail(&s->p, LB_CHECK_ERR_RESOURCE, errno));
            return;
        }
        s->p.conn.epfd = lb_ck.epfd;
        s->reg_want = s->p.want;
    } else if (s->p.want != s->reg_want) {
        epoll_ctl(lb_ck.epfd, EPOLL_CTL_MOD, s->p.conn.fd, &ev);
        s->reg_want = s->p.want;
    }
}

/* Record a finished probe: Pingora's thresholds on the health record, an
 * event when it flipped, the connection kept or closed. */
void lb_ck_slot_result(struct slot *s, int rc)
{
    struct round *r = s->round;
    bool ok = rc == LB_PROBE_OK;

    slot_retire(s, ok, &r->kept[s->i]);
    if (r->kept[s->i].fd >= 0) {
        if (!r->kept[s->i].born_ns)
            r->kept[s->i].born_ns = s->started;
        r->kept[s->i].uses++;
    }
    record(r, s->i, ok, s->p.err_kind, s->p.err_detail, s->started);
}

void lb_ck_round_launch_one(struct round *r) { slot_launch(r, r->next++); }

void lb_ck_bury_dead(void)
{
    while (lb_ck.dead) {
        struct slot *s = lb_ck.dead;

        lb_ck.dead = s->next_dead;
        free(s);
    }
}
