/*
 * consistent.c - Ketama consistent hashing, exactly as nginx's
 * `hash $key consistent` (ngx_http_upstream_hash_module.c) and Pingora's
 * pingora-ketama build their ring:
 *
 *   base   = crc32 state after "host" "\0" "port"      (not finalised)
 *   point0 = crc32_final(base + 4 LE bytes of 0)
 *   pointj = crc32_final(base + 4 LE bytes of point(j-1))
 *   weight * point_multiple points per server (nginx: 160), sorted by hash,
 *   equal hashes dropped after the first; a key goes to the first point
 *   whose hash >= crc32(key), wrapping to the first point.
 *
 * The server text is nginx's: "127.0.0.1" + "8080", "[::1]" (brackets kept)
 * + "8080", and for "unix:/p" the path "/p" with an empty port.  Pingora
 * skips unix backends; we hash them as nginx does.
 *
 * Ties between servers on one hash value are broken by the backend's
 * sorted position (nginx: config order; Pingora: its sorted order).  With
 * 32-bit hashes this decides about one point in 10^5 at 1000 servers.
 *
 * Build: point generation walks four backends' crc chains side by side,
 * then a counting sort by the top bits places the points directly in their
 * buckets; no comparison sort over the whole ring.
 *
 * Lookup: a binary search over 160,000 points costs ~17 dependent cache
 * misses.  Instead the ring carries a table indexed by the top `bits` bits of
 * the hash, giving the first point of each bucket; with about two points per
 * bucket, a lookup is one table load and four branch-free compares within
 * one cache line.
 *
 * Bounded loads (hash_balance_factor c >= 1; Mirrokni, Thorup and
 * Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018, as
 * HAProxy's hash-balance-factor and Envoy's hash_balance_factor apply it):
 * a backend is full when its in-flight count plus the request being
 * placed exceeds ceil(c x (total in flight + 1) / ready backends), the
 * request counted in the total as Envoy counts it.  The key's point is
 * found as above, then the ring is walked past the points of full
 * backends.  The capacities sum to more than the requests, so a backend
 * with room exists.  Summing the counts is O(n) per pick (n relaxed
 * loads); the bound is computed once per walk and carried in the walk's
 * state, so next() skips full backends too.  Without the option, the ring
 * and every pick are exactly nginx's.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "select.h"

/* Points compared without a branch in a lookup; the hash array carries as
 * many entries of padding after its last point. */
#define SCAN 4

/* A point and its owner side by side: the lookup's compares and the owner
 * it returns then share a cache line. */
struct point {
    uint32_t hash;
    uint32_t owner; /* backend index */
};

struct ketama {
    uint32_t npoints;
    uint32_t shift;            /* 32 - bits */
    uint32_t *lut;             /* (1 << bits) + 1 entries: first point index */
    struct point *pts;         /* npoints (+ SCAN padding), ascending by hash */
    size_t pts_size, lut_size; /* bytes held, for array_give */
    double factor;             /* hash_balance_factor; 0: off */
    const struct lb_record_view *view;
};

/* CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the one nginx's
 * ngx_crc32 and crc32fast compute; slicing-by-8 tables. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                              crc_table[0][crc_table[t - 1][i] & 0xff];
}

static inline uint32_t crc_update(uint32_t c, const unsigned char *p,
                                  size_t len)
{
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                           (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
            crc_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    /* The tail in 4-, 2- and 1-byte slices: keys are short ("/user/42"),
     * and a byte at a time is one dependent table load per byte. */
    if (len & 4) {
        uint32_t x = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                          (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[3][x & 0xff] ^ crc_table[2][(x >> 8) & 0xff] ^
            crc_table[1][(x >> 16) & 0xff] ^ crc_table[0][x >> 24];
        p += 4;
    }
    if (len & 2) {
        uint32_t x = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8);
        c = (c >> 16) ^ crc_table[1][x & 0xff] ^ crc_table[0][(x >> 8) & 0xff];
        p += 2;
    }
    if (len & 1)
        c = (c >> 8) ^ crc_table[0][(c ^ *p) & 0xff];
    return c;
}

/* One point: the base state extended by the previous point's 4 LE bytes. */
static inline uint32_t crc_point(uint32_t base, uint32_t prev)
{
    uint32_t c = base ^ prev;

    c = crc_table[3][c & 0xff] ^ crc_table[2][(c >> 8) & 0xff] ^
        crc_table[1][(c >> 16) & 0xff] ^ crc_table[0][c >> 24];
    return ~c;
}

