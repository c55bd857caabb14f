/*
 * update.c - lb_balancer_update: build the next snapshot aside, keep the
 * records of backends that stay, publish with one pointer swap.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

struct sort_item {
    lb_backend b;
    uint32_t input;
};

static int sort_item_cmp(const void *pa, const void *pb);
static int same_set(const struct lb_snapshot *s, const struct sort_item *items,
                    size_t n);
static bool apply_enable(struct lb_record *r, int8_t enable);
static int inherit_records(lb_balancer *b, const struct lb_snapshot *old,
                           const lb_backend *sorted, size_t m,
                           struct lb_record **rec);

static int sort_item_cmp(const void *pa, const void *pb)
{
    const struct sort_item *a = pa, *b = pb;
    int c = lb_backend_compare(&a->b, &b->b);

    if (c)
        return c;
    return a->input < b->input ? -1 : a->input > b->input;
}

static int same_set(const struct lb_snapshot *s, const struct sort_item *items,
                    size_t n)
{
    if (s->n != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lb_backend_compare(&s->backends[i], &items[i].b) != 0)
            return 0;
    return 1;
}

/* true when it enabled a disabled record (slow start begins) */
static bool apply_enable(struct lb_record *r, int8_t enable)
{
    return enable >= 0 && lb_record_set_enable(r, enable != 0);
}

/*
 * Give each backend of sorted[0..m) its record: the old snapshot's record
 * of the same (address, weight), else a record of the same address that no
 * exact match claimed (a weight-only change keeps health, enablement and
 * counters, as nginx, Envoy and Kong do), else a new one.  Both arrays are
 * sorted by address then weight, so one merge walk over address groups
 * pairs them without a hash table: exact matches first, then the group's
 * unclaimed old records to its unmatched new entries, in weight order.
 * Caller holds b->write_lock.  On LB_ERROR (out of memory) no reference is
 * left taken.
 */
static int inherit_records(lb_balancer *b, const struct lb_snapshot *old,
                           const lb_backend *sorted, size_t m,
                           struct lb_record **rec)
{
    struct lb_store *st = b->store;
    size_t i = 0, oi = 0;
    bool *claimed = calloc(old->n ? old->n : 1, sizeof(*claimed));

    if (!claimed)
        return LB_ERROR;
    while (i < m) {
        size_t i1 = i, o0, o1, next_free;
        int c = 1;

        while (i1 < m &&
               lb_backend_compare_address(&sorted[i1], &sorted[i]) == 0)
            i1++;
        while (oi < old->n && (c = lb_backend_compare_address(
                                   &old->backends[oi], &sorted[i])) < 0)
            oi++;
        o0 = o1 = oi;
        if (c == 0)
            while (o1 < old->n && lb_backend_compare_address(&old->backends[o1],
                                                             &sorted[i]) == 0)
                o1++;
        for (size_t j = i, o = o0; j < i1; j++) {
            rec[j] = NULL;
            while (o < o1 && old->backends[o].weight < sorted[j].weight)
                o++;
            if (o < o1 && old->backends[o].weight == sorted[j].weight) {
                rec[j] = old->rec[o];
                claimed[o] = true;
            }
        }
        next_free = o0;
        for (size_t j = i; j < i1; j++) {
            if (rec[j])
                continue;
            while (next_free < o1 && claimed[next_free])
                next_free++;
            if (next_free < o1) {
                rec[j] = old->rec[next_free];
                claimed[next_free] = true;
                if (st->ops->rekey) /* a store that finds records by key */
                    st->ops->rekey(st, rec[j], &sorted[j]);
            }
        }
        i = i1;
        oi = o1;
    }
    free(claimed);
    for (i = 0; i < m; i++) {
        if (rec[i]) {
            lb_store_ref(st, rec[i]);
            continue;
        }
        rec[i] = st->ops->acquire(st, &sorted[i], !b->cfg.start_unhealthy);
        if (!rec[i]) {
            for (size_t j = 0; j < i; j++)
                lb_store_release(st, rec[j]);
            return LB_ERROR;
        }
    }
    return LB_OK;
}

