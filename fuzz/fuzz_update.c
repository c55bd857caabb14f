/*
 * fuzz_update.c - the backend-list path of discovery: arbitrary backend
 * arrays into lb_balancer_update.
 *
 * Input: one config byte (bits 0-1 algorithm, bit 2 start_unhealthy, bits
 * 3-4 point_multiple), then up to MAX_UPDATES updates.  Each starts with a
 * command byte (bits 0-1: 0 text lines, 1 raw structs, 2 empty set, 3 the
 * previous array again; bit 2: flip health before it) and a count byte
 * (n = count % MAX_N), then n entries:
 *   text:  weight code, enable code, then an address line up to '\n', as
 *          a binding that parses discovery results with lb_backend_parse
 *          would pass it (with weight code bit 7, a line that fails to
 *          parse is passed anyway, as a careless binding might);
 *   raw:   a valid template backend with fields overwritten from the
 *          input (family, weight, port, lengths, address bytes, enable),
 *          as a C caller filling the struct itself might.
 *
 * Promises checked after every update:
 *   - a failure leaves the published set untouched: same generation, same
 *     backends byte for byte, same health records (id, health, enabled);
 *   - a failure happens exactly when an input entry is invalid (weight out
 *     of 1-1000, unknown family, malformed lengths) or the consistent ring
 *     would exceed LB_MAX_POINTS;
 *   - success publishes the inputs sorted by lb_backend_compare, strictly
 *     increasing (so unique), each equal to the first input entry of its
 *     identity; `order` and `count` describe it; 1 is returned exactly when
 *     the set changed (and the generation moved by one);
 *   - a backend that stays keeps its health record (same id, same
 *     health), also when only its weight changed (within one address,
 *     the unmatched new entries take the unclaimed old records in weight
 *     order); a new one starts healthy (unhealthy with start_unhealthy)
 *     and enabled; an explicit enable is applied (the last entry wins),
 *     also when the set is unchanged;
 *   - selections afterwards return members of the set.
 */
#include <stdbool.h>

#include "fuzz.h"
#include "lb.h"

#define MAX_UPDATES 24
#define MAX_N 40

static const char *const templates[] = {
    "127.0.0.1:80",      "127.0.0.1:81", "10.0.0.1:80",
    "[::1]:80",          "[::1]:81",     "[fe80::1]:443",
    "unix:/tmp/lb.sock", "unix:/tmp/b",  "255.255.255.255:65535",
};
#define NTEMPLATES (sizeof(templates) / sizeof(templates[0]))

static const uint32_t weight_codes[] = {1, 1, 2, 3, 1000, 0, 1001, UINT32_MAX};

struct shadow {
    uint64_t gen;
    size_t n;
    lb_backend be[MAX_N];
    lb_health_info h[MAX_N];
};

static void capture(lb_balancer *b, struct shadow *s)
{
    s->gen = lb_balancer_generation(b);
    s->n = lb_balancer_count(b);
    FUZZ_ASSERT(s->n <= MAX_N);
    for (size_t i = 0; i < s->n; i++) {
        FUZZ_ASSERT(lb_balancer_backend(b, i, &s->be[i]) == LB_OK);
        FUZZ_ASSERT(lb_balancer_health(b, i, &s->h[i]) == LB_OK);
    }
    FUZZ_ASSERT(lb_balancer_backend(b, s->n, &s->be[0]) == LB_DECLINED ||
                s->n > 0);
}

static bool entry_valid(const lb_backend *e)
{
    return e->weight >= 1 && e->weight <= LB_MAX_WEIGHT &&
           e->family <= LB_AF_UNIX && e->addr_len < LB_ADDR_MAX &&
           e->host_len < LB_ADDR_MAX;
}

static int cmp_backend(const void *a, const void *b)
{
    return lb_backend_compare(a, b);
}

static void read_text(struct fuzz_in *in, lb_backend *e, bool *keep)
{
    uint8_t wc = fuzz_u8(in), ec = fuzz_u8(in);
    size_t len;
    const uint8_t *line = fuzz_line(in, &len);
    const char *err;
    int rc = lb_backend_parse((const char *)line, len, weight_codes[wc & 7], e,
                              &err);

    *keep = rc == LB_OK || (wc & 0x80);
    e->enable = (int8_t)(ec % 3) - 1;
}

