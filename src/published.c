/*
 * published.c - a whole copy of the published set, for a binding that
 * adopts a set the core's own discovery published (lb.h).
 */
#include "core.h"

size_t lb_balancer_backends(lb_balancer *b, lb_backend *out, size_t max,
                            uint64_t *ids, uint64_t *gen)
{
    struct lb_snapshot *s;
    size_t n;

    lb_rcu_read_lock();
    s = lb_rcu_deref(&b->snap);
    n = s->n;
    *gen = s->gen;
    for (size_t i = 0; i < n && i < max; i++) {
        out[i] = s->backends[i];
        if (ids)
            ids[i] = lb_store_id(s->store, s->rec[i]);
    }
    lb_rcu_read_unlock();
    return n;
}
