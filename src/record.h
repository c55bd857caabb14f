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
#include <time.h>

#include "clock.h"
#include "lb.h"

/*
 * The health word, updated by compare-and-swap, so a flip is one atomic
 * store seen by readers without rebuilding the snapshot:
 *
 *   bit 0       healthy
 *   bit 1       enabled
 *   bits 2..31  consecutive opposite observations (Pingora's counter)
 *   bits 32..39 kind of the last error (LB_CHECK_ERR_*)
 *   bits 40..62 detail of the last error (errno, HTTP status), 23 bits
 *   bit 63      ejected (passive health, src/passive.c)
 *
 * Ready is healthy, enabled and not ejected: still one load and one
 * compare under a mask.
 */
#define LB_H_HEALTHY 1ull
#define LB_H_ENABLED 2ull
#define LB_H_COUNT_SHIFT 2
#define LB_H_COUNT_MASK (0x3fffffffull << LB_H_COUNT_SHIFT)
#define LB_H_KIND_SHIFT 32
#define LB_H_DETAIL_SHIFT 40
#define LB_H_DETAIL_MASK 0x7fffffull
#define LB_H_EJECTED (1ull << 63)
#define LB_H_READY_MASK (LB_H_HEALTHY | LB_H_ENABLED | LB_H_EJECTED)

/* Bits of `event_flags` (src/events.c): the record's latest flip could not
 * be queued (the queue was full); the next drain delivers its current
 * state instead. */
#define LB_R_RESYNC 1u

struct lb_record {
    _Atomic uint64_t health;           /* the word above */
    _Atomic uint32_t in_flight;        /* requests acquired, not released */
    _Atomic uint32_t passive_failures; /* current run of failed reports */
    uint32_t slot; /* a shared store's slot (its pick column's entry), set
                      before the record is published; 0 in a heap store */
    _Atomic uint64_t latency_ewma_ns;  /* EWMA of reported latency, 1/8 */
    _Atomic uint64_t latency_last_ns;  /* latest reported latency */
    _Atomic uint64_t latency_peak;     /* peak EWMA: LB_PEAK_* word below */
    _Atomic uint64_t ejected_until_ns; /* CLOCK_MONOTONIC; 0: not ejected */
    _Atomic uint32_t ejections;        /* times ejected */
    _Atomic uint32_t event_flags;      /* LB_R_* */
    _Atomic uint64_t selections;       /* picks counted by acquire */
    /* picks counted by lb_balancer_select_counted in a heap store: one
     * writer at a time, a plain add (store.h, lb_store_pick) */
    _Atomic uint64_t picks;
    _Atomic uint64_t checks_ok, checks_failed;   /* active observations */
    _Atomic uint64_t reports_ok, reports_failed; /* passive outcomes */
    _Atomic uint64_t flips;         /* state changes, every cause */
    _Atomic uint64_t last_check_ms; /* CLOCK_REALTIME of the last check */
    _Atomic uint64_t check_time_ns; /* sum of timed checks' durations */
    _Atomic uint64_t check_timed;   /* checks with a duration */
    _Atomic uint64_t check_buckets[LB_CHECK_BUCKETS]; /* per bucket, not
                                                         cumulative */
    _Atomic uint64_t ready_since_ns; /* coarse clock: became ready (slow
                                        start) */
};

/*
 * One active check's time: its duration into the histogram (ns; UINT64_MAX
 * when not measured) and the time it ended as the record's last check.
 * Relaxed atomics, lock-free, any thread (src/record_stats.c).
 */
void lb_record_check_time(struct lb_record *r, uint64_t ns);

/* The figures of lb_record_stats_get (lb.h) from the record. */
void lb_record_stats_get(const struct lb_record *r, lb_record_stats *out);

/* The passive side's clocks are lb_clock_ns (ejections, precise) and
 * lb_clock_coarse_ns (slow start's ramp, read on the select path while a
 * backend ramps): src/clock.h. */

/* Reset every field: healthy or not, enabled, counters zero, ready since
 * now (slow start).  The caller owns r (a store handing it out for the
 * first time); no reader sees it yet. */
void lb_record_init(struct lb_record *r, bool healthy);

/* Lock-free (one atomic RMW), any thread, on a record the caller reaches
 * through a snapshot or a held target.  Returns true when it enabled a
 * disabled record (whose ready_since it then sets: slow start). */
bool lb_record_set_enable(struct lb_record *r, bool enable);

/*
 * Pingora's observe_health as one compare-and-swap: a result opposite to
 * the current state counts up and flips at `threshold` (clamped to what
 * the count can reach), a result equal to it resets the count; the error
 * fields always describe the latest observation.  A passing check also
 * clears the ejected bit (an active pass ends an ejection early; the
 * caller learns it through *unejected, when not NULL).  Counts the check
 * (checks_ok / checks_failed).  Returns true when health as selection
 * sees it (healthy and not ejected) flipped; then it went to `ok`, and
 * when it went up, ready_since is set (slow start).  Lock-free, any
 * thread.
 */
bool lb_record_observe(struct lb_record *r, bool ok, uint32_t threshold,
                       int err_kind, int err_detail, bool *unejected);

