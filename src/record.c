/*
 * record.c - the per-backend record's operations (see record.h).
 */
#include <math.h>
#include <string.h>
#include <time.h>

#include "record.h"

#define RELAXED memory_order_relaxed

void lb_record_init(struct lb_record *r, bool healthy)
{
    memset(r, 0, sizeof(*r));
    atomic_init(&r->health, (healthy ? LB_H_HEALTHY : 0) | LB_H_ENABLED);
    atomic_init(&r->ready_since_ns, lb_clock_coarse_ns());
}

/* Slow start's clock starts when a record becomes ready.  Stored before
 * the caller raises the ramping flag (seq_cst there), so a sweep that
 * clears the flag and then looks sees this time (src/passive.c). */
static void mark_ready(struct lb_record *r)
{
    atomic_store_explicit(&r->ready_since_ns, lb_clock_coarse_ns(),
                          memory_order_seq_cst);
}

bool lb_record_set_enable(struct lb_record *r, bool enable)
{
    if (!enable) {
        atomic_fetch_and_explicit(&r->health, ~LB_H_ENABLED, RELAXED);
        return false;
    }
    if (atomic_fetch_or_explicit(&r->health, LB_H_ENABLED, RELAXED) &
        LB_H_ENABLED)
        return false;
    mark_ready(r);
    return true;
}

/* Health as selection sees it, enablement aside. */
static inline bool effective(uint64_t w)
{
    return (w & (LB_H_HEALTHY | LB_H_EJECTED)) == LB_H_HEALTHY;
}

/*
 * Pingora's Health::observe_health, as one compare-and-swap:
 * - opposite to the current state: count up; at the threshold flip and
 *   reset the count;
 * - same as the current state: reset the count.
 * The error fields always describe the latest observation (zero after a
 * success), which is what status() reports as last_error.
 */
bool lb_record_observe(struct lb_record *r, bool ok, uint32_t threshold,
                       int err_kind, int err_detail, bool *unejected)
{
    const uint64_t count_max = LB_H_COUNT_MASK >> LB_H_COUNT_SHIFT;
    const uint64_t errbits =
        ok ? 0
           : ((uint64_t)(err_kind & 0xff)) |
                 ((uint64_t)(err_detail & LB_H_DETAIL_MASK) << 8);
    uint64_t old = atomic_load_explicit(&r->health, RELAXED);
    uint64_t neu;
    bool flipped;

    /* the count saturates at count_max: a larger threshold would never flip */
    if (threshold < 1)
        threshold = 1;
    if (threshold > count_max)
        threshold = (uint32_t)count_max;
    do {
        bool healthy = old & LB_H_HEALTHY;
        uint64_t count = (old & LB_H_COUNT_MASK) >> LB_H_COUNT_SHIFT;
        uint64_t low = old & ((1ull << LB_H_KIND_SHIFT) - 1);

        if (healthy != ok) {
            count++;
            if (count >= threshold) {
                count = 0;
                low ^= LB_H_HEALTHY;
            }
        } else {
            count = 0;
        }
        if (count > count_max)
            count = count_max;
        low = (low & ~LB_H_COUNT_MASK) | (count << LB_H_COUNT_SHIFT);
        neu = low | (errbits << LB_H_KIND_SHIFT);
        /* an ejection outlives failed checks (and keeps its error text
         * only until the next check writes its own); a pass ends it */
        if (!ok)
            neu |= old & LB_H_EJECTED;
    } while (!atomic_compare_exchange_weak_explicit(&r->health, &old, neu,
                                                    RELAXED, RELAXED));
    atomic_fetch_add_explicit(ok ? &r->checks_ok : &r->checks_failed, 1,
                              RELAXED);
    if (unejected)
        *unejected = (old & LB_H_EJECTED) && !(neu & LB_H_EJECTED);
    flipped = effective(old) != effective(neu);
    if (flipped && ok)
        mark_ready(r);
    return flipped;
}

