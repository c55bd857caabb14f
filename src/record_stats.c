/*
 * record_stats.c - the figures of a record that metrics read: flips, the
 * time of the last check, the histogram of check durations.
 *
 * Relaxed atomics (STYLE.md's per-backend counters): independent figures,
 * none orders another access; a scrape may see one check in the count and
 * not yet in its bucket.
 */
#include <time.h>

#include "record.h"

#define RELAXED memory_order_relaxed

static const double bounds[LB_CHECK_BUCKETS] = LB_CHECK_BUCKET_BOUNDS;

void lb_record_check_time(struct lb_record *r, uint64_t ns)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    atomic_store_explicit(
        &r->last_check_ms,
        (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, RELAXED);
    if (ns == UINT64_MAX)
        return;
    atomic_fetch_add_explicit(&r->check_time_ns, ns, RELAXED);
    atomic_fetch_add_explicit(&r->check_timed, 1, RELAXED);
    for (int k = 0; k < LB_CHECK_BUCKETS; k++)
        if ((double)ns <= bounds[k] * 1e9) {
            atomic_fetch_add_explicit(&r->check_buckets[k], 1, RELAXED);
            break;
        }
}

void lb_record_stats_get(const struct lb_record *r, lb_record_stats *out)
{
    out->flips = atomic_load_explicit(&r->flips, RELAXED);
    out->last_check_ms = atomic_load_explicit(&r->last_check_ms, RELAXED);
    out->check_time_ns = atomic_load_explicit(&r->check_time_ns, RELAXED);
    out->check_timed = atomic_load_explicit(&r->check_timed, RELAXED);
    for (int k = 0; k < LB_CHECK_BUCKETS; k++)
        out->check_buckets[k] =
            atomic_load_explicit(&r->check_buckets[k], RELAXED);
}