/*
 * One passive outcome: counts it (reports_ok / reports_failed), resets or
 * extends the passive-failure run, and with latency_ns != UINT64_MAX
 * records the latency (last, and the EWMA with weight 1/8).  Returns the
 * run of failures after it (0 after a success); ejecting is the caller's
 * (src/passive.c).  Relaxed atomics only, lock-free, any thread.
 */
uint32_t lb_record_report(struct lb_record *r, bool ok, uint64_t latency_ns);

/*
 * Eject r until `until_ns` (lb_clock_ns): one compare-and-swap sets the
 * ejected bit with err kind LB_CHECK_ERR_EJECTED and detail `run`;
 * ejected_until and the ejection count are written before it (release), so
 * a sweep that sees the bit sees its deadline; the run is reset.  Returns
 * false when r was ejected already (nothing changes).  *flipped: whether
 * health as selection sees it went down (r was healthy).  Lock-free, any
 * thread; the cap on ejections is the caller's (src/passive.c, under the
 * balancer's ejection lock).
 */
bool lb_record_eject(struct lb_record *r, uint64_t until_ns, uint32_t run,
                     bool *flipped);

/*
 * End r's ejection when its time is up at now_ns (or at once with
 * now_ns UINT64_MAX): one compare-and-swap clears the bit (the error
 * fields too; ejected_until is left, meaningless without the bit) and, when
 * r is healthy, ready_since
 * to now (slow start).  Returns true when this call ended it; *flipped:
 * whether health as selection sees it went up.  Lock-free, any thread.
 */
bool lb_record_unject(struct lb_record *r, uint64_t now_ns, bool *flipped);

/*
 * The peak EWMA of latency (Finagle's PeakEwma, as linkerd's balancer uses
 * it) is one 64-bit word, so a sample is one compare-and-swap and a read
 * one load (also in a store shared by processes):
 *
 *   bits 0..27   cost in microseconds at the stamp (saturates at 268 s)
 *   bits 28..63  stamp: CLOCK_MONOTONIC_COARSE in milliseconds, mod 2^36
 *                (2.2 years: time differences are taken modulo that)
 *
 * 0 means no sample yet.  Decayed at read and at write, never by a
 * timer: the cost read at time t is cost x exp(-(t - stamp) / decay).
 */
#define LB_PEAK_COST_BITS 28
#define LB_PEAK_COST_MAX ((1ull << LB_PEAK_COST_BITS) - 1)
#define LB_PEAK_STAMP_MASK ((1ull << 36) - 1)

/* CLOCK_MONOTONIC_COARSE in milliseconds (a vDSO read, ~1-4 ms
 * resolution: ample against decays of seconds).  Any thread. */
uint64_t lb_record_now_ms(void);

/*
 * One latency sample into the peak EWMA, with Finagle's rule against the
 * cost decayed to now_ms: a sample above it becomes the cost at once (the
 * peak), one below it is averaged in with weight 1 - exp(-dt / decay_ms).
 * One compare-and-swap loop (two samples at once both count), lock-free,
 * any thread.
 */
void lb_record_latency_peak(struct lb_record *r, uint64_t latency_ns,
                            uint64_t now_ms, double decay_ms);

/* The peak EWMA decayed to now_ms, in nanoseconds (at least 1 once a
 * sample exists); 0 without a sample.  Pure: one relaxed load, no write
 * (the select path calls it), any thread. */
uint64_t lb_record_latency_peak_get(const struct lb_record *r, uint64_t now_ms,
                                    double decay_ms);

/* Health fields of the record into *out (all but out->id, which the store
 * gives).  Relaxed loads: one consistent health word. */
void lb_record_health_get(const struct lb_record *r, lb_health_info *out);

/* Every figure of the record into *out (all but out->id). */
void lb_record_info_get(const struct lb_record *r, lb_record_info *out);

/* Add delta to an in-flight count, never below zero (a release without
 * its acquire, or after the count was reset, is dropped).  An increase is
 * one relaxed add (nothing to clamp: it is what every acquire does); a
 * decrease a relaxed compare-and-swap loop.  Lock-free, any thread. */
static inline void lb_record_in_flight_add(_Atomic uint32_t *c, int32_t delta)
{
    uint32_t v, nv;

    if (delta >= 0) {
        atomic_fetch_add_explicit(c, (uint32_t)delta, memory_order_relaxed);
        return;
    }
    v = atomic_load_explicit(c, memory_order_relaxed);
    do {
        nv = v < (uint32_t)-delta ? 0 : v + (uint32_t)delta;
    } while (!atomic_compare_exchange_weak_explicit(
        c, &v, nv, memory_order_relaxed, memory_order_relaxed));
}

/* Healthy, enabled and not ejected: one relaxed load, the only access
 * select makes. */
static inline bool lb_record_ready(const struct lb_record *r)
{
    uint64_t w = atomic_load_explicit(&r->health, memory_order_relaxed);
    return (w & LB_H_READY_MASK) == (LB_H_HEALTHY | LB_H_ENABLED);
}

/* Enabled, whatever its health: what panic mode selects by (one relaxed
 * load). */
static inline bool lb_record_enabled(const struct lb_record *r)
{
    return atomic_load_explicit(&r->health, memory_order_relaxed) &
           LB_H_ENABLED;
}

#endif /* LB_RECORD_H */
