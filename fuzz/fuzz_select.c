/*
 * fuzz_select.c - the selection path on arbitrary keys, backend sets,
 * max_iterations, health flips and in-flight counts, for every algorithm.
 *
 * Input: a config byte (bits 0-1 algorithm, with bit 7 one of the round-2
 * four (weighted_round_robin, least_request, peak_ewma, maglev); bits 2-3
 * point_multiple, where the default multiple with consistent also sets
 * hash_balance_factor 1.5; bit 4 start_unhealthy), a count byte and that many
 * backend descriptions (family, address byte, port, weight) or, with the
 * count's top bit, a run of up to 382 consecutive ports, then operations until
 * the input ends: select, a full walk (lb_iter_first/next), a health
 * observation, an enable/disable, an update to another set (the pending walk
 * must then go stale), a walk continued after a select, and a walk of a second,
 * differently sized balancer with the same iterator.
 *
 * Promises checked:
 *   - every index returned is a member of the set (index < count) of the
 *     generation the iterator reports, and `ready` says its readiness;
 *   - a walk never yields an index twice, yields at most max_iterations
 *     candidates and takes at most max_iterations steps;
 *   - select returns a ready backend or LB_DECLINED, never declines when
 *     every backend is ready, and for the deterministic algorithms (fnv,
 *     consistent, maglev) it is the first ready candidate of the walk for
 *     the key;
 *   - fnv's first candidate is Pingora's: the weight-expanded list at
 *     FNV-1a 64 (key) modulo the total weight;
 *   - an iterator whose snapshot was replaced reports LB_STALE.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "iter.h"
#include "lb.h"

#define MAX_SET 48
#define MAX_OPS 64
#define MAX_WALK 4096 /* max_iterations cap: a walk costs up to this */

struct set {
    lb_backend be[128 * 3 + 1];
    size_t n;
};

static void make_backend(uint8_t kind, uint8_t a, uint16_t port, uint8_t w,
                         lb_backend *out)
{
    char text[64];
    const char *err;
    uint32_t weight = w == 255 ? LB_MAX_WEIGHT : 1 + w % 16;
    int len;

    port = port ? port : 1;
    switch (kind % 3) {
    case 0:
        len =
            snprintf(text, sizeof(text), "10.0.%u.%u:%u", a >> 4, a & 15, port);
        break;
    case 1:
        len = snprintf(text, sizeof(text), "[fd00::%x]:%u", a, port);
        break;
    default:
        len = snprintf(text, sizeof(text), "unix:/tmp/lb-%u", a);
        break;
    }
    FUZZ_ASSERT(lb_backend_parse(text, (size_t)len, weight, out, &err) ==
                LB_OK);
}

static void read_set(struct fuzz_in *in, struct set *s)
{
    uint8_t c = fuzz_u8(in);
    size_t want = c % (MAX_SET + 1);

    s->n = 0;
    if (c & 0x80) {
        /* A run of consecutive ports: sets larger than one 64-bit word of
         * the iterator's bitmap, described by two bytes. */
        uint8_t kind = fuzz_u8(in);
        for (size_t i = 0; i < (size_t)(c & 0x7f) * 3 + 1; i++)
            make_backend(kind, 1, (uint16_t)(1000 + i), 0, &s->be[s->n++]);
        return;
    }
    for (size_t i = 0; i < want; i++) {
        uint8_t kind = fuzz_u8(in), a = fuzz_u8(in);
        uint16_t port = fuzz_u16(in);
        make_backend(kind, a, port, fuzz_u8(in), &s->be[s->n++]);
    }
}

static const char *read_key(struct fuzz_in *in, size_t *len)
{
    return (const char *)fuzz_bytes(in, fuzz_u8(in) % 64, len);
}

static uint32_t read_max(struct fuzz_in *in)
{
    uint16_t v = fuzz_u16(in);
    /* Mostly small (the interesting edge: 0, 1, fewer than the set), now
     * and then up to MAX_WALK. */
    return v & 0x8000 ? (uint32_t)(v % (MAX_WALK + 1)) : (uint32_t)(v % 8);
}

