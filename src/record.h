/*
 * record.h - the per-backend record: health word, load, latency, passive
 * failures, ejection and counters, in one cache-line-sized struct.
 *
 * A record holds only atomics and plain integers: no pointer, no
 * process-local id, so a store (src/store.h) may place records in a
 * mapping shared by processes forked after it was made.  A snapshot lists
 * one record pointer per backend; readers reach records only through a
 * snapshot (or a held target, src/targets.h).
 *
 * Every field is written with relaxed atomics: a record is a set of
 * independent figures, none of which orders another memory access.  These
 * are the per-backend counters STYLE.md allows beside the read path
 * ("relaxed atomic per-backend counters"); the select path itself only
 * loads `health`.
 */
#ifndef LB_RECORD_H
#define LB_RECORD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lb.h"

/*
 * The health word, updated by compare-and-swap, so a flip is one atomic
 * store seen by readers without rebuilding the snapshot:
 *
 *   bit 0       healthy
 *   bit 1       enabled
 *   bits 2..31  consecutive opposite observations (Pingora's counter)
 *   bits 32..39 kind of the last error (LB_CHECK_ERR_*)
 *   bits 40..63 detail of the last error (errno, HTTP status), 24 bits
 */
#define LB_H_HEALTHY 1ull
#define LB_H_ENABLED 2ull
#define LB_H_COUNT_SHIFT 2
#define LB_H_COUNT_MASK (0x3fffffffull << LB_H_COUNT_SHIFT)
#define LB_H_KIND_SHIFT 32
#define LB_H_DETAIL_SHIFT 40

/* Bits of `event_flags` (src/events.c): the record's latest flip could not
 * be queued (the queue was full); the next drain delivers its current
 * state instead. */
#define LB_R_RESYNC 1u

struct lb_record {
    _Atomic uint64_t health;           /* the word above */
    _Atomic uint32_t in_flight;        /* requests acquired, not released */
    _Atomic uint32_t passive_failures; /* current run of failed reports */
    _Atomic uint64_t latency_ewma_ns;  /* EWMA of reported latency, 1/8 */
    _Atomic uint64_t latency_last_ns;  /* latest reported latency */
    _Atomic uint64_t ejected_until_ns; /* CLOCK_MONOTONIC; 0: not ejected */
    _Atomic uint32_t ejections;        /* times ejected */
    _Atomic uint32_t event_flags;      /* LB_R_* */
    _Atomic uint64_t selections;       /* picks counted by acquire */
    _Atomic uint64_t checks_ok, checks_failed;   /* active observations */
    _Atomic uint64_t reports_ok, reports_failed; /* passive outcomes */
    _Atomic uint64_t flips;         /* state changes, every cause */
    _Atomic uint64_t last_check_ms; /* CLOCK_REALTIME of the last check */
    _Atomic uint64_t check_time_ns; /* sum of timed checks' durations */
    _Atomic uint64_t check_timed;   /* checks with a duration */
    _Atomic uint64_t check_buckets[LB_CHECK_BUCKETS]; /* per bucket, not
                                                         cumulative */
};

/*
 * One active check's time: its duration into the histogram (ns; UINT64_MAX
 * when not measured) and the time it ended as the record's last check.
 * Relaxed atomics, lock-free, any thread (src/record_stats.c).
 */
void lb_record_check_time(struct lb_record *r, uint64_t ns);

/* The figures of lb_record_stats_get (lb.h) from the record. */
void lb_record_stats_get(const struct lb_record *r, lb_record_stats *out);

/* Reset every field: healthy or not, enabled, counters zero.  The caller
 * owns r (a store handing it out for the first time); no reader sees it
 * yet. */
void lb_record_init(struct lb_record *r, bool healthy);

/* Lock-free (one atomic RMW), any thread, on a record the caller reaches
 * through a snapshot or a held target. */
void lb_record_set_enable(struct lb_record *r, bool enable);

/*
 * Pingora's observe_health as one compare-and-swap: a result opposite to
 * the current state counts up and flips at `threshold` (clamped to what
 * the count can reach), a result equal to it resets the count; the error
 * fields always describe the latest observation.  Counts the check
 * (checks_ok / checks_failed).  Returns true when the state flipped.
 * Lock-free, any thread.
 */
bool lb_record_observe(struct lb_record *r, bool ok, uint32_t threshold,
                       int err_kind, int err_detail);

/*
 * One passive outcome: counts it (reports_ok / reports_failed), resets or
 * extends the passive-failure run, and with latency_ns != UINT64_MAX
 * records the latency (last, and the EWMA with weight 1/8).  No ejection
 * here.  Relaxed atomics only, lock-free, any thread.
 */
void lb_record_report(struct lb_record *r, bool ok, uint64_t latency_ns);

/* Health fields of the record into *out (all but out->id, which the store
 * gives).  Relaxed loads: one consistent health word. */
void lb_record_health_get(const struct lb_record *r, lb_health_info *out);

/* Every figure of the record into *out (all but out->id). */
void lb_record_info_get(const struct lb_record *r, lb_record_info *out);

/* Add delta to an in-flight count, never below zero (a release without
 * its acquire, or after the count was reset, is dropped).  Relaxed
 * compare-and-swap loop, lock-free, any thread. */
static inline void lb_record_in_flight_add(_Atomic uint32_t *c, int32_t delta)
{
    uint32_t v = atomic_load_explicit(c, memory_order_relaxed), nv;

    do {
        if (delta < 0 && v < (uint32_t)-delta)
            nv = 0;
        else
            nv = v + (uint32_t)delta;
    } while (!atomic_compare_exchange_weak_explicit(
        c, &v, nv, memory_order_relaxed, memory_order_relaxed));
}

/* Healthy and enabled: one relaxed load, the only access select makes. */
static inline bool lb_record_ready(const struct lb_record *r)
{
    uint64_t w = atomic_load_explicit(&r->health, memory_order_relaxed);
    return (w & (LB_H_HEALTHY | LB_H_ENABLED)) == (LB_H_HEALTHY | LB_H_ENABLED);
}

#endif /* LB_RECORD_H */
