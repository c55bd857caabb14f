/*
 * shared.c - the region of a shared balancer (see shared.h): layout, the
 * writers' lock, the published set, slots and their error text, and the
 * record store over the slots.  The process table and the prober's turn
 * are in shared_procs.c; the layout is shared_region.h.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "shared_region.h"

static const struct lb_store_ops shared_ops;

static _Atomic uint64_t quarantine_ns = LB_SHARED_QUARANTINE_NS;

void lb_shared_counts(const struct lb_shared *sh, uint32_t *repairs,
                      uint32_t *swept)
{
    *repairs = atomic_load_explicit(&sh->reg->repairs, memory_order_relaxed);
    *swept = atomic_load_explicit(&sh->reg->swept, memory_order_relaxed);
}

void lb_shared_set_quarantine(uint64_t ns)
{
    atomic_store_explicit(&quarantine_ns, ns, memory_order_relaxed);
}

static uint64_t now_ns(void) { return lb_clock_ns(); }

static int robust_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = -1;

    if (pthread_mutexattr_init(&a) != 0)
        return -1;
    if (pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) == 0 &&
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0 &&
        pthread_mutex_init(m, &a) == 0)
        rc = 0;
    pthread_mutexattr_destroy(&a);
    return rc;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

struct lb_shared *lb_shared_new(uint32_t capacity, const char **err)
{
    struct region *reg;
    struct lb_shared *sh;
    size_t set_size, off, size;

    if (capacity == 0 || capacity > LB_SHARED_MAX_CAPACITY) {
        *err = "shared capacity out of range (1-65535)";
        return NULL;
    }
    set_size = sizeof(struct set_buf) + capacity * sizeof(struct set_entry);
    off = align64(sizeof(struct region));
    size = off + 2 * align64(set_size) +
           align64(capacity * sizeof(struct slot)) +
           align64((size_t)LB_SHARED_PROCS * capacity * sizeof(uint32_t)) +
           (size_t)LB_SHARED_PROCS * capacity * sizeof(uint64_t);
    sh = calloc(1, sizeof(*sh));
    if (!sh) {
        *err = "out of memory";
        return NULL;
    }
    /* Anonymous shared memory is zero and takes pages only where written:
     * the in-flight columns of processes that never run cost nothing. */
    reg = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
               -1, 0);
    if (reg == MAP_FAILED) {
        free(sh);
        *err = "cannot map the shared region (out of memory)";
        return NULL;
    }
    reg->capacity = capacity;
    reg->size = size;
    reg->set_off[0] = off;
    reg->set_off[1] = off + align64(set_size);
    reg->slots_off = off + 2 * align64(set_size);
    reg->inflight_off =
        reg->slots_off + align64(capacity * sizeof(struct slot));
    reg->picks_off = reg->inflight_off + align64((size_t)LB_SHARED_PROCS *
                                                 capacity * sizeof(uint32_t));
    if (robust_init(&reg->lock) != 0) {
        munmap(reg, size);
        free(sh);
        *err = "cannot make a process-shared lock";
        return NULL;
    }
    for (int i = 0; i < LB_SHARED_PROCS; i++)
        if (robust_init(&reg->procs[i].alive) != 0) {
            munmap(reg, size);
            free(sh);
            *err = "cannot make a process-shared lock";
            return NULL;
        }
    /* version 1: the empty set, in buffer 1 */
    set_buf(reg, 1)->version = 1;
    atomic_store_explicit(&reg->version, 1, memory_order_release);
    reg->magic = MAGIC;
    sh->base.ops = &shared_ops;
    sh->reg = reg;
    sh->me = LB_SHARED_NONE;
    atomic_init(&sh->held, 1);
    return sh;
}

struct lb_store *lb_shared_store(struct lb_shared *sh) { return &sh->base; }

void lb_shared_track(struct lb_shared *sh, const uint64_t *adopted)
{
    sh->adopted = adopted;
}

uint32_t lb_shared_capacity(const struct lb_shared *sh)
{
    return sh->reg->capacity;
}

/* ---- the lock, and repair after a writer died ---- */

/* A writer died holding the lock: the published set is whole (its
 * version moved in one store); slots it took for a set it never published
 * go back to retired, so nothing is lost or left half taken. */