static void publish(lb_balancer *b, const struct set *s)
{
    const char *err;
    int rc = lb_balancer_update(b, s->n ? s->be : NULL, s->n, NULL, NULL, &err);
    FUZZ_ASSERT(rc == 0 || rc == 1 || (rc == LB_ERROR && s->n > 16));
}

/* Pingora's FNVHash first pick, computed apart from src/select/. */
static uint32_t fnv_oracle(lb_balancer *b, size_t n, const char *key,
                           size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull, total = 0, at;
    lb_backend be;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    for (size_t i = 0; i < n; i++) {
        FUZZ_ASSERT(lb_balancer_backend(b, i, &be) == LB_OK);
        total += be.weight;
    }
    at = h % total;
    for (size_t i = 0; i < n; i++) {
        lb_balancer_backend(b, i, &be);
        if (at < be.weight)
            return (uint32_t)i;
        at -= be.weight;
    }
    FUZZ_ASSERT(0);
    return 0;
}

/* A full walk; returns the first ready index, or -1.  *yields counts the
 * candidates. */
static int walk(lb_balancer *b, int alg, const char *key, size_t len,
                uint32_t max, lb_iter *it, size_t *yields)
{
    static uint8_t seen[LB_MAX_BACKENDS];
    size_t n = lb_balancer_count(b);
    uint64_t gen = lb_balancer_generation(b);
    int idx = lb_iter_first(b, key, len, max, it), first_ready = -1;

    *yields = 0;
    memset(seen, 0, n);
    if (n == 0 || max == 0) {
        FUZZ_ASSERT(idx == LB_DECLINED);
        return -1;
    }
    FUZZ_ASSERT(idx >= 0);
    if (alg == LB_SELECT_FNV)
        FUZZ_ASSERT((uint32_t)idx == fnv_oracle(b, n, key, len));
    while (idx >= 0) {
        FUZZ_ASSERT((size_t)idx < n);
        FUZZ_ASSERT(lb_iter_head_of(it)->gen == gen);
        FUZZ_ASSERT(!seen[idx]);
        seen[idx] = 1;
        ++*yields;
        FUZZ_ASSERT(*yields <= max);
        FUZZ_ASSERT(it->steps <= max);
        FUZZ_ASSERT(lb_iter_head_of(it)->ready ==
                    lb_balancer_ready(b, gen, (size_t)idx));
        if (lb_iter_head_of(it)->ready && first_ready < 0)
            first_ready = idx;
        idx = lb_iter_next(b, it);
    }
    FUZZ_ASSERT(idx == LB_DECLINED);
    FUZZ_ASSERT(it->steps <= max);
    return first_ready;
}

