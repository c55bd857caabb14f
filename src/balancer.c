/*
 * balancer.c - the balancer: publish snapshots, walk selectors.
 *
 * Writers (update, free) hold b->write_lock and build aside; readers
 * (select, the iterator, ready) run inside one RCU read-side section each,
 * take no lock and allocate nothing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

struct sort_item {
    lb_backend b;
    uint32_t input;
};

/* Every live balancer, so the fork handler can take their write locks. */
static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static lb_balancer *all;

static int sort_item_cmp(const void *pa, const void *pb);
static int same_set(const struct lb_snapshot *s, const struct sort_item *items,
                    size_t n);
static void apply_enable(struct lb_health *h, int8_t enable);
static int inherit_records(lb_balancer *b, const struct lb_snapshot *old,
                           const lb_backend *sorted, size_t m,
                           struct lb_health **health);
static int iter_reserve(lb_iter *it, size_t n);
static void iter_reset(lb_iter *it);
static int iter_mark(lb_iter *it, uint32_t idx);

lb_balancer *lb_balancer_new(const lb_config *cfg, const char **err)
{
    lb_balancer *b;
    const struct lb_selection_row *row = lb_selection_at(cfg->selection);
    const struct lb_selector_ops *ops = row ? row->ops : NULL;

    if (!ops) {
        *err = "unknown selection algorithm";
        return NULL;
    }
    if (cfg->point_multiple > LB_MAX_POINT_MULTIPLE) {
        *err = "point_multiple out of range (1-1000)";
        return NULL;
    }
    lb_rcu_init();
    b = calloc(1, sizeof(*b));
    if (!b) {
        *err = "out of memory";
        return NULL;
    }
    b->cfg = *cfg;
    if (b->cfg.point_multiple == 0)
        b->cfg.point_multiple = 160;
    b->ops = ops;
    pthread_mutex_init(&b->write_lock, NULL);
    b->snap = lb_snapshot_new(ops, &b->cfg, NULL, 0, NULL, 1, err);
    if (!b->snap) {
        pthread_mutex_destroy(&b->write_lock);
        free(b);
        return NULL;
    }
    lb_tsan_release(b->snap);
    pthread_mutex_lock(&all_lock);
    b->next = all;
    if (all)
        all->prev = b;
    all = b;
    pthread_mutex_unlock(&all_lock);
    return b;
}

void lb_balancer_free(lb_balancer *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&all_lock);
    if (b->prev)
        b->prev->next = b->next;
    else
        all = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&all_lock);
    lb_balancer_checks_free(b);
    pthread_mutex_lock(&b->write_lock);
    lb_snapshot_retire(b->snap);
    b->snap = NULL;
    pthread_mutex_unlock(&b->write_lock);
    pthread_mutex_destroy(&b->write_lock);
    free(b);
}

void lb_balancers_fork_prepare(void)
{
    pthread_mutex_lock(&all_lock);
    for (lb_balancer *b = all; b; b = b->next)
        pthread_mutex_lock(&b->write_lock);
}

static void balancers_unlock(void)
{
    for (lb_balancer *b = all; b; b = b->next)
        pthread_mutex_unlock(&b->write_lock);
    pthread_mutex_unlock(&all_lock);
}

void lb_balancers_fork_parent(void) { balancers_unlock(); }
void lb_balancers_fork_child(void) { balancers_unlock(); }

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

static void apply_enable(struct lb_health *h, int8_t enable)
{
    if (enable >= 0)
        lb_health_set_enable(h, enable != 0);
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
                           struct lb_health **health)
{
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
            health[j] = NULL;
            while (o < o1 && old->backends[o].weight < sorted[j].weight)
                o++;
            if (o < o1 && old->backends[o].weight == sorted[j].weight) {
                health[j] = old->health[o];
                claimed[o] = true;
            }
        }
        next_free = o0;
        for (size_t j = i; j < i1; j++) {
            if (health[j])
                continue;
            while (next_free < o1 && claimed[next_free])
                next_free++;
            if (next_free < o1) {
                health[j] = old->health[next_free];
                claimed[next_free] = true;
            }
        }
        i = i1;
        oi = o1;
    }
    free(claimed);
    for (i = 0; i < m; i++) {
        if (health[i]) {
            lb_health_ref(health[i]);
            continue;
        }
        health[i] = lb_health_new(!b->cfg.start_unhealthy);
        if (!health[i]) {
            for (size_t j = 0; j < i; j++)
                lb_health_unref(health[j]);
            return LB_ERROR;
        }
    }
    return LB_OK;
}