static void repair(struct region *reg)
{
    uint64_t v = atomic_load_explicit(&reg->version, memory_order_relaxed);
    struct set_buf *s = set_buf(reg, (int)(v & 1));
    uint64_t t = now_ns();

    for (uint32_t i = 0; i < reg->fresh; i++) {
        struct slot *sl = slot_at(reg, i);
        if (sl->state == SLOT_TAKEN || sl->state == SLOT_LIVE) {
            sl->state = SLOT_RETIRED;
            sl->retired_version = v;
            sl->retired_ns = t;
        }
    }
    for (uint64_t i = 0; i < s->n; i++)
        slot_at(reg, set_entries(s)[i].slot)->state = SLOT_LIVE;
}

int lb_shared_lock(struct lb_shared *sh, double wait)
{
    struct region *reg = sh->reg;
    int rc;

    if (wait <= 0) {
        rc = pthread_mutex_trylock(&reg->lock);
    } else {
        /* timedlock, on the realtime clock (ThreadSanitizer knows it,
         * not clocklock): a clock step changes one wait, nothing else */
        struct timespec at = lb_deadline(wait);

        rc = pthread_mutex_timedlock(&reg->lock, &at);
    }
    if (rc == EOWNERDEAD) {
        repair(reg);
        atomic_fetch_add_explicit(&reg->repairs, 1, memory_order_relaxed);
        pthread_mutex_consistent(&reg->lock);
        rc = 0;
    }
    return rc == 0 ? 0 : -1;
}

void lb_shared_unlock(struct lb_shared *sh)
{
    pthread_mutex_unlock(&sh->reg->lock);
}

/* ---- the set ---- */

uint64_t lb_shared_version(const struct lb_shared *sh)
{
    return atomic_load_explicit(&sh->reg->version, memory_order_acquire);
}

size_t lb_shared_set_read(struct lb_shared *sh, lb_backend *backends,
                          uint32_t *slots, uint64_t *version)
{
    struct region *reg = sh->reg;

    for (;;) {
        uint64_t v = atomic_load_explicit(&reg->version, memory_order_acquire);
        struct set_buf *s = set_buf(reg, (int)(v & 1));
        uint64_t s1 = atomic_load_explicit(&s->seq, memory_order_acquire), n;

        if (s1 & 1) { /* a writer two versions on is inside: next round */
            sched_yield();
            continue;
        }
        n = s->n;
        if (n > reg->capacity)
            n = reg->capacity; /* torn: the check below retries */
        for (uint64_t i = 0; i < n; i++) {
            const struct set_entry *e = &set_entries(s)[i];
            backends[i] = e->b;
            slots[i] = e->slot < reg->capacity ? e->slot : 0;
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->seq, memory_order_relaxed) == s1 &&
            s->version == v) {
            *version = v;
            return (size_t)n;
        }
    }
}

void lb_shared_set_publish(struct lb_shared *sh, const lb_backend *backends,
                           const uint32_t *slots, size_t n, uint64_t *version)
{
    struct region *reg = sh->reg;
    uint64_t v = atomic_load_explicit(&reg->version, memory_order_relaxed);
    struct set_buf *old = set_buf(reg, (int)(v & 1));
    struct set_buf *s = set_buf(reg, (int)((v + 1) & 1));
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
    uint64_t t = now_ns();

    /* odd: a writer that died here left it odd already */
    seq |= 1;
    atomic_store_explicit(&s->seq, seq, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    for (size_t i = 0; i < n; i++) {
        set_entries(s)[i].slot = slots[i];
        set_entries(s)[i].pad = 0;
        set_entries(s)[i].b = backends[i];
        slot_at(reg, slots[i])->state = SLOT_TAKEN;
    }
    s->n = n;
    s->version = v + 1;
    atomic_store_explicit(&s->seq, seq + 1, memory_order_release);
    /* Slots the old set lists and the new one does not: retired now. */
    for (uint64_t i = 0; i < old->n; i++) {
        struct slot *sl = slot_at(reg, set_entries(old)[i].slot);
        if (sl->state == SLOT_LIVE) {
            sl->state = SLOT_RETIRED;
            sl->retired_version = v + 1;
            sl->retired_ns = t;
        }
    }
    for (size_t i = 0; i < n; i++)
        slot_at(reg, slots[i])->state = SLOT_LIVE;
    atomic_store_explicit(&reg->version, v + 1, memory_order_release);
    *version = v + 1;
}

void lb_shared_abandon(struct lb_shared *sh)
{
    struct region *reg = sh->reg;

    for (uint32_t i = 0; i < reg->fresh; i++) {
        struct slot *s = slot_at(reg, i);
        if (s->state == SLOT_TAKEN) {
            s->state = SLOT_RETIRED;
            s->retired_version = 0;
            s->retired_ns = 0;
        }
    }
}

struct lb_record *lb_shared_record(struct lb_shared *sh, uint32_t slot)
{
    return &slot_at(sh->reg, slot)->rec;
}

uint32_t lb_shared_slot_of(const struct lb_shared *sh,
                           const struct lb_record *r)
{
    return (uint32_t)((const struct slot *)(const void *)r -
                      slot_at(sh->reg, 0));
}

/* ---- error text ---- */

void lb_shared_error_set(struct lb_shared *sh, uint32_t slot, const char *text,
                         size_t len)
{
    struct slot *s = slot_at(sh->reg, slot);
    uint32_t seq = atomic_load_explicit(&s->err_seq, memory_order_relaxed) | 1;

    if (len > ERR_TEXT)
        len = ERR_TEXT;
    atomic_store_explicit(&s->err_seq, seq, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    memcpy(s->err_text, text, len);
    s->err_len = (uint32_t)len;
    atomic_store_explicit(&s->err_seq, seq + 1, memory_order_release);
}

size_t lb_shared_error_get(struct lb_shared *sh, uint32_t slot, char *buf,
                           size_t len)
{
    struct slot *s = slot_at(sh->reg, slot);

    if (len == 0)
        return 0;
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t s1 = atomic_load_explicit(&s->err_seq, memory_order_acquire);
        size_t n;

        if (s1 & 1) {
            sched_yield();
            continue;
        }
        n = s->err_len;
        if (n > ERR_TEXT)
            n = ERR_TEXT;
        if (n > len - 1)
            n = len - 1;
        memcpy(buf, s->err_text, n);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->err_seq, memory_order_relaxed) == s1) {
            buf[n] = '\0';
            return n;
        }
    }
    buf[0] = '\0';
    return 0;
}