/* The text nginx hashes for a server, split into host and port. */
static uint32_t server_base(const lb_backend *b)
{
    char port[8];
    int plen = 0;
    uint32_t c = 0xffffffffu;

    if (b->family == LB_AF_INET6) {
        c = crc_update(c, (const unsigned char *)"[", 1);
        c = crc_update(c, (const unsigned char *)b->host, b->host_len);
        c = crc_update(c, (const unsigned char *)"]", 1);
    } else {
        c = crc_update(c, (const unsigned char *)b->host, b->host_len);
    }
    c = crc_update(c, (const unsigned char *)"", 1);
    if (b->family != LB_AF_UNIX) {
        plen = snprintf(port, sizeof(port), "%u", b->port);
        c = crc_update(c, (const unsigned char *)port, (size_t)plen);
    }
    return c;
}

/*
 * Spare arrays.  Every build allocates a new ring (the old one is in use
 * until its grace period ends), and a 1000-backend ring is about 2 MB of
 * arrays: glibc maps such blocks fresh and unmaps them on free, and
 * faulting 500 pages in again costs more than computing the ring.  So the
 * arrays of a destroyed ring are kept for the next build (at most
 * NSPARE blocks, each reused only for a request of at least half its size),
 * and a process that updates periodically reuses warm memory.
 */
#define NSPARE 3

static struct {
    pthread_mutex_t lock;
    void *ptr[NSPARE];
    size_t size[NSPARE];
} spare = {.lock = PTHREAD_MUTEX_INITIALIZER};
static void spare_lock(void) { pthread_mutex_lock(&spare.lock); }
static void spare_unlock(void) { pthread_mutex_unlock(&spare.lock); }

/* Fork steps (select.h): the spare lock is a leaf, taken after the
 * call_rcu worker is paused (its callbacks give arrays back under it). */
static void ketama_fork_prepare(void) { spare_lock(); }
static void ketama_fork_unlock(void) { spare_unlock(); }

static void *array_take(size_t size, size_t *got)
{
    void *p = NULL;

    spare_lock();
    for (int i = 0; i < NSPARE; i++)
        if (spare.ptr[i] && spare.size[i] >= size &&
            spare.size[i] / 2 <= size) {
            p = spare.ptr[i];
            *got = spare.size[i];
            spare.ptr[i] = NULL;
            break;
        }
    spare_unlock();
    if (!p) {
        p = malloc(size ? size : 1);
        *got = size;
    }
    return p;
}

/* Keep the block in a free slot, else in place of the smallest kept block
 * if it is larger; free whatever is left over. */
static void array_give(void *p, size_t size)
{
    int slot = 0;

    if (!p)
        return;
    spare_lock();
    for (int i = 0; i < NSPARE; i++) {
        if (!spare.ptr[i]) {
            slot = i;
            break;
        }
        if (spare.size[i] < spare.size[slot])
            slot = i;
    }
    if (!spare.ptr[slot] || spare.size[slot] < size) {
        void *old = spare.ptr[slot];
        spare.ptr[slot] = p;
        spare.size[slot] = size;
        p = old;
    }
    spare_unlock();
    free(p);
}

static void ketama_destroy(void *sel)
{
    struct ketama *k = sel;

    if (!k)
        return;
    array_give(k->lut, k->lut_size);
    array_give(k->pts, k->pts_size);
    free(k);
}

/*
 * Every point of every backend, in generation order (backend order, then
 * point order), into out[].  A point depends on the previous one of its
 * backend, so one chain is a string of dependent table loads; four
 * backends are walked side by side to keep four chains in flight.
 */
static void generate_points(const lb_backend *bs, size_t n, uint32_t mult,
                            uint32_t *out)
{
    size_t i = 0, p = 0;

    for (; i + 4 <= n; i += 4) {
        uint32_t base[4], cnt[4], h[4] = {0, 0, 0, 0}, *dst[4], common;

        for (int c = 0; c < 4; c++) {
            base[c] = server_base(&bs[i + c]);
            cnt[c] = bs[i + c].weight * mult;
            dst[c] = out + p;
            p += cnt[c];
        }
        common = cnt[0];
        for (int c = 1; c < 4; c++)
            if (cnt[c] < common)
                common = cnt[c];
        for (uint32_t j = 0; j < common; j++) {
            h[0] = crc_point(base[0], h[0]);
            h[1] = crc_point(base[1], h[1]);
            h[2] = crc_point(base[2], h[2]);
            h[3] = crc_point(base[3], h[3]);
            dst[0][j] = h[0];
            dst[1][j] = h[1];
            dst[2][j] = h[2];
            dst[3][j] = h[3];
        }
        for (int c = 0; c < 4; c++)
            for (uint32_t j = common; j < cnt[c]; j++)
                dst[c][j] = h[c] = crc_point(base[c], h[c]);
    }
    for (; i < n; i++) {
        uint32_t base = server_base(&bs[i]), h = 0;
        uint32_t cnt = bs[i].weight * mult;

        for (uint32_t j = 0; j < cnt; j++)
            out[p++] = h = crc_point(base, h);
    }
}