int lb_balancer_update(lb_balancer *b, const lb_backend *in, size_t n,
                       uint32_t *order, size_t *count, const char **err)
{
    struct sort_item *items = NULL;
    struct lb_record **rec = NULL;
    lb_backend *sorted = NULL;
    struct lb_snapshot *old, *neu;
    size_t m = 0;
    int rc = LB_ERROR;

    if (n > 0 && !in) {
        *err = "no backends given";
        return LB_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        if (in[i].weight < 1 || in[i].weight > LB_MAX_WEIGHT) {
            *err = "weight out of range (1-1000)";
            return LB_ERROR;
        }
        if (in[i].family > LB_AF_UNIX) {
            *err = "unknown address family";
            return LB_ERROR;
        }
        /* Order, hashing and the checker read host[0..host_len): a struct
         * not filled by lb_backend_parse must not send them past it. */
        if (in[i].addr_len >= LB_ADDR_MAX || in[i].host_len >= LB_ADDR_MAX) {
            *err = "malformed backend (address longer than its buffer)";
            return LB_ERROR;
        }
    }
    items = malloc((n ? n : 1) * sizeof(*items));
    if (!items) {
        *err = "out of memory";
        return LB_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].b = in[i];
        items[i].input = (uint32_t)i;
    }
    qsort(items, n, sizeof(*items), sort_item_cmp);

    /* Collapse identical (address, weight) entries, as a BTreeSet does; an
     * explicit enable on any of them counts, the last one wins. */
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && lb_backend_compare(&items[m - 1].b, &items[i].b) == 0) {
            if (items[i].b.enable >= 0)
                items[m - 1].b.enable = items[i].b.enable;
            continue;
        }
        items[m++] = items[i];
    }
    if (m > LB_MAX_BACKENDS) {
        *err = "too many backends (at most 65535)";
        goto out;
    }
    if (order)
        for (size_t i = 0; i < m; i++)
            order[i] = items[i].input;
    if (count)
        *count = m;

    if (b->shared) {
        sorted = malloc((m ? m : 1) * sizeof(*sorted));
        if (!sorted) {
            *err = "out of memory";
            goto out;
        }
        for (size_t i = 0; i < m; i++)
            sorted[i] = items[i].b;
        pthread_mutex_lock(&b->write_lock);
        rc = lb_update_shared(b, sorted, m, err);
        pthread_mutex_unlock(&b->write_lock);
        if (rc >= 0) /* a set or enablement: panic and slow start look */
            lb_passive_changed(b, true);
        goto out;
    }
    pthread_mutex_lock(&b->write_lock);
    old = b->snap;
    if (same_set(old, items, m)) {
        bool up = false;

        for (size_t i = 0; i < m; i++)
            up |= apply_enable(old->rec[i], items[i].b.enable);
        pthread_mutex_unlock(&b->write_lock);
        lb_passive_changed(b, up); /* enablement counts for panic */
        rc = 0;
        goto out;
    }

    rec = calloc(m ? m : 1, sizeof(*rec));
    sorted = malloc((m ? m : 1) * sizeof(*sorted));
    if (!rec || !sorted) {
        pthread_mutex_unlock(&b->write_lock);
        *err = "out of memory";
        goto out;
    }
    for (size_t i = 0; i < m; i++)
        sorted[i] = items[i].b;
    if (inherit_records(b, old, sorted, m, rec) != LB_OK) {
        pthread_mutex_unlock(&b->write_lock);
        *err = "out of memory";
        goto out;
    }
    neu = lb_snapshot_new(b->ops, &b->cfg, sorted, m, rec, b->store,
                          old->gen + 1, err);
    if (!neu) {
        for (size_t j = 0; j < m; j++)
            lb_store_release(b->store, rec[j]);
        pthread_mutex_unlock(&b->write_lock);
        goto out;
    }
    for (size_t i = 0; i < m; i++)
        apply_enable(neu->rec[i], items[i].b.enable);
    lb_rcu_publish(&b->snap, neu);
    pthread_mutex_unlock(&b->write_lock);
    lb_snapshot_retire(old);
    lb_passive_changed(b, false); /* a new set: panic counts anew */
    rc = 1;
out:
    free(items);
    free(rec);
    free(sorted);
    return rc;
}
/* ---- shared balancers ---- */