/* ---- the store ---- */

static void handle_drop(struct lb_shared *sh)
{
    if (atomic_fetch_sub_explicit(&sh->held, 1, memory_order_acq_rel) == 1) {
        munmap(sh->reg, sh->reg->size);
        free(sh);
    }
}

/* Whether a retired slot may be taken again: every live process adopted
 * a set past it, and the quarantine is over.  Region locked. */
static bool reusable(struct region *reg, const struct slot *s, uint64_t t)
{
    uint32_t hw = atomic_load_explicit(&reg->procs_hw, memory_order_relaxed);

    if (s->state != SLOT_RETIRED ||
        t - s->retired_ns <
            atomic_load_explicit(&quarantine_ns, memory_order_relaxed))
        return false;
    for (uint32_t i = 0; i < hw; i++)
        if (atomic_load_explicit(&reg->procs[i].used, memory_order_relaxed) &&
            atomic_load_explicit(&reg->procs[i].adopted, memory_order_relaxed) <
                s->retired_version)
            return false;
    return true;
}

/* A fresh slot, else a retired one past its quarantine; region locked
 * (the caller: the shared update).  NULL when none is free. */
static struct lb_record *shared_acquire(struct lb_store *st,
                                        const lb_backend *key, bool healthy)
{
    struct lb_shared *sh = (struct lb_shared *)st;
    struct region *reg = sh->reg;
    struct slot *s = NULL;
    uint32_t hw;

    (void)key;
    if (reg->fresh < reg->capacity) {
        s = slot_at(reg, reg->fresh++);
    } else {
        uint64_t t = now_ns();
        for (uint32_t k = 0; k < reg->capacity && !s; k++) {
            uint32_t i = (reg->cursor + k) % reg->capacity;
            if (reusable(reg, slot_at(reg, i), t)) {
                s = slot_at(reg, i);
                reg->cursor = i + 1;
            }
        }
        if (!s)
            return NULL;
    }
    atomic_fetch_add_explicit(&s->incarnation, 1, memory_order_relaxed);
    s->state = SLOT_TAKEN;
    lb_record_init(&s->rec, healthy);
    s->rec.slot = slot_index(reg, &s->rec);
    lb_shared_error_set(sh, lb_shared_slot_of(sh, &s->rec), "", 0);
    hw = atomic_load_explicit(&reg->procs_hw, memory_order_relaxed);
    for (uint32_t p = 0; p < hw; p++) {
        uint32_t i = lb_shared_slot_of(sh, &s->rec);
        atomic_store_explicit(&inflight_col(reg, p)[i], 0,
                              memory_order_relaxed);
        atomic_store_explicit(&picks_col(reg, p)[i], 0, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&sh->held, 1, memory_order_relaxed);
    return &s->rec;
}

static void shared_ref(struct lb_store *st, struct lb_record *r)
{
    (void)r;
    atomic_fetch_add_explicit(&((struct lb_shared *)st)->held, 1,
                              memory_order_relaxed);
}

static void shared_release(struct lb_store *st, struct lb_record *r)
{
    (void)r;
    handle_drop((struct lb_shared *)st);
}

static void shared_release_many(struct lb_store *st, struct lb_record *const *r,
                                size_t n)
{
    struct lb_shared *sh = (struct lb_shared *)st;

    (void)r;
    if (atomic_fetch_sub_explicit(&sh->held, (uint32_t)n,
                                  memory_order_acq_rel) == n) {
        munmap(sh->reg, sh->reg->size);
        free(sh);
    }
}

static uint64_t shared_id(const struct lb_store *st, const struct lb_record *r)
{
    const struct lb_shared *sh = (const struct lb_shared *)st;
    const struct slot *s = (const struct slot *)(const void *)r;

    return lb_store_make_id(
        lb_shared_slot_of(sh, r),
        atomic_load_explicit(&s->incarnation, memory_order_relaxed));
}

/* This process's share; a process not registered yet registers now (the
 * first acquire of its life takes the region's lock once). */
static void shared_in_flight_add(struct lb_store *st, struct lb_record *r,
                                 int32_t delta)
{
    struct lb_shared *sh = (struct lb_shared *)st;
    uint32_t me = sh->me;

    if (me == LB_SHARED_NONE)
        me = lb_shared_attach(sh, 0);
    if (me == LB_SHARED_NONE)
        return; /* the process table is full: not counted */
    lb_record_in_flight_add(&inflight_col(sh->reg, me)[slot_index(sh->reg, r)],
                            delta);
}

static uint32_t shared_in_flight(const struct lb_store *st,
                                 const struct lb_record *r)
{
    const struct lb_shared *sh = (const struct lb_shared *)st;
    struct region *reg = sh->reg;
    uint32_t slot = lb_shared_slot_of(sh, r), total = 0;
    uint32_t hw = atomic_load_explicit(&reg->procs_hw, memory_order_acquire);

    for (uint32_t p = 0; p < hw; p++)
        total += atomic_load_explicit(&inflight_col(reg, p)[slot],
                                      memory_order_relaxed);
    return total;
}

/* This process's column only; 0 before the process registered. */
static uint32_t shared_in_flight_own(const struct lb_store *st,
                                     const struct lb_record *r)
{
    const struct lb_shared *sh = (const struct lb_shared *)st;

    if (sh->me == LB_SHARED_NONE)
        return 0;
    return atomic_load_explicit(
        &inflight_col(sh->reg, sh->me)[slot_index(sh->reg, r)],
        memory_order_relaxed);
}

/* This process's pick counter of r (its column), registering the process
 * first as shared_in_flight_add does, and the column kept in the store's
 * `picks` for the next picks; NULL when the process table is full
 * (lb_store_pick then counts with an atomic add on the record). */
static _Atomic uint64_t *shared_picks(struct lb_store *st, struct lb_record *r)
{
    struct lb_shared *sh = (struct lb_shared *)st;
    uint32_t me = atomic_load_explicit(&sh->me, memory_order_relaxed);
    _Atomic uint64_t *col;

    if (me == LB_SHARED_NONE)
        me = lb_shared_attach(sh, 0);
    if (me == LB_SHARED_NONE)
        return NULL;
    col = picks_col(sh->reg, me);
    atomic_store_explicit(&sh->base.picks, col, memory_order_relaxed);
    return &col[r->slot];
}

/* Every process's picks of r, the dead ones' included (their columns are
 * kept).  Relaxed loads, any thread. */
static uint64_t shared_picks_sum(const struct lb_store *st,
                                 const struct lb_record *r)
{
    const struct lb_shared *sh = (const struct lb_shared *)st;
    struct region *reg = sh->reg;
    uint32_t slot = r->slot;
    uint32_t hw = atomic_load_explicit(&reg->procs_hw, memory_order_acquire);
    uint64_t total = 0;

    for (uint32_t p = 0; p < hw; p++)
        total += atomic_load_explicit(&picks_col(reg, p)[slot],
                                      memory_order_relaxed);
    return total;
}

static void shared_close(struct lb_store *st)
{
    handle_drop((struct lb_shared *)st);
}

static const struct lb_store_ops shared_ops = {
    .acquire = shared_acquire,
    .ref = shared_ref,
    .release = shared_release,
    .release_many = shared_release_many,
    .id = shared_id,
    .in_flight_add = shared_in_flight_add,
    .in_flight = shared_in_flight,
    .in_flight_own = shared_in_flight_own,
    .picks = shared_picks,
    .picks_sum = shared_picks_sum,
    .close = shared_close,
};