static void read_raw(struct fuzz_in *in, lb_backend *e)
{
    uint8_t t = fuzz_u8(in), mask = fuzz_u8(in);
    const char *err;

    FUZZ_ASSERT(lb_backend_parse(templates[t % NTEMPLATES],
                                 strlen(templates[t % NTEMPLATES]), 1, e,
                                 &err) == LB_OK);
    e->weight = 1 + (t >> 4);
    if (mask & 1)
        e->family = fuzz_u8(in);
    if (mask & 2)
        e->weight = fuzz_u32(in);
    if (mask & 4)
        e->port = fuzz_u16(in);
    if (mask & 8)
        e->host_len = fuzz_u16(in);
    if (mask & 16)
        e->addr_len = fuzz_u16(in);
    if (mask & 32) {
        size_t n;
        const uint8_t *p = fuzz_bytes(in, 16, &n);
        memcpy(e->ip, p, n);
    }
    if (mask & 64) {
        size_t n, off = fuzz_u8(in) % 120;
        const uint8_t *p = fuzz_bytes(in, 8, &n);
        memcpy(e->host + off, p, n);
    }
    e->enable = (int8_t)((mask >> 7) ? (int)(t % 3) - 1 : -1);
}

/* Walk a few keys: every pick is a member of the set. */
static void probe_selects(lb_balancer *b, lb_iter *it, size_t n)
{
    static const char *const keys[] = {"", "a", "/index.html", "key-7"};

    for (size_t k = 0; k < 4; k++) {
        int idx = lb_balancer_select(b, keys[k], strlen(keys[k]), 8, it);
        FUZZ_ASSERT(idx == LB_DECLINED || (idx >= 0 && (size_t)idx < n));
        if (n == 0)
            FUZZ_ASSERT(idx == LB_DECLINED);
    }
}

/* The same address, whatever the weights: lb_backend_compare orders by
 * address first and weight last. */
static bool same_address(const lb_backend *a, const lb_backend *b)
{
    lb_backend x = *a;

    x.weight = b->weight;
    return lb_backend_compare(&x, b) == 0;
}

/*
 * The record each new backend should inherit, computed apart from the
 * core: the old backend of the same (address, weight), else, within one
 * address, the unclaimed old backends handed to the unmatched new ones in
 * sorted (weight) order: a weight-only change keeps the record.  kept[i]
 * is the index in before->be, or -1 for a new record.
 */
static void expect_records(const struct shadow *before,
                           const lb_backend *sorted, size_t m, long *kept)
{
    bool claimed[MAX_N] = {false};

    for (size_t i = 0; i < m; i++) {
        kept[i] = -1;
        for (size_t k = 0; k < before->n; k++)
            if (lb_backend_compare(&before->be[k], &sorted[i]) == 0) {
                kept[i] = (long)k;
                claimed[k] = true;
            }
    }
    for (size_t i = 0; i < m; i++) {
        if (kept[i] >= 0)
            continue;
        for (size_t k = 0; k < before->n; k++)
            if (!claimed[k] && same_address(&before->be[k], &sorted[i])) {
                kept[i] = (long)k;
                claimed[k] = true;
                break;
            }
    }
}