/*
 * Build: generate the points, counting sort them by the top `bits` bits
 * straight into the final arrays (lut[] doubles as the counters), then
 * insertion sort inside each bucket (two points on average).  Both sorts
 * are stable, so equal hashes keep generation order: backend order, then
 * point order.
 */
static void *ketama_build(const lb_backend *backends, size_t n,
                          const lb_config *cfg,
                          const struct lb_record_view *view, const char **err)
{
    uint32_t mult = cfg->point_multiple; /* lb_balancer_new's default: 160 */
    uint64_t total = 0;
    struct ketama *k;
    uint32_t *gen = NULL;
    size_t gen_size = 0;
    uint32_t bits, nb, shift, m;

    pthread_once(&crc_once, crc_init);
    for (size_t i = 0; i < n; i++)
        total += (uint64_t)backends[i].weight * mult;
    if (total > LB_MAX_POINTS) {
        *err = "too many ring points (sum of weight * point_multiple "
               "exceeds 16777216)";
        return NULL;
    }
    k = calloc(1, sizeof(*k));
    if (!k)
        goto oom;
    k->factor = cfg->hash_balance_factor;
    k->view = view;
    /* About two points per bucket: bits = ceil(log2(total)) - 1, >= 1. */
    for (bits = 1; bits < 31 && (1ull << (bits + 1)) < total; bits++)
        ;
    nb = 1u << bits;
    shift = k->shift = 32 - bits;
    k->pts = array_take((total + SCAN) * sizeof(struct point), &k->pts_size);
    k->lut = array_take(((size_t)nb + 1) * sizeof(uint32_t), &k->lut_size);
    gen = array_take(total * sizeof(uint32_t), &gen_size);
    if (k->lut)
        memset(k->lut, 0, ((size_t)nb + 1) * sizeof(uint32_t));
    if (!k->pts || !k->lut || !gen)
        goto oom;

    generate_points(backends, n, mult, gen);
    /* Count, then turn counts into bucket starts. */
    for (uint64_t p = 0; p < total; p++)
        k->lut[gen[p] >> shift]++;
    {
        uint32_t sum = 0;
        for (uint32_t b = 0; b <= nb; b++) {
            uint32_t c = k->lut[b];
            k->lut[b] = sum;
            sum += c;
        }
    }
    /* Place; lut[b] advances to the end of bucket b, i.e. the start of
     * b + 1, so shifting it by one afterwards restores the starts. */
    {
        uint64_t p = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t cnt = backends[i].weight * mult;
            for (uint32_t j = 0; j < cnt; j++, p++) {
                uint32_t pos = k->lut[gen[p] >> shift]++;
                k->pts[pos].hash = gen[p];
                k->pts[pos].owner = (uint32_t)i;
            }
        }
    }
    array_give(gen, gen_size);
    gen = NULL;
    memmove(k->lut + 1, k->lut, (size_t)nb * sizeof(uint32_t));
    k->lut[0] = 0;

    /* Sort inside each bucket, stable, then drop equal hashes after the
     * first (nginx and pingora-ketama) while compacting. */
    m = 0;
    for (uint32_t b = 0; b < nb; b++) {
        uint32_t lo = k->lut[b], hi = k->lut[b + 1];

        for (uint32_t i = lo + 1; i < hi; i++) {
            struct point pt = k->pts[i];
            uint32_t j = i;
            while (j > lo && k->pts[j - 1].hash > pt.hash) {
                k->pts[j] = k->pts[j - 1];
                j--;
            }
            k->pts[j] = pt;
        }
        k->lut[b] = m;
        for (uint32_t i = lo; i < hi; i++) {
            if (m > 0 && k->pts[m - 1].hash == k->pts[i].hash)
                continue;
            k->pts[m] = k->pts[i];
            m++;
        }
    }
    k->lut[nb] = m;
    k->npoints = m;
    for (uint32_t i = 0; i < SCAN; i++)
        k->pts[m + i] = (struct point){UINT32_MAX, 0}; /* never below */
    return k;
