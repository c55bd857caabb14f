/*
 * health.c - health records: one atomic word per backend.
 */
#include <stdlib.h>

#include "core.h"

static _Atomic uint64_t next_id = 1;

struct lb_health *lb_health_new(bool healthy)
{
    struct lb_health *h = malloc(sizeof(*h));

    if (!h)
        return NULL;
    atomic_init(&h->word, (healthy ? LB_H_HEALTHY : 0) | LB_H_ENABLED);
    atomic_init(&h->refs, 1);
    h->id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed);
    return h;
}

void lb_health_ref(struct lb_health *h)
{
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
}

/* The last reference frees at once: see core.h for why no grace period is
 * needed here. */
void lb_health_unref(struct lb_health *h)
{
    if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1)
        free(h);
}

void lb_health_set_enable(struct lb_health *h, bool enable)
{
    if (enable)
        atomic_fetch_or_explicit(&h->word, LB_H_ENABLED, memory_order_relaxed);
    else
        atomic_fetch_and_explicit(&h->word, ~LB_H_ENABLED,
                                  memory_order_relaxed);
}

/*
 * Pingora's Health::observe_health, as one compare-and-swap:
 * - opposite to the current state: count up; at the threshold flip and
 *   reset the count;
 * - same as the current state: reset the count.
 * The error fields always describe the latest observation (zero after a
 * success), which is what status() reports as last_error.
 */
bool lb_health_observe(struct lb_health *h, bool ok, uint32_t threshold,
                       int err_kind, int err_detail)
{
    const uint64_t count_max = LB_H_COUNT_MASK >> LB_H_COUNT_SHIFT;
    const uint64_t errbits = ok ? 0
                                : ((uint64_t)(err_kind & 0xff)) |
                                      ((uint64_t)(err_detail & 0xffffff) << 8);
    uint64_t old = atomic_load_explicit(&h->word, memory_order_relaxed);
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

        flipped = false;
        if (healthy != ok) {
            count++;
            if (count >= threshold) {
                flipped = true;
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
    } while (!atomic_compare_exchange_weak_explicit(
        &h->word, &old, neu, memory_order_relaxed, memory_order_relaxed));
    return flipped;
}

void lb_health_info_get(const struct lb_health *h, lb_health_info *out)
{
    uint64_t w = atomic_load_explicit(&h->word, memory_order_relaxed);

    out->id = h->id;
    out->healthy = (w & LB_H_HEALTHY) != 0;
    out->enabled = (w & LB_H_ENABLED) != 0;
    out->consecutive = (uint32_t)((w & LB_H_COUNT_MASK) >> LB_H_COUNT_SHIFT);
    out->err_kind = (int32_t)((w >> LB_H_KIND_SHIFT) & 0xff);
    out->err_detail = (int32_t)((w >> LB_H_DETAIL_SHIFT) & 0xffffff);
}
