/*
 * shared_procs.c - the process table of a shared balancer's region (each
 * process holds a robust mutex of its entry for its whole life, so a gone
 * process is known however it died) and the prober's turn (one 64-bit word
 * moved by compare-and-swap).  Contracts in shared.h.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "shared_region.h"

/* ---- the process table ---- */

/* Whether process i is gone; a gone one is cleared (its in-flight counts
 * dropped, its turn freed) and its entry made free.  Region locked. */
static bool sweep_one(struct region *reg, uint32_t i)
{
    struct proc *p = &reg->procs[i];
    int rc;

    if (!atomic_load_explicit(&p->used, memory_order_relaxed))
        return false;
    rc = pthread_mutex_trylock(&p->alive);
    if (rc == EBUSY)
        return false; /* held: alive (or this very thread) */
    if (rc == EOWNERDEAD)
        pthread_mutex_consistent(&p->alive);
    else if (rc != 0)
        return false;
    /* gone: nobody holds its mutex */
    memset((void *)inflight_col(reg, i), 0, reg->capacity * sizeof(uint32_t));
    {
        uint64_t t = atomic_load_explicit(&reg->turn, memory_order_relaxed);
        if ((t & TURN_OWNER_MASK) == i + 1)
            atomic_compare_exchange_strong(&reg->turn, &t, 0);
    }
    atomic_store_explicit(&p->adopted, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
    atomic_store_explicit(&p->used, 0, memory_order_release);
    pthread_mutex_unlock(&p->alive);
    atomic_fetch_add_explicit(&reg->swept, 1, memory_order_relaxed);
    return true;
}

static void sweep(struct lb_shared *sh)
{
    struct region *reg = sh->reg;
    uint32_t hw = atomic_load_explicit(&reg->procs_hw, memory_order_relaxed);

    for (uint32_t i = 0; i < hw; i++)
        if (i != sh->me)
            sweep_one(reg, i);
}

uint32_t lb_shared_attach(struct lb_shared *sh, uint64_t version)
{
    struct region *reg = sh->reg;

    if (sh->me == LB_SHARED_NONE) {
        /* a short wait: this runs on a worker's timer or request path */
        if (lb_shared_lock(sh, 0.01) != 0)
            return LB_SHARED_NONE; /* the next step tries again */
        sweep(sh);
        /* another thread of this process may have registered meanwhile */
        for (uint32_t i = 0; i < LB_SHARED_PROCS && sh->me == LB_SHARED_NONE;
             i++) {
            struct proc *p = &reg->procs[i];
            int rc;

            if (atomic_load_explicit(&p->used, memory_order_relaxed))
                continue;
            /* free entries' mutexes are unlocked (or their holder died):
             * a try never fails for want of waiting, and takes no part in
             * any lock order */
            rc = pthread_mutex_trylock(&p->alive);
            if (rc == EOWNERDEAD)
                pthread_mutex_consistent(&p->alive);
            else if (rc != 0)
                continue;
            memset((void *)inflight_col(reg, i), 0,
                   reg->capacity * sizeof(uint32_t));
            atomic_store_explicit(&p->pid, (int32_t)getpid(),
                                  memory_order_relaxed);
            atomic_store_explicit(
                &p->adopted,
                version       ? version
                : sh->adopted ? __atomic_load_n(sh->adopted, __ATOMIC_RELAXED)
                              : 0,
                memory_order_relaxed);
            atomic_store_explicit(&p->used, 1, memory_order_release);
            if (atomic_load_explicit(&reg->procs_hw, memory_order_relaxed) <= i)
                atomic_store_explicit(&reg->procs_hw, i + 1,
                                      memory_order_release);
            sh->owner = pthread_self();
            sh->me = i;
            break;
        }
        lb_shared_unlock(sh);
        if (sh->me == LB_SHARED_NONE)
            return LB_SHARED_NONE;
    }
    if (version)
        atomic_store_explicit(&reg->procs[sh->me].adopted, version,
                              memory_order_release);
    return sh->me;
}

void lb_shared_adopted(struct lb_shared *sh, uint64_t version)
{
    if (sh->me != LB_SHARED_NONE)
        atomic_store_explicit(&sh->reg->procs[sh->me].adopted, version,
                              memory_order_release);
}

void lb_shared_fork_child(struct lb_shared *sh)
{
    sh->me = LB_SHARED_NONE;
    atomic_store_explicit(&sh->base.picks, NULL, memory_order_relaxed);
}

void lb_shared_detach(struct lb_shared *sh)
{
    struct region *reg = sh->reg;
    struct proc *p;

    if (sh->me == LB_SHARED_NONE)
        return;
    lb_shared_turn_release(sh);
    p = &reg->procs[sh->me];
    atomic_store_explicit(&sh->base.picks, NULL, memory_order_relaxed);
    if (lb_shared_lock(sh, LB_SHARED_WAIT) != 0) {
        sh->me = LB_SHARED_NONE; /* the sweep frees it once we are gone */
        return;
    }
    /* registered by another thread: its mutex is that thread's to drop,
     * and the sweep frees the entry once the thread or process is gone */
    if (pthread_equal(sh->owner, pthread_self()) &&
        pthread_mutex_unlock(&p->alive) == 0) {
        memset((void *)inflight_col(reg, sh->me), 0,
               reg->capacity * sizeof(uint32_t));
        atomic_store_explicit(&p->adopted, 0, memory_order_relaxed);
        atomic_store_explicit(&p->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&p->used, 0, memory_order_release);
    }
    lb_shared_unlock(sh);
    sh->me = LB_SHARED_NONE;
}

_Atomic uint64_t *lb_shared_discovery_counts(struct lb_shared *sh)
{
    return sh->reg->discovered;
}

uint32_t lb_shared_processes(struct lb_shared *sh)
{
    struct region *reg = sh->reg;
    uint32_t n = 0, hw;

    if (lb_shared_lock(sh, LB_SHARED_WAIT) == 0) {
        sweep(sh);
        lb_shared_unlock(sh);
    }
    hw = atomic_load_explicit(&reg->procs_hw, memory_order_relaxed);
    for (uint32_t i = 0; i < hw; i++)
        n += atomic_load_explicit(&reg->procs[i].used, memory_order_relaxed);
    return n;
}

/* ---- the turn ---- */

int lb_shared_turn(struct lb_shared *sh, uint64_t lease_ns)
{
    struct region *reg = sh->reg;
    uint64_t now_ms = lb_clock_ns() / 1000000, t, owner, until;
    uint32_t me = lb_shared_attach(sh, 0);

    if (me == LB_SHARED_NONE)
        return LB_SHARED_READER;
    t = atomic_load_explicit(&reg->turn, memory_order_acquire);
    owner = t & TURN_OWNER_MASK;
    until = t >> TURN_OWNER_BITS;
    if (owner != me + 1 && owner != 0 && until > now_ms) {
        /* held by another: alive?  (a killed prober frees it at once; a
         * busy lock means a writer at work: ask at the next step) */
        if (lb_shared_lock(sh, 0) == 0) {
            sweep_one(reg, (uint32_t)owner - 1);
            lb_shared_unlock(sh);
        }
        t = atomic_load_explicit(&reg->turn, memory_order_acquire);
        owner = t & TURN_OWNER_MASK;
        until = t >> TURN_OWNER_BITS;
        if (owner != me + 1 && owner != 0 && until > now_ms)
            return LB_SHARED_READER;
    }
    /* ours to renew, or free, or expired: one compare-and-swap */
    {
        uint64_t nt =
            ((now_ms + lease_ns / 1000000 + 1) << TURN_OWNER_BITS) | (me + 1);
        if (atomic_compare_exchange_strong_explicit(
                &reg->turn, &t, nt, memory_order_acq_rel, memory_order_acquire))
            return LB_SHARED_PROBER;
    }
    return (t & TURN_OWNER_MASK) == me + 1 ? LB_SHARED_PROBER
                                           : LB_SHARED_READER;
}

bool lb_shared_is_prober(const struct lb_shared *sh)
{
    uint64_t t = atomic_load_explicit(&sh->reg->turn, memory_order_acquire);

    return sh->me != LB_SHARED_NONE && (t & TURN_OWNER_MASK) == sh->me + 1 &&
           (t >> TURN_OWNER_BITS) > lb_clock_ns() / 1000000;
}

void lb_shared_turn_release(struct lb_shared *sh)
{
    uint64_t t = atomic_load_explicit(&sh->reg->turn, memory_order_acquire);

    if (sh->me != LB_SHARED_NONE && (t & TURN_OWNER_MASK) == sh->me + 1)
        atomic_compare_exchange_strong(&sh->reg->turn, &t, 0);
}
