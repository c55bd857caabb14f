/*
 * update.c - lb_balancer_update: build the next snapshot aside, keep the
 * records of backends that stay, publish with one pointer swap.
 */
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