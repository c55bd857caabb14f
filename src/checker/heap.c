/*
 * heap.c - a binary min-heap of nodes by key, each node knowing its index
 * so it can leave from the middle in O(log n).  Two heaps use it: the
 * probes in flight by deadline, and the periodic jobs by the time their
 * next round is due, so neither a wake-up nor a finished probe costs
 * anything per balancer.
 */
#include <stdlib.h>

#include "checker/checker.h"

static bool less(const struct lb_ck_heap *h, size_t a, size_t b)
{
    return h->v[a]->key < h->v[b]->key;
}

static void swap(struct lb_ck_heap *h, size_t a, size_t b)
{
    struct lb_ck_heap_node *t = h->v[a];

    h->v[a] = h->v[b];
    h->v[b] = t;
    h->v[a]->idx = a;
    h->v[b]->idx = b;
}

static void fix(struct lb_ck_heap *h, size_t i)
{
    while (i > 0 && less(h, i, (i - 1) / 2)) {
        swap(h, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < h->n && less(h, l, m))
            m = l;
        if (r < h->n && less(h, r, m))
            m = r;
        if (m == i)
            break;
        swap(h, i, m);
        i = m;
    }
}

int lb_ck_heap_reserve(struct lb_ck_heap *h, size_t n)
{
    struct lb_ck_heap_node **v;
    size_t cap = h->cap ? h->cap : 16;

    if (n <= h->cap)
        return LB_OK;
    while (cap < n)
        cap *= 2;
    v = realloc(h->v, cap * sizeof(*v));
    if (!v)
        return LB_ERROR;
    h->v = v;
    h->cap = cap;
    return LB_OK;
}

void lb_ck_heap_push(struct lb_ck_heap *h, struct lb_ck_heap_node *x)
{
    x->idx = h->n;
    h->v[h->n++] = x;
    fix(h, x->idx);
}

void lb_ck_heap_remove(struct lb_ck_heap *h, struct lb_ck_heap_node *x)
{
    size_t i = x->idx;

    if (i == SIZE_MAX)
        return;
    x->idx = SIZE_MAX;
    if (i != --h->n) {
        h->v[i] = h->v[h->n];
        h->v[i]->idx = i;
        fix(h, i);
    }
}

void lb_ck_heap_update(struct lb_ck_heap *h, struct lb_ck_heap_node *x,
                       uint64_t key)
{
    x->key = key;
    if (x->idx != SIZE_MAX)
        fix(h, x->idx);
}

struct lb_ck_heap_node *lb_ck_heap_top(const struct lb_ck_heap *h)
{
    return h->n ? h->v[0] : NULL;
}
