/*
 * store_heap.c - the record store in this process's heap (see store.h).
 *
 * Slots come in chunks of CHUNK that never move (a snapshot keeps record
 * pointers); the chunk table grows by doubling under the store's lock.
 * A freed slot goes on a free list and is reused with a new incarnation,
 * so its id changes.  Records are found through the balancer's snapshot
 * (update's merge walk), so this store has no find.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define CHUNK 64
#define NONE UINT32_MAX

#ifdef LB_POISON
/* Debug builds scribble over a freed record: a pointer kept past its last
 * release reads garbage (and the stress tests' checks trip) instead of a
 * plausible record. */
#define POISON_BYTE 0x6b
#endif

struct slot {
    struct lb_record rec; /* first: a record pointer is its slot's */
    _Atomic uint32_t refs;
    uint32_t index;
    uint32_t incarnation;
    uint32_t next_free;
};

struct heap_store {
    struct lb_store base;
    pthread_mutex_t lock;
    struct slot **chunks;
    uint32_t nchunks, capchunks;
    uint32_t free_head;
    uint32_t used;
    bool closed;
};

static const struct lb_store_ops heap_ops;

static struct slot *slot_of(struct lb_record *r) { return (struct slot *)r; }

static struct slot *slot_at(struct heap_store *h, uint32_t i)
{
    return &h->chunks[i / CHUNK][i % CHUNK];
}

static void heap_free(struct heap_store *h)
{
    for (uint32_t c = 0; c < h->nchunks; c++)
        free(h->chunks[c]);
    free(h->chunks);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

struct lb_store *lb_store_heap_new(void)
{
    struct heap_store *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->base.ops = &heap_ops;
    h->free_head = NONE;
    pthread_mutex_init(&h->lock, NULL);
    return &h->base;
}

/* Caller holds h->lock.  False when out of memory or slots. */
static bool grow_locked(struct heap_store *h)
{
    struct slot *c;
    uint32_t base = h->nchunks * CHUNK;

    if (base + CHUNK > LB_STORE_MAX_SLOTS)
        return false;
    if (h->nchunks == h->capchunks) {
        uint32_t cap = h->capchunks ? 2 * h->capchunks : 4;
        struct slot **t = realloc(h->chunks, cap * sizeof(*t));
        if (!t)
            return false;
        h->chunks = t;
        h->capchunks = cap;
    }
    c = calloc(CHUNK, sizeof(*c));
    if (!c)
        return false;
    h->chunks[h->nchunks++] = c;
    for (uint32_t k = CHUNK; k-- > 0;) {
        c[k].index = base + k;
        c[k].next_free = h->free_head;
        h->free_head = base + k;
    }
    return true;
}

static struct lb_record *heap_acquire(struct lb_store *st,
                                      const lb_backend *key, bool healthy)
{
    struct heap_store *h = (struct heap_store *)st;
    struct slot *s = NULL;

    (void)key;
    pthread_mutex_lock(&h->lock);
    if (h->free_head != NONE || grow_locked(h)) {
        s = slot_at(h, h->free_head);
        h->free_head = s->next_free;
        s->incarnation++;
        h->used++;
    }
    pthread_mutex_unlock(&h->lock);
    if (!s)
        return NULL;
    lb_record_init(&s->rec, healthy);
    atomic_store_explicit(&s->refs, 1, memory_order_relaxed);
    return &s->rec;
}

static void heap_ref(struct lb_store *st, struct lb_record *r)
{
    (void)st;
    atomic_fetch_add_explicit(&slot_of(r)->refs, 1, memory_order_relaxed);
}

/* The last reference returns the slot; readers reach a record only through
 * a snapshot or a held target, and a snapshot releases its records in its
 * RCU callback, so no grace period is needed here. */
static void heap_release(struct lb_store *st, struct lb_record *r)
{
    struct heap_store *h = (struct heap_store *)st;
    struct slot *s = slot_of(r);
    bool gone;

    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
#ifdef LB_POISON
    memset(&s->rec, POISON_BYTE, sizeof(s->rec));
#endif
    pthread_mutex_lock(&h->lock);
    s->next_free = h->free_head;
    h->free_head = s->index;
    h->used--;
    gone = h->closed && h->used == 0;
    pthread_mutex_unlock(&h->lock);
    if (gone)
        heap_free(h);
}

static void heap_release_many(struct lb_store *st, struct lb_record *const *r,
                              size_t n)
{
    struct heap_store *h = (struct heap_store *)st;
    uint32_t head = NONE, tail = NONE, freed = 0;
    bool gone;

    /* Chain the slots whose last reference goes here, then splice the
     * chain onto the free list under one lock. */
    for (size_t i = 0; i < n; i++) {
        struct slot *s = slot_of(r[i]);

        if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
            continue;
#ifdef LB_POISON
        memset(&s->rec, POISON_BYTE, sizeof(s->rec));
#endif
        s->next_free = head;
        head = s->index;
        if (tail == NONE)
            tail = s->index;
        freed++;
    }
    if (!freed)
        return;
    pthread_mutex_lock(&h->lock);
    slot_at(h, tail)->next_free = h->free_head;
    h->free_head = head;
    h->used -= freed;
    gone = h->closed && h->used == 0;
    pthread_mutex_unlock(&h->lock);
    if (gone)
        heap_free(h);
}

static uint64_t heap_id(const struct lb_store *st, const struct lb_record *r)
{
    const struct slot *s = (const struct slot *)r;

    (void)st;
    return lb_store_make_id(s->index, s->incarnation);
}

static void heap_close(struct lb_store *st)
{
    struct heap_store *h = (struct heap_store *)st;
    bool gone;

    pthread_mutex_lock(&h->lock);
    h->closed = true;
    gone = h->used == 0;
    pthread_mutex_unlock(&h->lock);
    if (gone)
        heap_free(h);
}

static const struct lb_store_ops heap_ops = {
    .acquire = heap_acquire,
    .ref = heap_ref,
    .release = heap_release,
    .release_many = heap_release_many,
    .id = heap_id,
    .close = heap_close,
};