/* The EWMA keeps 7/8 of the old value: one compare-and-swap, so two
 * reports at once both count (a plain load and store would lose one). */
uint32_t lb_record_report(struct lb_record *r, bool ok, uint64_t latency_ns)
{
    uint32_t run = 0;

    atomic_fetch_add_explicit(ok ? &r->reports_ok : &r->reports_failed, 1,
                              RELAXED);
    if (ok)
        atomic_store_explicit(&r->passive_failures, 0, RELAXED);
    else
        run = atomic_fetch_add_explicit(&r->passive_failures, 1, RELAXED) + 1;
    if (latency_ns != UINT64_MAX) {
        uint64_t old = atomic_load_explicit(&r->latency_ewma_ns, RELAXED);
        uint64_t neu;

        atomic_store_explicit(&r->latency_last_ns, latency_ns, RELAXED);
        do
            neu = old == 0 ? latency_ns : old - old / 8 + latency_ns / 8;
        while (!atomic_compare_exchange_weak_explicit(&r->latency_ewma_ns, &old,
                                                      neu, RELAXED, RELAXED));
    }
    return run;
}

bool lb_record_eject(struct lb_record *r, uint64_t until_ns, uint32_t run,
                     bool *flipped)
{
    const uint64_t errbits =
        (uint64_t)LB_CHECK_ERR_EJECTED |
        ((uint64_t)(run > LB_H_DETAIL_MASK ? LB_H_DETAIL_MASK : run) << 8);
    uint64_t old = atomic_load_explicit(&r->health, RELAXED), neu;

    *flipped = false;
    do {
        if (old & LB_H_EJECTED)
            return false;
        neu = (old & ((1ull << LB_H_KIND_SHIFT) - 1)) |
              (errbits << LB_H_KIND_SHIFT) | LB_H_EJECTED;
        /* the deadline and count first: a sweep that sees the bit
         * (acquire) sees them */
        atomic_store_explicit(&r->ejected_until_ns, until_ns, RELAXED);
    } while (!atomic_compare_exchange_weak_explicit(
        &r->health, &old, neu, memory_order_release, RELAXED));
    atomic_fetch_add_explicit(&r->ejections, 1, RELAXED);
    atomic_store_explicit(&r->passive_failures, 0, RELAXED);
    *flipped = effective(old);
    return true;
}

bool lb_record_unject(struct lb_record *r, uint64_t now_ns, bool *flipped)
{
    uint64_t old = atomic_load_explicit(&r->health, memory_order_acquire), neu;

    *flipped = false;
    do {
        if (!(old & LB_H_EJECTED))
            return false;
        if (now_ns != UINT64_MAX &&
            now_ns < atomic_load_explicit(&r->ejected_until_ns, RELAXED))
            return false;
        /* the ejection's error text goes with it */
        neu = old & ~LB_H_EJECTED;
        if (((old >> LB_H_KIND_SHIFT) & 0xff) == LB_CHECK_ERR_EJECTED)
            neu &= (1ull << LB_H_KIND_SHIFT) - 1;
    } while (!atomic_compare_exchange_weak_explicit(
        &r->health, &old, neu, memory_order_acquire, memory_order_acquire));
    *flipped = effective(neu);
    if (*flipped)
        mark_ready(r);
    return true;
}

void lb_record_health_get(const struct lb_record *r, lb_health_info *out)
{
    uint64_t w = atomic_load_explicit(&r->health, RELAXED);

    out->healthy = (w & LB_H_HEALTHY) != 0;
    out->enabled = (w & LB_H_ENABLED) != 0;
    out->consecutive = (uint32_t)((w & LB_H_COUNT_MASK) >> LB_H_COUNT_SHIFT);
    out->err_kind = (int32_t)((w >> LB_H_KIND_SHIFT) & 0xff);
    out->err_detail = (int32_t)((w >> LB_H_DETAIL_SHIFT) & LB_H_DETAIL_MASK);
    out->ejected = (w & LB_H_EJECTED) != 0;
}