static bool all_ready(lb_balancer *b)
{
    size_t n = lb_balancer_count(b);
    uint64_t gen = lb_balancer_generation(b);

    for (size_t i = 0; i < n; i++)
        if (lb_balancer_ready(b, gen, i) != 1)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t multiples[] = {1, 3, 10, 0};
    static struct set cur, other;
    struct fuzz_in in = {data, size};
    uint8_t c0 = fuzz_u8(&in);
    lb_config cfg = {.selection = (c0 & 3) + 4 * (c0 >> 7),
                     .point_multiple = multiples[(c0 >> 2) & 3],
                     .start_unhealthy = (c0 >> 4) & 1};
    lb_config cfg2 = {.selection = (c0 >> 5) & 3, .point_multiple = 2};
    const char *err;
    int maglev = lb_selection_find("maglev", 6, NULL);
    lb_balancer *b;
    lb_balancer *b2 = lb_balancer_new(&cfg2, &err);
    lb_iter *it = lb_iter_new();
    size_t yields;

    if (cfg.selection == LB_SELECT_CONSISTENT && cfg.point_multiple == 0)
        cfg.hash_balance_factor = 1.5;
    /* a small prime table (sets reach 385 backends) keeps runs fast; a set
     * above it is refused, which publish() allows for sets above 16 */
    if (cfg.selection == maglev)
        cfg.table_size = 389;
    b = lb_balancer_new(&cfg, &err);

    FUZZ_ASSERT(b && b2 && it);
    read_set(&in, &cur);
    publish(b, &cur);
    for (int op = 0; op < MAX_OPS && in.left > 0; op++) {
        uint8_t code = fuzz_u8(&in);
        size_t n = lb_balancer_count(b), klen;
        uint64_t gen = lb_balancer_generation(b);

        switch (code % 7) {
        case 0: { /* select */
            const char *key = read_key(&in, &klen);
            uint32_t max = read_max(&in);
            bool ready = all_ready(b);
            int idx = lb_balancer_select(b, key, klen, max, it);

            FUZZ_ASSERT(lb_iter_head_of(it)->gen == gen);
            FUZZ_ASSERT(idx == LB_DECLINED || (idx >= 0 && (size_t)idx < n));
            if (idx >= 0)
                FUZZ_ASSERT(lb_balancer_ready(b, gen, (size_t)idx) == 1);
            if (ready && n > 0 && max > 0)
                FUZZ_ASSERT(idx >= 0);
            if (cfg.selection == LB_SELECT_FNV ||
                cfg.selection == LB_SELECT_CONSISTENT ||
                cfg.selection == maglev) {
                lb_iter *w = lb_iter_new();
                int first = walk(b, cfg.selection, key, klen, max, w, &yields);
                FUZZ_ASSERT(idx == (first >= 0 ? first : LB_DECLINED));
                lb_iter_free(w);
            }
            break;
        }
        case 1: { /* walk */
            const char *key = read_key(&in, &klen);
            walk(b, cfg.selection, key, klen, read_max(&in), it, &yields);
            break;
        }
        case 2: /* observe */
            if (n > 0) {
                uint8_t i = fuzz_u8(&in), t = fuzz_u8(&in);
                int rc =
                    lb_balancer_observe(b, gen, i % n, t & 1, 1 + (t >> 1) % 3,
                                        LB_CHECK_ERR_TIMEOUT, 4);
                FUZZ_ASSERT(rc == 0 || rc == 1);
            }
            break;
        case 3: /* enable / disable */
            if (n > 0) {
                uint8_t i = fuzz_u8(&in);
                FUZZ_ASSERT(lb_balancer_set_enable(b, gen, i % n,
                                                   (i >> 7) & 1) == LB_OK);
                /* and requests in flight, for the algorithms that count */
                FUZZ_ASSERT(lb_balancer_in_flight_add(
                                b, gen, i % n, (i & 64) ? 3 : -1) == LB_OK);
            }
            break;
        case 4: { /* a new set while a walk is pending */
            const char *key = read_key(&in, &klen);
            int idx = lb_iter_first(b, key, klen, 16, it);

            read_set(&in, &other);
            publish(b, &other);
            if (idx >= 0 && lb_balancer_generation(b) != gen)
                FUZZ_ASSERT(lb_iter_next(b, it) == LB_STALE);
            cur = other;
            break;
        }
        case 5: { /* a walk continued after select */
            const char *key = read_key(&in, &klen);
            uint32_t max = read_max(&in);
            int idx = lb_balancer_select(b, key, klen, max, it);
            int picked = idx;
            bool walked = it->max_steps != 0;

            /* Select's own walk goes on past its pick (or is over when
             * its first candidate was ready); never the iterator's older
             * walk, never a repeat. */
            for (int k = 0; k < 4; k++) {
                FUZZ_ASSERT(idx == LB_DECLINED ||
                            (idx >= 0 && (size_t)idx < n));
                idx = lb_iter_next(b, it);
                FUZZ_ASSERT(idx != picked || idx < 0);
                if (!walked)
                    FUZZ_ASSERT(idx == LB_DECLINED);
            }
            break;
        }
        default: { /* the same iterator on another balancer */
            const char *key = read_key(&in, &klen);

            read_set(&in, &other);
            publish(b2, &other);
            walk(b2, cfg2.selection, key, klen, read_max(&in), it, &yields);
            walk(b, cfg.selection, key, klen, read_max(&in), it, &yields);
            break;
        }
        }
    }
    lb_iter_free(it);
    lb_balancer_free(b);
    lb_balancer_free(b2);
    return 0;
}