int lb_update_shared(lb_balancer *b, const lb_backend *sorted, size_t m,
                     const char **err)
{
    static __thread char msg[160];
    struct lb_shared *sh = b->shared;
    uint32_t cap = lb_shared_capacity(sh);
    lb_backend *ob = NULL;
    uint32_t *os = NULL, *slots = NULL;
    struct lb_record **orec = NULL, **rec = NULL;
    struct lb_snapshot old = {0}, *neu = NULL, *prev;
    uint64_t v;
    size_t on;
    int rc = LB_ERROR;

    if (m > cap) {
        snprintf(msg, sizeof(msg),
                 "%zu backends, more than the shared region holds "
                 "(capacity %u)",
                 m, cap);
        *err = msg;
        return LB_ERROR;
    }
    ob = malloc(cap * sizeof(*ob));
    os = malloc(cap * sizeof(*os));
    orec = malloc(cap * sizeof(*orec));
    rec = calloc(m ? m : 1, sizeof(*rec));
    slots = malloc((m ? m : 1) * sizeof(*slots));
    if (!ob || !os || !orec || !rec || !slots) {
        *err = "out of memory";
        goto done;
    }
    if (lb_shared_lock(sh, LB_SHARED_WAIT) != 0) {
        *err = "the shared region stayed locked by another process for 2 s "
               "(a stopped process?); the previous set stays";
        goto done;
    }
    on = lb_shared_set_read(sh, ob, os, &v);
    if (on == m) {
        size_t i = 0;
        while (i < m && lb_backend_compare(&ob[i], &sorted[i]) == 0)
            i++;
        if (i == m) { /* the same set: enables only */
            for (i = 0; i < m; i++)
                apply_enable(lb_shared_record(sh, os[i]), sorted[i].enable);
            lb_shared_unlock(sh);
            rc = 0;
            if (b->adopted != v)
                rc = lb_shared_adopt(b, ob, os, on, v, err) == LB_OK ? 0
                                                                     : LB_ERROR;
            goto done;
        }
    }
    for (size_t i = 0; i < on; i++)
        orec[i] = lb_shared_record(sh, os[i]);
    old.n = on;
    old.backends = ob;
    old.rec = orec;
    if (inherit_records(b, &old, sorted, m, rec) != LB_OK) {
        lb_shared_abandon(sh);
        lb_shared_unlock(sh);
        snprintf(msg, sizeof(msg),
                 "no free slot in the shared region (capacity %u; the slots "
                 "of removed backends are reused %u s after every process "
                 "has adopted the set without them)",
                 cap, (unsigned)(LB_SHARED_QUARANTINE_NS / 1000000000ull));
        *err = msg;
        goto done;
    }
    for (size_t i = 0; i < m; i++)
        slots[i] = lb_shared_slot_of(sh, rec[i]);
    /* Build here first: a set this process cannot build is not published
     * to the others either. */
    prev = b->snap;
    neu = lb_snapshot_new(b->ops, &b->cfg, sorted, m, rec, b->store,
                          prev->gen + 1, err);
    if (!neu) {
        lb_shared_abandon(sh);
        for (size_t i = 0; i < m; i++)
            lb_store_release(b->store, rec[i]);
        lb_shared_unlock(sh);
        goto done;
    }
    lb_shared_set_publish(sh, sorted, slots, m, &v);
    lb_shared_unlock(sh);
    for (size_t i = 0; i < m; i++)
        apply_enable(neu->rec[i], sorted[i].enable);
    lb_rcu_publish(&b->snap, neu);
    lb_snapshot_retire(prev);
    __atomic_store_n(&b->adopted, v, __ATOMIC_RELAXED);
    lb_shared_adopted(sh, v);
    rc = 1;
done:
    free(ob);
    free(os);
    free(orec);
    free(rec);
    free(slots);
    return rc;
}

int lb_shared_adopt(lb_balancer *b, const lb_backend *backends,
                    const uint32_t *slots, size_t n, uint64_t v,
                    const char **err)
{
    struct lb_shared *sh = b->shared;
    struct lb_record **rec = malloc((n ? n : 1) * sizeof(*rec));
    struct lb_snapshot *prev = b->snap, *neu;

    if (!rec) {
        *err = "out of memory";
        return LB_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        rec[i] = lb_shared_record(sh, slots[i]);
        lb_store_ref(b->store, rec[i]);
    }
    neu = lb_snapshot_new(b->ops, &b->cfg, backends, n, rec, b->store,
                          prev->gen + 1, err);
    if (!neu) {
        lb_store_release_many(b->store, rec, n);
        free(rec);
        return LB_ERROR;
    }
    free(rec);
    lb_rcu_publish(&b->snap, neu);
    lb_snapshot_retire(prev);
    __atomic_store_n(&b->adopted, v, __ATOMIC_RELAXED);
    lb_shared_adopted(sh, v);
    return LB_OK;
}