void lb_record_info_get(const struct lb_record *r, lb_record_info *out)
{
    lb_health_info h;

    lb_record_health_get(r, &h);
    out->healthy = h.healthy;
    out->enabled = h.enabled;
    out->in_flight = atomic_load_explicit(&r->in_flight, RELAXED);
    out->passive_failures = atomic_load_explicit(&r->passive_failures, RELAXED);
    out->ejections = atomic_load_explicit(&r->ejections, RELAXED);
    out->ejected = h.ejected;
    /* the deadline stays in the record after a return (clearing it would
     * race with the next ejection's); it means something while ejected */
    out->ejected_until_ns =
        h.ejected ? atomic_load_explicit(&r->ejected_until_ns, RELAXED) : 0;
    out->latency_ewma_ns = atomic_load_explicit(&r->latency_ewma_ns, RELAXED);
    out->latency_last_ns = atomic_load_explicit(&r->latency_last_ns, RELAXED);
    out->selections = atomic_load_explicit(&r->selections, RELAXED);
    out->checks_ok = atomic_load_explicit(&r->checks_ok, RELAXED);
    out->checks_failed = atomic_load_explicit(&r->checks_failed, RELAXED);
    out->reports_ok = atomic_load_explicit(&r->reports_ok, RELAXED);
    out->reports_failed = atomic_load_explicit(&r->reports_failed, RELAXED);
}

uint64_t lb_record_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Milliseconds from word w's stamp to now_ms; a stamp "ahead" of now
 * (another thread's coarse clock read a tick later) is no time at all,
 * not 2.2 years. */
static uint64_t peak_age_ms(uint64_t w, uint64_t now_ms)
{
    uint64_t dt = (now_ms - (w >> LB_PEAK_COST_BITS)) & LB_PEAK_STAMP_MASK;

    return dt > LB_PEAK_STAMP_MASK / 2 ? 0 : dt;
}

/*
 * Finagle's PeakEwma.observe decays the cost on every read (its get()
 * observes 0) and compares a sample with the cost as last read.  Reads
 * here write nothing, so the sample is compared with the cost decayed to
 * now: the same as Finagle with a read just before each sample.
 */
void lb_record_latency_peak(struct lb_record *r, uint64_t latency_ns,
                            uint64_t now_ms, double decay_ms)
{
    uint64_t old = atomic_load_explicit(&r->latency_peak, RELAXED), neu;
    double rtt = (double)latency_ns / 1000.0;

    do {
        double cost = rtt;

        if (old != 0) {
            double w = exp(-(double)peak_age_ms(old, now_ms) / decay_ms);
            double decayed = (double)(old & LB_PEAK_COST_MAX) * w;
            if (rtt <= decayed)
                cost = decayed + rtt * (1.0 - w);
        }
        if (cost > (double)LB_PEAK_COST_MAX)
            cost = (double)LB_PEAK_COST_MAX;
        neu = ((now_ms & LB_PEAK_STAMP_MASK) << LB_PEAK_COST_BITS) |
              (uint64_t)(cost + 0.5);
        if (neu == 0)
            neu = 1ull << LB_PEAK_COST_BITS; /* a sample, at stamp 1 ms */
    } while (!atomic_compare_exchange_weak_explicit(&r->latency_peak, &old, neu,
                                                    RELAXED, RELAXED));
}

/* At least 1 ns once a sample exists: a cost decayed to nothing still
 * tells a backend that answered from one that never did. */
uint64_t lb_record_latency_peak_get(const struct lb_record *r, uint64_t now_ms,
                                    double decay_ms)
{
    uint64_t w = atomic_load_explicit(&r->latency_peak, RELAXED);
    double ns;

    if (w == 0)
        return 0;
    ns = (double)(w & LB_PEAK_COST_MAX) * 1000.0 *
         exp(-(double)peak_age_ms(w, now_ms) / decay_ms);
    return ns < 1 ? 1 : (uint64_t)ns;
}