static void check_update(lb_balancer *b, const lb_config *cfg,
                         const lb_backend *in, size_t n, const uint32_t *order,
                         size_t count, int rc, const char *err,
                         const struct shadow *before)
{
    struct shadow after;
    lb_backend sorted[MAX_N];
    long kept[MAX_N];
    size_t m = 0;
    bool bad = false;
    uint64_t points = 0;

    capture(b, &after);
    for (size_t i = 0; i < n; i++) {
        if (!entry_valid(&in[i]))
            bad = true;
        else
            points += (uint64_t)in[i].weight * cfg->point_multiple;
    }
    if (cfg->selection == LB_SELECT_CONSISTENT && points > LB_MAX_POINTS)
        bad = true;

    if (rc < 0) {
        FUZZ_ASSERT(rc == LB_ERROR);
        FUZZ_ASSERT(err && err[0]);
        FUZZ_ASSERT(bad);
        FUZZ_ASSERT(after.gen == before->gen);
        FUZZ_ASSERT(after.n == before->n);
        for (size_t i = 0; i < after.n; i++) {
            FUZZ_ASSERT(
                !memcmp(&after.be[i], &before->be[i], sizeof(lb_backend)));
            FUZZ_ASSERT(after.h[i].id == before->h[i].id);
            FUZZ_ASSERT(after.h[i].healthy == before->h[i].healthy);
            FUZZ_ASSERT(after.h[i].enabled == before->h[i].enabled);
        }
        return;
    }
    FUZZ_ASSERT(!bad);
    FUZZ_ASSERT(rc == 0 || rc == 1);

    /* The expected set, computed apart: sort, drop repeats. */
    memcpy(sorted, in, n * sizeof(lb_backend));
    qsort(sorted, n, sizeof(lb_backend), cmp_backend);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || lb_backend_compare(&sorted[m - 1], &sorted[i]) != 0)
            sorted[m++] = sorted[i];
    FUZZ_ASSERT(count == m);
    FUZZ_ASSERT(after.n == m);
    FUZZ_ASSERT(after.gen == before->gen + (uint64_t)rc);
    {
        bool changed = before->n != m;
        for (size_t i = 0; !changed && i < m; i++)
            changed = lb_backend_compare(&before->be[i], &sorted[i]) != 0;
        FUZZ_ASSERT(changed == (rc == 1));
    }
    expect_records(before, sorted, m, kept);
    for (size_t i = 0; i < m; i++) {
        const lb_backend *p = &after.be[i];
        size_t first = n;
        int8_t enable = -1;
        lb_backend want;

        FUZZ_ASSERT(lb_backend_compare(p, &sorted[i]) == 0);
        if (i > 0)
            FUZZ_ASSERT(lb_backend_compare(&after.be[i - 1], p) < 0);
        FUZZ_ASSERT(order[i] < n);
        FUZZ_ASSERT(lb_backend_compare(&in[order[i]], p) == 0);
        for (size_t j = 0; j < n; j++) {
            if (lb_backend_compare(&in[j], p) != 0)
                continue;
            if (first == n)
                first = j;
            if (in[j].enable >= 0)
                enable = in[j].enable;
        }
        FUZZ_ASSERT(first == order[i]);
        if (rc == 1) {
            want = in[first];
            want.enable = p->enable;
            FUZZ_ASSERT(!memcmp(&want, p, sizeof(want)));
        }

        /* Health: kept records survive (also across a weight-only
         * change), new ones start fresh. */
        {
            long k = kept[i];
            if (k >= 0) {
                FUZZ_ASSERT(after.h[i].id == before->h[k].id);
                FUZZ_ASSERT(after.h[i].healthy == before->h[k].healthy);
                if (enable < 0)
                    FUZZ_ASSERT(after.h[i].enabled == before->h[k].enabled);
            } else {
                FUZZ_ASSERT(after.h[i].healthy == !cfg->start_unhealthy);
                if (enable < 0)
                    FUZZ_ASSERT(after.h[i].enabled == 1);
            }
            if (enable >= 0)
                FUZZ_ASSERT(after.h[i].enabled == enable);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint32_t multiples[] = {1, 2, 0, 1000};
    struct fuzz_in in = {data, size};
    uint8_t c0 = fuzz_u8(&in);
    lb_config cfg = {.selection = c0 & 3,
                     .start_unhealthy = (c0 >> 2) & 1,
                     .point_multiple = multiples[(c0 >> 3) & 3]};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_iter *it = lb_iter_new();
    static lb_backend arr[MAX_N];
    static struct shadow before;
    size_t n = 0;

    FUZZ_ASSERT(b && it);
    if (cfg.point_multiple == 0)
        cfg.point_multiple = 160;
    for (int u = 0; u < MAX_UPDATES && in.left > 0; u++) {
        uint8_t cmd = fuzz_u8(&in), cnt = fuzz_u8(&in);
        uint32_t order[MAX_N];
        size_t count = 0;
        int rc;

        if (cmd & 4) {
            size_t cur = lb_balancer_count(b);
            uint64_t gen = lb_balancer_generation(b);
            for (size_t i = 0; i < cur; i++)
                lb_balancer_observe(b, gen, i, (cnt >> (i & 7)) & 1, 1,
                                    LB_CHECK_ERR_CONNECT, 111);
        }
        switch (cmd & 3) {
        case 0:
            n = 0;
            for (size_t i = 0, want = cnt % MAX_N; i < want; i++) {
                bool keep;
                read_text(&in, &arr[n], &keep);
                if (keep)
                    n++;
            }
            break;
        case 1:
            n = cnt % MAX_N;
            for (size_t i = 0; i < n; i++)
                read_raw(&in, &arr[i]);
            break;
        case 2:
            n = 0;
            break;
        default:
            for (size_t i = 0; i < n; i++)
                arr[i].enable = (int8_t)((cnt >> (i & 3)) % 3) - 1;
            break;
        }
        capture(b, &before);
        err = NULL;
        memset(order, 0xff, sizeof(order));
        rc = lb_balancer_update(b, n ? arr : NULL, n, order, &count, &err);
        check_update(b, &cfg, arr, n, order, count, rc, err, &before);
        probe_selects(b, it, lb_balancer_count(b));
    }
    lb_iter_free(it);
    lb_balancer_free(b);
    return 0;
}
