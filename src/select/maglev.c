/*
 * maglev.c - the Maglev lookup table (Eisenbud et al., "Maglev: A Fast and
 * Reliable Software Network Load Balancer", NSDI 2016, section 3.4),
 * weighted.
 *
 * Each backend has a permutation of the table's M slots (M prime):
 * offset = h1 % M, skip = h2 % (M - 1) + 1, slot j = (offset + j * skip)
 * % M, with h1, h2 two hashes of its address text.  Backends take turns
 * claiming their next preferred free slot until the table is full; a
 * lookup is table[hash(key) % M]: O(1), one load.  Removing one of N
 * backends frees its ~M/N slots and disturbs few others (the paper's
 * minimal disruption): about 1/N of the keys move.
 *
 * Weights: a backend of weight w takes w turns for every turn of a weight
 * 1 one.  Envoy (maglev_lb.cc) sweeps all backends once per iteration and
 * lets a backend claim when iteration x weight passes its running target,
 * which costs O(n) per sweep and O(n x max_weight / min_weight) sweeps for
 * skewed weights, and its shares drift: the light backends each lag up to
 * a turn behind when the table fills, and the heavy ones take up the
 * slack (weights 10 and 1 at 1,000 backends: +3.4 slots on every heavy
 * one).  Here backend i's k-th turn is at virtual time (k - 1/2) / w_i
 * (Sainte-Lague's divisors, the apportionment that rounds every share to
 * the nearest), a binary heap gives the next turn in O(log n), so a build
 * is O(M log n) for any weights and each backend's slots are its weight
 * share of M rounded, within about one slot.
 * Ties go to the lower sorted index, so a build depends only on the set
 * (deterministic across balancers, processes and list orders).  Each
 * backend keeps its position in its permutation as a slot number (one add
 * and one compare per step, no multiply or modulo).
 *
 * Built at build() (writers only, off the read path), as the Ketama ring
 * (bench/build.c: a few ms at 1,000 backends and M = 65537, most of it the
 * last free slots' search, about M ln M probes).  Entries are 16-bit
 * backend indices.
 *
 * The walk: first() hashes the key (FNV-1a 64, then a 64-bit finaliser)
 * and maps it onto the table by multiply-shift (Lemire); next() rehashes
 * with the next seed (the previous hash plus the golden ratio, finalised),
 * so the fallbacks of a key are deterministic, spread by weight, and the
 * same in every process.
 */
#include <stdlib.h>
#include <string.h>

#include "maglev.h"

#define EMPTY 0xffffu
#define GOLDEN 0x9e3779b97f4a7c15ull

struct maglev {
    uint32_t size; /* M */
    uint16_t table[];
};

/* Per backend, during a build. */
struct perm {
    uint32_t pos;  /* the next slot of its permutation to try */
    uint32_t skip; /* 1..M-1 */
    uint32_t weight;
    uint32_t turns; /* slots claimed */
};

static inline uint64_t fnv1a64(const unsigned char *p, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* MurmurHash3's fmix64: every input bit affects every output bit (FNV's
 * high bits alone would cluster short keys). */
static inline uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint32_t slot_of(uint64_t h, uint32_t m)
{
    return (uint32_t)(((unsigned __int128)h * m) >> 64);
}

/* a's next turn comes before b's: (turns_a + 1/2) / w_a < (turns_b + 1/2)
 * / w_b, ties to the lower index. */
static inline int before(const struct perm *p, uint32_t a, uint32_t b)
{
    uint64_t ta = (2 * (uint64_t)p[a].turns + 1) * p[b].weight;
    uint64_t tb = (2 * (uint64_t)p[b].turns + 1) * p[a].weight;

    return ta < tb || (ta == tb && a < b);
}

static void sift_down(uint32_t *heap, uint32_t n, const struct perm *p,
                      uint32_t at)
{
    for (;;) {
        uint32_t l = 2 * at + 1, best = at;

        if (l < n && before(p, heap[l], heap[best]))
            best = l;
        if (l + 1 < n && before(p, heap[l + 1], heap[best]))
            best = l + 1;
        if (best == at)
            return;
        uint32_t t = heap[at];
        heap[at] = heap[best];
        heap[best] = t;
        at = best;
    }
}

