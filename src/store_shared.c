/*
 * store_shared.c - the record store in a region shared by forked
 * processes (see store.h).
 *
 * The region is a header and `capacity` slots, each a record beside its
 * key (the backend's lb_backend, itself plain bytes), reference count,
 * incarnation and free-list link: indices, never pointers, so the region
 * means the same in every process that maps it.  A process's handle (the
 * ops and the region's address) is its own memory.
 *
 * acquire and find look a key up by a scan of the slots under the
 * region's lock: O(capacity), for writers only (an update's new backends).
 * The lock is a process-shared robust mutex: a process that died holding
 * it leaves it consistent for the next taker (the critical sections only
 * move free-list indices, and each step leaves the list well formed).
 * Reference counts of a process that died are not recovered here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

#define MAGIC 0x6c622d7265633031ull /* "lb-rec01" */
#define NONE UINT32_MAX

struct slot {
    struct lb_record rec; /* first: a record pointer is its slot's */
    _Atomic uint32_t refs;
    uint32_t index;
    uint32_t incarnation;
    uint32_t next_free;
    lb_backend key;
};

struct region {
    uint64_t magic;
    uint32_t capacity;
    uint32_t used;
    uint32_t free_head;
    uint32_t pad;
    pthread_mutex_t lock;
    struct slot slots[];
};

/* This process's handle.  `held` counts the records it holds plus one for
 * its owner (dropped by close): whoever drops it to zero frees the handle,
 * so a retired snapshot released after close still finds it. */
struct shared_store {
    struct lb_store base;
    struct region *reg;
    _Atomic uint32_t held;
};

static void handle_hold(struct lb_store *st)
{
    atomic_fetch_add_explicit(&((struct shared_store *)st)->held, 1,
                              memory_order_relaxed);
}

static void handle_drop(struct lb_store *st)
{
    if (atomic_fetch_sub_explicit(&((struct shared_store *)st)->held, 1,
                                  memory_order_acq_rel) == 1)
        free(st);
}

static const struct lb_store_ops shared_ops;

size_t lb_store_shared_size(uint32_t capacity)
{
    if (capacity == 0 || capacity > LB_STORE_MAX_SLOTS)
        return 0;
    return sizeof(struct region) + (size_t)capacity * sizeof(struct slot);
}

static void region_lock(struct region *reg)
{
    if (pthread_mutex_lock(&reg->lock) == EOWNERDEAD)
        pthread_mutex_consistent(&reg->lock);
}

static void region_unlock(struct region *reg)
{
    pthread_mutex_unlock(&reg->lock);
}

struct lb_store *lb_store_shared_attach(void *mem, const char **err)
{
    struct region *reg = mem;
    struct shared_store *s;

    if (!reg || reg->magic != MAGIC) {
        *err = "not a formatted shared record store";
        return NULL;
    }
    s = malloc(sizeof(*s));
    if (!s) {
        *err = "out of memory";
        return NULL;
    }
    s->base.ops = &shared_ops;
    s->reg = reg;
    atomic_init(&s->held, 1);
    return &s->base;
}

struct lb_store *lb_store_shared_format(void *mem, size_t size,
                                        uint32_t capacity, const char **err)
{
    struct region *reg = mem;
    pthread_mutexattr_t a;
    size_t need = lb_store_shared_size(capacity);

    if (need == 0) {
        *err = "shared store capacity out of range (1-16777216)";
        return NULL;
    }
    if (!mem || size < need) {
        *err = "shared store region too small for its capacity";
        return NULL;
    }
    memset(reg, 0, need);
    reg->capacity = capacity;
    for (uint32_t i = 0; i < capacity; i++) {
        reg->slots[i].index = i;
        reg->slots[i].next_free = i + 1 < capacity ? i + 1 : NONE;
    }
    reg->free_head = 0;
    if (pthread_mutexattr_init(&a) != 0 ||
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0 ||
        pthread_mutex_init(&reg->lock, &a) != 0) {
        *err = "cannot make a process-shared lock";
        return NULL;
    }
    pthread_mutexattr_destroy(&a);
    reg->magic = MAGIC;
    return lb_store_shared_attach(mem, err);
}

/* Caller holds the region's lock. */
static struct slot *lookup_locked(struct region *reg, const lb_backend *key)
{
    for (uint32_t i = 0; i < reg->capacity; i++) {
        struct slot *s = &reg->slots[i];

        if (atomic_load_explicit(&s->refs, memory_order_relaxed) > 0 &&
            lb_backend_compare(&s->key, key) == 0)
            return s;
    }
    return NULL;
}

static void shared_ref(struct lb_store *st, struct lb_record *r)
{
    atomic_fetch_add_explicit(&((struct slot *)r)->refs, 1,
                              memory_order_relaxed);
    handle_hold(st);
}

static struct lb_record *shared_find(struct lb_store *st, const lb_backend *key)
{
    struct region *reg = ((struct shared_store *)st)->reg;
    struct slot *s;

    region_lock(reg);
    s = lookup_locked(reg, key);
    if (s)
        shared_ref(st, &s->rec);
    region_unlock(reg);
    return s ? &s->rec : NULL;
}

static struct lb_record *shared_acquire(struct lb_store *st,
                                        const lb_backend *key, bool healthy)
{
    struct region *reg = ((struct shared_store *)st)->reg;
    struct slot *s;

    region_lock(reg);
    s = lookup_locked(reg, key);
    if (s) {
        shared_ref(st, &s->rec);
    } else if (reg->free_head != NONE) {
        s = &reg->slots[reg->free_head];
        reg->free_head = s->next_free;
        s->incarnation++;
        s->key = *key;
        lb_record_init(&s->rec, healthy);
        atomic_store_explicit(&s->refs, 1, memory_order_release);
        reg->used++;
        handle_hold(st);
    }
    region_unlock(reg);
    return s ? &s->rec : NULL;
}

static void shared_rekey(struct lb_store *st, struct lb_record *r,
                         const lb_backend *key)
{
    struct region *reg = ((struct shared_store *)st)->reg;

    region_lock(reg);
    ((struct slot *)r)->key = *key;
    region_unlock(reg);
}

static void shared_release(struct lb_store *st, struct lb_record *r)
{
    struct region *reg = ((struct shared_store *)st)->reg;
    struct slot *s = (struct slot *)r;

    /* Under the lock: lookup_locked must not hand out a record whose count
     * just reached zero. */
    region_lock(reg);
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1) {
        s->next_free = reg->free_head;
        reg->free_head = s->index;
        reg->used--;
    }
    region_unlock(reg);
    handle_drop(st);
}

static uint64_t shared_id(const struct lb_store *st, const struct lb_record *r)
{
    const struct slot *s = (const struct slot *)r;

    (void)st;
    return lb_store_make_id(s->index, s->incarnation);
}

/* The handle only (once its records are released): the region and its
 * records belong to every process. */
static void shared_close(struct lb_store *st) { handle_drop(st); }

static const struct lb_store_ops shared_ops = {
    .acquire = shared_acquire,
    .find = shared_find,
    .rekey = shared_rekey,
    .ref = shared_ref,
    .release = shared_release,
    .id = shared_id,
    .close = shared_close,
};