oom:
    array_give(gen, gen_size);
    ketama_destroy(k);
    *err = "out of memory";
    return NULL;
}

/*
 * The first point >= h lies in h's bucket or is the first point after it.
 * Points after the bucket are greater than h (their top bits are), and the
 * padding is UINT32_MAX, so counting the points below h among the next
 * SCAN gives the answer without a data-dependent branch whenever the
 * bucket holds fewer than SCAN points (nearly always, at about two points
 * per bucket); a longer bucket continues with a plain scan.
 */
static inline uint32_t ring_first(const struct ketama *k, uint32_t h)
{
    uint32_t b = h >> k->shift;
    uint32_t i = k->lut[b];
    const struct point *pp = k->pts + i;
    uint32_t below = (uint32_t)(pp[0].hash < h) + (uint32_t)(pp[1].hash < h) +
                     (uint32_t)(pp[2].hash < h) + (uint32_t)(pp[3].hash < h);

    i += below;
    if (below == SCAN) {
        uint32_t end = k->lut[b + 1];
        while (i < end && k->pts[i].hash < h)
            i++;
    }
    if (i >= k->npoints)
        i = 0;
    return i;
}

/* ceil(factor x (total in flight + 1) / ready backends), at least 1;
 * UINT32_MAX (no bound) when no backend is ready. */
static uint32_t load_bound(const struct ketama *k)
{
    uint64_t total = 0, ready = 0;
    double bound;

    for (size_t i = 0; i < k->view->n; i++)
        if (lb_view_ready(k->view, i)) {
            total += lb_view_in_flight(k->view, i);
            ready++;
        }
    if (ready == 0)
        return UINT32_MAX;
    bound = ceil(k->factor * (double)(total + 1) / (double)ready);
    return bound >= (double)UINT32_MAX ? UINT32_MAX - 1 : (uint32_t)bound;
}

/* From point i on (i included), the first point whose owner has room
 * under `bound`; i itself when the whole ring is full (cannot happen with
 * counts that hold still, see above; they may move during the walk). */
static uint32_t ring_room(const struct ketama *k, uint32_t i, uint32_t bound)
{
    for (uint32_t step = 0; step < k->npoints; step++) {
        uint32_t j = i + step < k->npoints ? i + step : i + step - k->npoints;
        if ((uint64_t)lb_view_in_flight(k->view, k->pts[j].owner) + 1 <= bound)
            return j;
    }
    return i;
}

/*
 * The first point >= h lies in h's bucket or is the first point after it.
 * Points after the bucket are greater than h (their top bits are), and the
 * padding is UINT32_MAX, so counting the points below h among the next
 * SCAN gives the answer without a data-dependent branch whenever the
 * bucket holds fewer than SCAN points (nearly always, at about two points
 * per bucket); a longer bucket continues with a plain scan.
 *
 * State: the point index in the low 32 bits; with bounded loads, the
 * walk's bound in the high 32 bits.
 */
static uint32_t ketama_first(void *sel, const char *key, size_t len,
                             uint64_t *state)
{
    const struct ketama *k = sel;
    uint32_t h = ~crc_update(0xffffffffu, (const unsigned char *)key, len);
    uint32_t i = ring_first(k, h);

    if (k->factor > 0) {
        uint32_t bound = load_bound(k);
        i = ring_room(k, i, bound);
        *state = (uint64_t)bound << 32 | i;
        return k->pts[i].owner;
    }
    *state = i;
    return k->pts[i].owner;
}

static uint32_t ketama_next(void *sel, uint64_t *state)
{
    const struct ketama *k = sel;
    uint64_t i = (uint32_t)*state + 1;

    if (i >= k->npoints)
        i = 0;
    if (k->factor > 0) {
        uint32_t bound = (uint32_t)(*state >> 32);
        i = ring_room(k, (uint32_t)i, bound);
        *state = (uint64_t)bound << 32 | i;
        return k->pts[i].owner;
    }
    *state = i;
    return k->pts[i].owner;
}

const struct lb_selector_ops lb_select_consistent = {
    .build = ketama_build,
    .first = ketama_first,
    .next = ketama_next,
    .destroy = ketama_destroy,
    .fork_prepare = ketama_fork_prepare,
    .fork_parent = ketama_fork_unlock,
    .fork_child = ketama_fork_unlock,
};