static void *maglev_build(const lb_backend *backends, size_t n,
                          const lb_config *cfg,
                          const struct lb_record_view *view, const char **err)
{
    uint32_t m = cfg->table_size ? cfg->table_size : LB_DEFAULT_TABLE_SIZE;
    struct maglev *g;
    struct perm *p = NULL;
    uint32_t *heap = NULL;
    uint64_t dup = 0;
    int equal = 1;

    (void)view;
    if (n > m) {
        *err = "table_size is below the number of backends (maglev needs "
               "a prime table_size >= the backend count)";
        return NULL;
    }
    g = malloc(sizeof(*g) + (size_t)m * sizeof(g->table[0]));
    if (n) {
        p = malloc(n * sizeof(*p));
        heap = malloc(n * sizeof(*heap));
    }
    if (!g || (n && (!p || !heap))) {
        free(g);
        free(p);
        free(heap);
        *err = "out of memory";
        return NULL;
    }
    g->size = m;
    memset(g->table, 0xff, (size_t)m * sizeof(g->table[0]));
    if (n == 0)
        return g;

    for (size_t i = 0; i < n; i++) {
        uint64_t h = fnv1a64((const unsigned char *)backends[i].addr,
                             backends[i].addr_len);

        /* One address at two weights (adjacent in sorted order) would share
         * a permutation and fight for the same slots: the later ones get
         * their own. */
        if (i > 0 && backends[i].addr_len == backends[i - 1].addr_len &&
            memcmp(backends[i].addr, backends[i - 1].addr,
                   backends[i].addr_len) == 0)
            h ^= ++dup * GOLDEN;
        else
            dup = 0;
        p[i].pos = (uint32_t)(fmix64(h) % m);
        p[i].skip = m > 1 ? (uint32_t)(fmix64(h ^ GOLDEN) % (m - 1)) + 1 : 1;
        p[i].weight = backends[i].weight;
        p[i].turns = 0;
        equal &= backends[i].weight == backends[0].weight;
        heap[i] = (uint32_t)i;
    }
    for (uint32_t at = (uint32_t)n / 2; at-- > 0;)
        sift_down(heap, (uint32_t)n, p, at);

    /* M prime and 1 <= skip < M: a permutation visits every slot within M
     * steps, so the inner loop always ends on a free slot. */
    for (uint32_t filled = 0, rr = 0; filled < m; filled++) {
        /* equal weights: the turns are plain rounds in index order (the
         * heap's order then, without its O(log n) per turn) */
        uint32_t i = equal ? rr : heap[0];
        uint32_t c = p[i].pos;

        while (g->table[c] != EMPTY) {
            c += p[i].skip;
            if (c >= m)
                c -= m;
        }
        g->table[c] = (uint16_t)i;
        c += p[i].skip;
        p[i].pos = c >= m ? c - m : c;
        p[i].turns++;
        if (equal)
            rr = rr + 1 < n ? rr + 1 : 0;
        else
            sift_down(heap, (uint32_t)n, p, 0);
    }
    free(p);
    free(heap);
    return g;
}

static void maglev_destroy(void *sel) { free(sel); }

const uint16_t *lb_maglev_table(const void *sel, uint32_t *size)
{
    const struct maglev *g = sel;

    *size = g->size;
    return g->table;
}

static uint32_t maglev_first(void *sel, const char *key, size_t len,
                             uint64_t *state)
{
    const struct maglev *g = sel;
    uint64_t h = fmix64(fnv1a64((const unsigned char *)key, len));

    *state = h;
    return g->table[slot_of(h, g->size)];
}

static uint32_t maglev_next(void *sel, uint64_t *state)
{
    const struct maglev *g = sel;
    uint64_t h = fmix64(*state + GOLDEN);

    *state = h;
    return g->table[slot_of(h, g->size)];
}

const struct lb_selector_ops lb_select_maglev = {
    .build = maglev_build,
    .first = maglev_first,
    .next = maglev_next,
    .destroy = maglev_destroy,
};