int lb_balancer_update(lb_balancer *b, const lb_backend *in, size_t n,
                       uint32_t *order, size_t *count, const char **err)
{
    struct sort_item *items = NULL;
    struct lb_health **health = NULL;
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
        for (size_t i = 0; i < m; i++)
            apply_enable(old->health[i], items[i].b.enable);
        pthread_mutex_unlock(&b->write_lock);
        rc = 0;
        goto out;
    }

    health = calloc(m ? m : 1, sizeof(*health));
    sorted = malloc((m ? m : 1) * sizeof(*sorted));
    if (!health || !sorted) {
        pthread_mutex_unlock(&b->write_lock);
        *err = "out of memory";
        goto out;
    }
    for (size_t i = 0; i < m; i++)
        sorted[i] = items[i].b;
    if (inherit_records(b, old, sorted, m, health) != LB_OK) {
        pthread_mutex_unlock(&b->write_lock);
        *err = "out of memory";
        goto out;
    }
    neu =
        lb_snapshot_new(b->ops, &b->cfg, sorted, m, health, old->gen + 1, err);
    if (!neu) {
        for (size_t j = 0; j < m; j++)
            lb_health_unref(health[j]);
        pthread_mutex_unlock(&b->write_lock);
        goto out;
    }
    for (size_t i = 0; i < m; i++)
        apply_enable(neu->health[i], items[i].b.enable);
    lb_rcu_publish(&b->snap, neu);
    pthread_mutex_unlock(&b->write_lock);
    lb_snapshot_retire(old);
    rc = 1;
out:
    free(items);
    free(health);
    free(sorted);
    return rc;
}

size_t lb_balancer_count(lb_balancer *b)
{
    size_t n;

    lb_rcu_read_lock();
    n = lb_rcu_deref(&b->snap)->n;
    lb_rcu_read_unlock();
    return n;
}

uint64_t lb_balancer_generation(lb_balancer *b)
{
    uint64_t g;

    lb_rcu_read_lock();
    g = lb_rcu_deref(&b->snap)->gen;
    lb_rcu_read_unlock();
    return g;
}

int lb_balancer_backend(lb_balancer *b, size_t i, lb_backend *out)
{
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n) {
            *out = s->backends[i];
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_health(lb_balancer *b, size_t i, lb_health_info *out)
{
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (i < s->n) {
            lb_health_info_get(s->health[i], out);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_ready(lb_balancer *b, uint64_t gen, size_t i)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n)
            rc = lb_health_ready(s->health[i]);
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_set_enable(lb_balancer *b, uint64_t gen, size_t i, int enable)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n) {
            lb_health_set_enable(s->health[i], enable != 0);
            rc = LB_OK;
        }
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_balancer_observe(lb_balancer *b, uint64_t gen, size_t i, int ok,
                        uint32_t threshold, int err_kind, int err_detail)
{
    int rc = LB_STALE;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen == gen && i < s->n)
            rc = lb_health_observe(s->health[i], ok != 0, threshold, err_kind,
                                   err_detail);
    }
    lb_rcu_read_unlock();
    return rc;
}

/* ---- iteration (Pingora's UniqueIterator) ---- */

lb_iter *lb_iter_new(void) { return calloc(1, sizeof(lb_iter)); }

void lb_iter_free(lb_iter *it)
{
    if (it) {
        free(it->seen);
        free(it);
    }
}

static int iter_reserve(lb_iter *it, size_t n)
{
    uint32_t words = (uint32_t)((n + 63) / 64);

    if (words > it->nwords) {
        uint64_t *seen = calloc(words, sizeof(uint64_t));
        if (!seen)
            return LB_ERROR;
        free(it->seen);
        it->seen = seen;
        it->nwords = words;
        it->ntouched = 0;
    }
    return LB_OK;
}

/* Clear only the words the last walk dirtied: a walk is short (bounded by
 * max_iterations and usually one step), the bitmap may be 8 KiB. */
static void iter_reset(lb_iter *it)
{
    if (it->ntouched > LB_ITER_TOUCH)
        memset(it->seen, 0, it->nwords * sizeof(uint64_t));
    else
        for (uint32_t k = 0; k < it->ntouched; k++)
            it->seen[it->touched[k]] = 0;
    it->ntouched = 0;
}

/* Returns 1 when idx is new to this walk. */
static int iter_mark(lb_iter *it, uint32_t idx)
{
    uint32_t w = idx >> 6;
    uint64_t bit = 1ull << (idx & 63);

    if (it->seen[w] & bit)
        return 0;
    if (it->seen[w] == 0) {
        if (it->ntouched < LB_ITER_TOUCH)
            it->touched[it->ntouched] = w;
        if (it->ntouched <= LB_ITER_TOUCH)
            it->ntouched++;
    }
    it->seen[w] |= bit;
    return 1;
}

