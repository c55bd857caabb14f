/*
 * fnv.c - FNV-1a 64 hashing over the weighted list (Pingora's FNVHash).
 *
 * The first index is FNV-1a 64 of the key; each fallback index is FNV-1a 64
 * of the previous index's 8 little-endian bytes (Pingora feeds
 * `index.to_le_bytes()` back into the hasher).
 */
#include "weighted.h"

/* FNV-1a 64: offset basis and prime from the FNV specification. */
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static inline uint64_t fnv1a64(const unsigned char *p, size_t len)
{
    uint64_t h = FNV_OFFSET;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t fnv_of_index(uint64_t index)
{
    unsigned char le[8];

    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(index >> (8 * i));
    return fnv1a64(le, sizeof(le));
}

static uint32_t fnv_first(void *sel, const char *key, size_t len,
                          uint64_t *state)
{
    *state = fnv1a64((const unsigned char *)key, len);
    return lb_weighted_first(sel, *state);
}

static uint32_t fnv_next(void *sel, uint64_t *state)
{
    *state = fnv_of_index(*state);
    return lb_weighted_fallback(sel, *state);
}

const struct lb_selector_ops lb_select_fnv = {
    .build = lb_weighted_build,
    .first = fnv_first,
    .next = fnv_next,
    .destroy = lb_weighted_destroy,
};
