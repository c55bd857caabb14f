/*
 * share.c - a balancer's shared mode (lb.h "Shared balancers"): making it
 * shared, the periodic step (turn, sweep, adoption of the region's set),
 * the role, and the shared text of custom-check errors.
 */
#include <math.h>
#include <stdlib.h>

#include "core.h"

int lb_balancer_share(lb_balancer *b, uint32_t capacity, const char **err)
{
    struct lb_shared *sh;
    int rc = LB_ERROR;

    pthread_mutex_lock(&b->write_lock);
    if (b->shared) {
        *err = "the balancer is shared already";
    } else if (b->snap->n != 0) {
        *err = "a balancer is made shared before its first update";
    } else if ((sh = lb_shared_new(capacity, err)) != NULL) {
        struct lb_snapshot *prev = b->snap, *neu;

        neu = lb_snapshot_new(b->ops, &b->cfg, NULL, 0, NULL,
                              lb_shared_store(sh), prev->gen + 1, err);
        if (!neu) {
            lb_shared_store(sh)->ops->close(lb_shared_store(sh));
        } else {
            /* the empty snapshot held nothing of the heap store */
            lb_rcu_publish(&b->snap, neu);
            lb_snapshot_retire(prev);
            b->store->ops->close(b->store);
            b->store = lb_shared_store(sh);
            b->shared = sh;
            b->adopted = lb_shared_version(sh);
            lb_shared_track(sh, &b->adopted);
            rc = LB_OK;
        }
    }
    pthread_mutex_unlock(&b->write_lock);
    return rc;
}

int lb_balancer_role(lb_balancer *b)
{
    if (!b->shared)
        return LB_ROLE_PRIVATE;
    return lb_shared_is_prober(b->shared) ? LB_ROLE_PROBER : LB_ROLE_READER;
}

/* Adopt the region's set when it moved on.  1 adopted, 0 up to date,
 * LB_ERROR with *err. */
static int sync_set(lb_balancer *b, const char **err)
{
    struct lb_shared *sh = b->shared;
    uint32_t cap = lb_shared_capacity(sh);
    lb_backend *bk;
    uint32_t *slots;
    uint64_t v;
    size_t n;
    int rc = 0;

    /* b->adopted moves under the write lock only; a stale read here
     * costs one needless copy */
    if (lb_shared_version(sh) == __atomic_load_n(&b->adopted, __ATOMIC_RELAXED))
        return 0;
    bk = malloc(cap * sizeof(*bk));
    slots = malloc(cap * sizeof(*slots));
    if (!bk || !slots) {
        free(bk);
        free(slots);
        *err = "out of memory";
        return LB_ERROR;
    }
    /* under the write lock: this process's own writers publish under it,
     * so the copy never races with them (other processes' writers only
     * write the buffer that is not published: the sequence count) */
    pthread_mutex_lock(&b->write_lock);
    n = lb_shared_set_read(sh, bk, slots, &v);
    if (v != b->adopted)
        rc = lb_shared_adopt(b, bk, slots, n, v, err) == LB_OK ? 1 : LB_ERROR;
    pthread_mutex_unlock(&b->write_lock);
    free(bk);
    free(slots);
    if (rc == 1)
        lb_passive_changed(b, true); /* a new set: panic counts anew */
    return rc;
}

int lb_balancer_shared_step(lb_balancer *b, double lease, int *adopted,
                            const char **err)
{
    uint64_t lease_ns;
    int rc, role;

    *adopted = 0;
    if (!b->shared)
        return LB_ROLE_PRIVATE;
    if (!(lease > 0) || !isfinite(lease) || lease > 86400)
        lease = 1;
    lease_ns = (uint64_t)(lease * 1e9);
    role = lb_shared_turn(b->shared, lease_ns) == LB_SHARED_PROBER
               ? LB_ROLE_PROBER
               : LB_ROLE_READER;
    rc = sync_set(b, err);
    if (rc < 0)
        return LB_ERROR;
    *adopted = rc;
    return role;
}

void lb_balancer_shared_yield(lb_balancer *b)
{
    if (b->shared)
        lb_shared_turn_release(b->shared);
}

void lb_balancer_shared_versions(lb_balancer *b, uint64_t *adopted,
                                 uint64_t *published)
{
    *adopted = *published = 0;
    if (!b->shared)
        return;
    *adopted = __atomic_load_n(&b->adopted, __ATOMIC_RELAXED);
    *published = lb_shared_version(b->shared);
}

uint32_t lb_balancer_shared_processes(lb_balancer *b)
{
    return b->shared ? lb_shared_processes(b->shared) : 0;
}

int lb_balancer_error_text_set(lb_balancer *b, uint64_t gen, size_t i,
                               const char *text, size_t len)
{
    int rc = LB_STALE;

    if (!b->shared)
        return LB_OK;
    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_shared_error_set(
                b->shared, lb_shared_slot_of(b->shared, s->rec[i]), text, len);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

size_t lb_balancer_error_text(lb_balancer *b, size_t i, char *buf, size_t len)
{
    size_t n = 0;

    if (len)
        buf[0] = '\0';
    if (!b->shared)
        return 0;
    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n)
            n = lb_shared_error_get(
                b->shared, lb_shared_slot_of(b->shared, s->rec[i]), buf, len);
    }
    lb_rcu_read_unlock();
    return n;
}

void lb_balancer_discovery_count(lb_balancer *b, int ok)
{
    _Atomic uint64_t *c =
        b->shared ? lb_shared_discovery_counts(b->shared) : b->discovered;

    atomic_fetch_add_explicit(&c[ok ? 0 : 1], 1, memory_order_relaxed);
}

void lb_balancer_discovery_counts(lb_balancer *b, uint64_t *ok,
                                  uint64_t *failed)
{
    _Atomic uint64_t *c =
        b->shared ? lb_shared_discovery_counts(b->shared) : b->discovered;

    *ok = atomic_load_explicit(&c[0], memory_order_relaxed);
    *failed = atomic_load_explicit(&c[1], memory_order_relaxed);
}
