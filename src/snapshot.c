/*
 * snapshot.c - building and retiring immutable snapshots.
 */
#include <stdlib.h>
#include <string.h>

#include "core.h"

#ifdef LB_POISON
/* Debug builds (the stress tests) scribble over a retired snapshot before
 * freeing it, so a reader that outlived its grace period reads garbage
 * indices and trips the checks (or ASan) instead of passing by luck. */
#define POISON_BYTE 0x6b
#endif

struct lb_snapshot *
lb_snapshot_new(const struct lb_selector_ops *ops, const lb_config *cfg,
                const lb_backend *sorted, size_t n, struct lb_record **rec,
                struct lb_store *store, uint64_t gen, const char **err)
{
    struct lb_snapshot *s;
    size_t rsize = n * sizeof(struct lb_record *);
    size_t bsize = n * sizeof(lb_backend);

    s = calloc(1, sizeof(*s) + rsize + bsize);
    if (!s) {
        *err = "out of memory";
        return NULL;
    }
    s->rec = (struct lb_record **)(s + 1);
    s->backends = (lb_backend *)((char *)s->rec + rsize);
    s->n = n;
    s->gen = gen;
    s->ops = ops;
    s->store = store;
    if (n) {
        memcpy(s->rec, rec, rsize);
        memcpy(s->backends, sorted, bsize);
    }
    s->view.records = s->rec;
    s->view.n = n;
    s->view.store = store;
    if (cfg->slow_start_window > 0) {
        s->view.slow_window_ns = (uint64_t)(cfg->slow_start_window * 1e9);
        s->view.slow_exponent = 1.0 / cfg->slow_start_aggression;
        s->view.slow_min_weight = cfg->slow_start_min_weight;
        /* new records may be ramping: the first tick looks */
        atomic_init(&s->view.ramping, n > 0);
    }
    s->selector = ops->build(s->backends, n, cfg, &s->view, err);
    if (!s->selector) {
        free(s);
        return NULL;
    }
    return s;
}

static void snapshot_free(lb_rcu_head *head)
{
    struct lb_snapshot *s = caa_container_of(head, struct lb_snapshot, rcu);

    lb_tsan_acquire(s);
    s->ops->destroy(s->selector);
    lb_store_release_many(s->store, s->rec, s->n);
#ifdef LB_POISON
    memset((char *)s + sizeof(s->rcu), POISON_BYTE,
           sizeof(*s) - sizeof(s->rcu) +
               s->n * (sizeof(struct lb_record *) + sizeof(lb_backend)));
#endif
    free(s);
}

void lb_snapshot_retire(struct lb_snapshot *s)
{
    lb_rcu_defer(&s->rcu, snapshot_free);
}

long lb_snapshot_find_record(const struct lb_snapshot *s, const lb_backend *key,
                             const struct lb_record *rec)
{
    size_t lo = 0, hi = s->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lb_backend_compare_address(&s->backends[mid], key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < s->n && lb_backend_compare_address(&s->backends[lo], key) == 0;
         lo++)
        if (s->rec[lo] == rec)
            return (long)lo;
    return -1;
}

uint32_t lb_view_in_flight(const struct lb_record_view *v, size_t i)
{
    return lb_store_in_flight(v->store, v->records[i]);
}

bool lb_view_ready(const struct lb_record_view *v, size_t i)
{
    return lb_record_ready(v->records[i]);
}

uint64_t lb_view_latency_ns(const struct lb_record_view *v, size_t i,
                            uint64_t now_ms, double decay_ms)
{
    return lb_record_latency_peak_get(v->records[i], now_ms, decay_ms);
}
