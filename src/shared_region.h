/*
 * shared_region.h - the layout of a shared balancer's region, private to
 * src/shared.c (layout, lock, set, slots, error text, the store) and
 * src/shared_procs.c (the process table and the prober's turn).  The
 * contracts are those of shared.h; nothing here is for other files.
 */
#ifndef LB_SHARED_REGION_H
#define LB_SHARED_REGION_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "shared.h"

#define MAGIC 0x6c622d7368723032ull /* "lb-shr02" */
#define ERR_TEXT 120

enum { SLOT_FREE = 0, SLOT_LIVE, SLOT_RETIRED, SLOT_TAKEN };

struct slot {
    struct lb_record rec;         /* first: a record pointer is its slot's */
    uint32_t state;               /* SLOT_*, under the region's lock */
    _Atomic uint32_t incarnation; /* bumped on every reuse; in the id */
    uint64_t retired_version;
    uint64_t retired_ns;
    _Atomic uint32_t err_seq; /* odd while err_text is written */
    uint32_t err_len;
    char err_text[ERR_TEXT];
};

struct set_entry {
    uint32_t slot;
    uint32_t pad;
    lb_backend b;
};

struct set_buf {
    _Atomic uint64_t seq; /* odd while a writer is inside */
    uint64_t version;
    uint64_t n;
    /* struct set_entry entries[capacity] follows */
};

struct proc {
    pthread_mutex_t alive; /* robust; held by the process while it lives */
    _Atomic uint32_t used;
    _Atomic int32_t pid;
    _Atomic uint64_t adopted; /* set version this process published */
};

struct region {
    uint64_t magic;
    uint32_t capacity;
    uint32_t fresh; /* slots [fresh, capacity) never used yet */
    size_t size;
    size_t set_off[2], slots_off, inflight_off, picks_off;
    pthread_mutex_t lock;     /* writers; robust */
    _Atomic uint64_t version; /* published; buffer version & 1 */
    /* The turn: expiry in ms of CLOCK_MONOTONIC << 9 | owner index + 1. */
    _Atomic uint64_t turn;
    _Atomic uint32_t procs_hw;      /* process indices in use are below this */
    uint32_t cursor;                /* where the next reuse scan starts */
    _Atomic uint32_t repairs;       /* times a writer was found dead (tests) */
    _Atomic uint32_t swept;         /* dead processes cleared (tests) */
    _Atomic uint64_t discovered[2]; /* discovery runs: ok, failed */
    struct proc procs[LB_SHARED_PROCS];
};

#define TURN_OWNER_BITS 9
#define TURN_OWNER_MASK ((1ull << TURN_OWNER_BITS) - 1)

struct lb_shared {
    struct lb_store base; /* first: the store is the handle */
    struct region *reg;
    _Atomic uint32_t me;     /* index in procs, or LB_SHARED_NONE; any thread */
    pthread_t owner;         /* the thread that registered (holds the mutex) */
    const uint64_t *adopted; /* this process's adopted version, or NULL */
    _Atomic uint32_t held;   /* records held by this process + 1 owner */
};

/* Where the parts of the region are (offsets fixed at lb_shared_new). */
static inline struct set_buf *set_buf(struct region *reg, int i)
{
    return (struct set_buf *)((char *)reg + reg->set_off[i]);
}

static inline struct set_entry *set_entries(struct set_buf *s)
{
    return (struct set_entry *)(s + 1);
}

static inline struct slot *slot_at(struct region *reg, uint32_t i)
{
    return (struct slot *)((char *)reg + reg->slots_off) + i;
}

/* The slot of a record of this region (lb_shared_slot_of, inline for the
 * request path: the exported one is called through the PLT). */
static inline uint32_t slot_index(struct region *reg, const struct lb_record *r)
{
    return (uint32_t)((const struct slot *)(const void *)r - slot_at(reg, 0));
}

static inline _Atomic uint32_t *inflight_col(struct region *reg, uint32_t proc)
{
    return (_Atomic uint32_t *)((char *)reg + reg->inflight_off) +
           (size_t)proc * reg->capacity;
}

/* Process `proc`'s pick counts, one per slot (lb_store_pick): written by
 * that process alone; kept when it dies (they are counters: the next
 * process at that index counts on), zeroed when a slot is taken for a new
 * record. */
static inline _Atomic uint64_t *picks_col(struct region *reg, uint32_t proc)
{
    return (_Atomic uint64_t *)((char *)reg + reg->picks_off) +
           (size_t)proc * reg->capacity;
}

#endif