/* End a walk that can yield nothing new.  Round robin's steps advance the
 * shared counter (its ops have `skip`): the steps left up to max_steps are
 * taken at once, one atomic add, so the counter moves exactly as if each had
 * been taken (as Pingora's iterator takes them), at no cost per step. */
static inline void walk_skip_rest(struct lb_snapshot *s, lb_iter *it)
{
    if (s->ops->skip && it->steps < it->max_steps) {
        s->ops->skip(s->selector, &it->state, it->max_steps - it->steps);
        it->steps = it->max_steps;
    }
}

/* Any backend of s ready?  n relaxed loads: cheaper than the walk it saves
 * when none is (an outage), and only taken when the first pick was not
 * ready. */
static bool any_ready(const struct lb_snapshot *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (lb_health_ready(s->health[i]))
            return true;
    return false;
}

/* The walk's core, inside the caller's read-side section: the next unique
 * index, or LB_DECLINED once max_steps underlying steps are used. */
static inline int walk_next(struct lb_snapshot *s, lb_iter *it)
{
    /* Once every backend has been returned, no step can yield a new one:
     * stop there instead of stepping on to max_iterations (Pingora's
     * iterator would, returning nothing more), so a walk costs at most the
     * steps it takes to see every backend, however large max_iterations
     * is.  Round robin's remaining steps are taken in one (walk_skip_rest). */
    while (it->steps < it->max_steps && it->nseen < s->n) {
        uint32_t idx = s->ops->next(s->selector, &it->state);
        it->steps++;
        if (idx >= s->n)
            continue;
        if (iter_mark(it, idx)) {
            it->nseen++;
            it->ready = lb_health_ready(s->health[idx]);
            return (int)idx;
        }
    }
    walk_skip_rest(s, it);
    return LB_DECLINED;
}

/* Set up a walk whose first candidate is already known, with its
 * readiness (the selector's first() may have a side effect, round robin's
 * counter, so it is called exactly once per walk by the callers). */
static inline int walk_begin(struct lb_snapshot *s, lb_iter *it, uint32_t first,
                             int ready, uint32_t max)
{
    if (iter_reserve(it, s->n) != LB_OK)
        return LB_ERROR;
    it->steps = 1;
    it->nseen = 1;
    it->max_steps = max;
    iter_reset(it);
    iter_mark(it, first);
    it->ready = ready;
    return (int)first;
}

int lb_iter_first(lb_balancer *b, const char *key, size_t len,
                  uint32_t max_iterations, lb_iter *it)
{
    struct lb_snapshot *s;
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    it->gen = s->gen;
    it->owner = b;
    it->ready = 0;
    it->max_steps = 0;
    if (s->n > 0 && max_iterations > 0) {
        uint32_t first = s->ops->first(s->selector, key, len, &it->state);
        rc = walk_begin(s, it, first, lb_health_ready(s->health[first]),
                        max_iterations);
    }
    lb_rcu_read_unlock();
    return rc;
}

int lb_iter_next(lb_balancer *b, lb_iter *it)
{
    int rc;

    lb_rcu_read_lock();
    {
        struct lb_snapshot *s = lb_rcu_deref(&b->snap);
        if (s->gen != it->gen || it->owner != b)
            rc = LB_STALE;
        else
            rc = walk_next(s, it);
    }
    lb_rcu_read_unlock();
    return rc;
}

/* The common case, a ready first candidate, touches neither the bitmap nor
 * the walk's position: one selector lookup and one health load. */
int lb_balancer_select(lb_balancer *b, const char *key, size_t len,
                       uint32_t max_iterations, lb_iter *it)
{
    struct lb_snapshot *s;
    uint32_t first;
    int rc = LB_DECLINED;

    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    it->gen = s->gen;
    it->owner = b;
    /* End the iterator's previous walk: it->gen now names this snapshot,
     * and an lb_iter_next continuing that walk here would mark indices in
     * a bitmap sized for another set (walk_begin starts select's own). */
    it->max_steps = 0;
    if (s->n == 0 || max_iterations == 0)
        goto out;
    first = s->ops->first(s->selector, key, len, &it->state);
    if (lb_health_ready(s->health[first])) {
        it->ready = 1;
        rc = (int)first;
        goto out;
    }
    rc = walk_begin(s, it, first, 0, max_iterations);
    if (rc >= 0 && !any_ready(s)) {
        /* An outage: nothing to find, whatever the cap.  The walk is over
         * (lb_iter_next declines), with round robin's steps taken. */
        walk_skip_rest(s, it);
        it->max_steps = it->steps;
        rc = LB_DECLINED;
    }
    while (rc >= 0 && !it->ready)
        rc = walk_next(s, it);
out:
    lb_rcu_read_unlock();
    return rc;
}
