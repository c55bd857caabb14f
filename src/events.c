/*
 * events.c - the health-change event queue (see core.h).
 */
#include <stdlib.h>

#include "core.h"

struct lb_event_node {
    struct lb_event_node *next;
    lb_health_event ev;
};

void lb_events_init(struct lb_events *q)
{
    atomic_init(&q->head, NULL);
    q->ready = NULL;
    pthread_mutex_init(&q->lock, NULL);
}

bool lb_events_push(struct lb_events *q, const lb_health_event *ev)
{
    struct lb_event_node *n = malloc(sizeof(*n));

    if (!n)
        return false;
    n->ev = *ev;
    n->next = atomic_load_explicit(&q->head, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        &q->head, &n->next, n, memory_order_release, memory_order_relaxed))
        ;
    return true;
}

int lb_events_drain(struct lb_events *q, lb_health_event *out, int max)
{
    int k = 0;

    if (max <= 0)
        return 0;
    pthread_mutex_lock(&q->lock);
    while (k < max) {
        struct lb_event_node *n;

        if (!q->ready) {
            /* The stack holds the newest first: reversing it gives the
             * order the flips happened in. */
            struct lb_event_node *fifo = NULL;

            n = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
            while (n) {
                struct lb_event_node *next = n->next;
                n->next = fifo;
                fifo = n;
                n = next;
            }
            q->ready = fifo;
            if (!fifo)
                break;
        }
        n = q->ready;
        q->ready = n->next;
        out[k++] = n->ev;
        free(n);
    }
    pthread_mutex_unlock(&q->lock);
    return k;
}

void lb_events_destroy(struct lb_events *q)
{
    struct lb_event_node *n = atomic_exchange(&q->head, NULL);

    while (n) {
        struct lb_event_node *next = n->next;
        free(n);
        n = next;
    }
    while (q->ready) {
        n = q->ready;
        q->ready = n->next;
        free(n);
    }
    pthread_mutex_destroy(&q->lock);
}
