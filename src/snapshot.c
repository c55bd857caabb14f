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

struct lb_snapshot *lb_snapshot_new(const struct lb_selector_ops *ops,
                                    const lb_config *cfg,
                                    const lb_backend *sorted, size_t n,
                                    struct lb_health **health, uint64_t gen,
                                    const char **err)
{
    struct lb_snapshot *s;
    size_t hsize = n * sizeof(struct lb_health *);
    size_t bsize = n * sizeof(lb_backend);

    s = calloc(1, sizeof(*s) + hsize + bsize);
    if (!s) {
        *err = "out of memory";
        return NULL;
    }
    s->health = (struct lb_health **)(s + 1);
    s->backends = (lb_backend *)((char *)s->health + hsize);
    s->n = n;
    s->gen = gen;
    s->ops = ops;
    if (n) {
        memcpy(s->health, health, hsize);
        memcpy(s->backends, sorted, bsize);
    }
    s->selector = ops->build(s->backends, n, cfg, err);
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
    for (size_t i = 0; i < s->n; i++)
        lb_health_unref(s->health[i]);
    s->ops->destroy(s->selector);
#ifdef LB_POISON
    memset((char *)s + sizeof(s->rcu), POISON_BYTE,
           sizeof(*s) - sizeof(s->rcu) +
               s->n * (sizeof(struct lb_health *) + sizeof(lb_backend)));
#endif
    free(s);
}

void lb_snapshot_retire(struct lb_snapshot *s)
{
    lb_rcu_defer(&s->rcu, snapshot_free);
}
