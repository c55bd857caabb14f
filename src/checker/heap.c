/*
 * heap.c - the deadlines of the probes in flight: a binary min-heap of
 * slots, each knowing its index so it can leave from the middle.
 */
#include "checker/checker.h"

static bool heap_less(size_t a, size_t b)
{
    return lb_ck.heap[a]->deadline < lb_ck.heap[b]->deadline;
}

static void heap_swap(size_t a, size_t b)
{
    struct slot *t = lb_ck.heap[a];

    lb_ck.heap[a] = lb_ck.heap[b];
    lb_ck.heap[b] = t;
    lb_ck.heap[a]->heap_idx = a;
    lb_ck.heap[b]->heap_idx = b;
}

static void heap_fix(size_t i)
{
    while (i > 0 && heap_less(i, (i - 1) / 2)) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < lb_ck.nheap && heap_less(l, m))
            m = l;
        if (r < lb_ck.nheap && heap_less(r, m))
            m = r;
        if (m == i)
            break;
        heap_swap(i, m);
        i = m;
    }
}

/* The heap has room for max_inflight slots (reserved in slot_launch). */
void lb_ck_heap_push(struct slot *s)
{
    s->heap_idx = lb_ck.nheap;
    lb_ck.heap[lb_ck.nheap++] = s;
    heap_fix(s->heap_idx);
}

void lb_ck_heap_remove(struct slot *s)
{
    size_t i = s->heap_idx;

    if (i == SIZE_MAX)
        return;
    s->heap_idx = SIZE_MAX;
    if (i != --lb_ck.nheap) {
        lb_ck.heap[i] = lb_ck.heap[lb_ck.nheap];
        lb_ck.heap[i]->heap_idx = i;
        heap_fix(i);
    }
}
