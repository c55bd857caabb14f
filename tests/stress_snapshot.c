/*
 * stress_snapshot.c - readers against a writer swapping backend sets.
 *
 * Nine balancers (one per algorithm of the registry, and consistent with
 * hash_balance_factor) share one sequence of backend sets.
 * Each set is a run of consecutive ports on 127.0.0.1, described by (base,
 * n): sorted index i is port base + i, with weight 1 + port % 3.  Before
 * each update the writer records (generation, base, n) in a ring indexed by
 * the generation the update will publish, so a reader can check any index
 * it gets against the set of the generation it got.  Consecutive sets
 * overlap, so the records of backends that stay must survive (checked by
 * id after every swap).
 *
 * Threads:
 *   readers (LB_STRESS_READERS, default 2)  lb_balancer_select on every
 *            algorithm with random keys, and full lb_iter_first/next walks,
 *            without pause;
 *   writer   lb_balancer_update with sets of 0, 1, 2, ... 300 backends,
 *            input shuffled and with duplicates;
 *   health   lb_balancer_observe and lb_balancer_set_enable at random.
 *
 * Built with -DLB_POISON, retired snapshots are overwritten before they
 * are freed: a reader that outlived its grace period sees garbage (and
 * ASan sees the access).  Runs LB_STRESS_SECONDS (default 3) seconds and at
 * least LB_STRESS_MIN_SWAPS (default 1000) swaps of the round robin
 * balancer (a third of that for the consistent one), then prints
 * one summary line.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

#define NALG 9
#define RING 4096    /* generations remembered for readers */
#define PORT0 20000  /* port of the first backend of the pool */
#define BASE_SPAN 48 /* sets start within PORT0 .. PORT0+BASE_SPAN */
#define MAX_SET 300
#define MAX_IN (MAX_SET + MAX_SET / 4 + 1)
#define WALK_ITERS 4096 /* covers a ring of 8 backends of weight 3 */

/* Ids from the registry by name (main); consistent_bounded is consistent
 * with hash_balance_factor 1.25. */
static int algs[NALG];
static const char *const alg_names[NALG] = {
    "round_robin",   "random",    "fnv",
    "consistent",    "maglev",    "weighted_round_robin",
    "least_request", "peak_ewma", "consistent_bounded"};

/* Sizes the writer cycles through; 0 and 1 are the edge cases of every
 * selector, the larger ones make the consistent ring span many buckets. */
static const uint32_t sizes[] = {0, 1,  2, 3,   5, 8, 13,  1,   21, 34,
                                 0, 64, 2, 100, 7, 1, 150, 300, 4,  0};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

struct ring_slot {
    /* gen << 32 | base << 16 | n: one word, so a reader never sees a torn
     * description. */
    _Atomic uint64_t word;
};

static lb_balancer *bal[NALG];
static struct ring_slot ring[NALG][RING];
static atomic_int stop;
static atomic_int fail_count;

static struct {
    _Atomic uint64_t selects, declined, walks, stale, verified, unverified;
} st;

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "FAIL: " __VA_ARGS__);                                 \
        fputc('\n', stderr);                                                   \
        atomic_fetch_add(&fail_count, 1);                                      \
    } while (0)

static uint32_t weight_of(uint32_t port) { return 1 + port % 3; }

static void make_backend(uint32_t port, lb_backend *out)
{
    char text[32];
    const char *err;
    int len = snprintf(text, sizeof(text), "127.0.0.1:%u", port);

    if (lb_backend_parse(text, (size_t)len, weight_of(port), out, &err) !=
        LB_OK) {
        fprintf(stderr, "parse %s: %s\n", text, err);
        abort();
    }
}

/* Look up the set of generation `gen`: 1 with *base, *n, 0 when the ring has
 * moved on (not checkable), and a failure when the ring is behind. */
static int ring_lookup(int a, uint64_t gen, uint32_t *base, uint32_t *n)
{
    uint64_t w =
        atomic_load_explicit(&ring[a][gen % RING].word, memory_order_acquire);
    uint64_t g = w >> 32;

    if (g != (gen & 0xffffffffu)) {
        if (g < (gen & 0xffffffffu))
            FAIL("%s: generation %llu published before its set was recorded",
                 alg_names[a], (unsigned long long)gen);
        return 0;
    }
    *base = (uint32_t)(w >> 16) & 0xffff;
    *n = (uint32_t)w & 0xffff;
    return 1;
}

/* Check that index `idx` of generation `gen` is a member of that set. */
static void check_pick(int a, uint64_t gen, int idx, int ready)
{
    uint32_t base, n;
    lb_backend be;

    if (!ring_lookup(a, gen, &base, &n)) {
        atomic_fetch_add_explicit(&st.unverified, 1, memory_order_relaxed);
        return;
    }
    if (idx < 0 || (uint32_t)idx >= n) {
        FAIL("%s gen %llu: index %d outside a set of %u", alg_names[a],
             (unsigned long long)gen, idx, n);
        return;
    }
    if (ready != 0 && ready != 1)
        FAIL("%s: ready flag %d", alg_names[a], ready);
    /* Read the backend back; it belongs to generation `gen` only if the
     * generation did not move while we read it (generations only grow). */
    if (lb_balancer_generation(bal[a]) != gen)
        return;
    if (lb_balancer_backend(bal[a], (size_t)idx, &be) != LB_OK) {
        if (lb_balancer_generation(bal[a]) == gen)
            FAIL("%s gen %llu: backend %d missing", alg_names[a],
                 (unsigned long long)gen, idx);
        return;
    }
    if (lb_balancer_generation(bal[a]) != gen)
        return;
    if (be.family != LB_AF_INET || be.port != base + (uint32_t)idx ||
        be.weight != weight_of(be.port) || be.ip[0] != 127)
        FAIL("%s gen %llu: index %d is %.*s weight %u, want port %u",
             alg_names[a], (unsigned long long)gen, idx, (int)be.addr_len,
             be.addr, be.weight, base + (uint32_t)idx);
    else
        atomic_fetch_add_explicit(&st.verified, 1, memory_order_relaxed);
}

/* A whole walk: every index unique and in the set; in a small consistent
 * ring, enough steps visit every backend. */
static void walk(int a, lb_iter *it, const char *key, size_t len,
                 uint32_t max_iterations, unsigned char *seen)
{
    uint32_t base, n, got = 0;
    int idx = lb_iter_first(bal[a], key, len, max_iterations, it);
    uint64_t gen = lb_iter_head_of(it)->gen;
    int known = ring_lookup(a, gen, &base, &n);

    if (known)
        memset(seen, 0, n);
    while (idx >= 0) {
        if (lb_iter_head_of(it)->gen != gen)
            FAIL("%s: generation changed inside a walk", alg_names[a]);
        if (known) {
            if ((uint32_t)idx >= n) {
                FAIL("%s gen %llu: walk index %d outside a set of %u",
                     alg_names[a], (unsigned long long)gen, idx, n);
                return;
            }
            if (seen[idx]++)
                FAIL("%s gen %llu: walk returned %d twice", alg_names[a],
                     (unsigned long long)gen, idx);
        }
        got++;
        idx = lb_iter_next(bal[a], it);
    }
    atomic_fetch_add_explicit(&st.walks, 1, memory_order_relaxed);
    if (idx == LB_STALE) {
        atomic_fetch_add_explicit(&st.stale, 1, memory_order_relaxed);
        return;
    }
    if (idx != LB_DECLINED)
        FAIL("%s: walk ended with %d", alg_names[a], idx);
    else if (known && algs[a] == LB_SELECT_CONSISTENT && n <= 8 &&
             max_iterations == WALK_ITERS && got != n)
        FAIL("consistent gen %llu: walk of a ring of %u backends saw %u",
             (unsigned long long)gen, n, got);
    else if (known && got > n)
        FAIL("%s: walk saw %u of %u backends", alg_names[a], got, n);
}

static void *reader(void *arg)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull * (uintptr_t)arg + 1;
    uint64_t last_gen[NALG] = {0};
    lb_iter *it = lb_iter_new();
    unsigned char seen[MAX_SET];
    char key[32];

    if (!it)
        abort();
    for (uint64_t round = 0; !atomic_load(&stop); round++) {
        for (int a = 0; a < NALG; a++) {
            int len = snprintf(key, sizeof(key), "/k/%llx",
                               (unsigned long long)(xorshift(&rng) % 100000));
            int idx = lb_balancer_select(bal[a], key, (size_t)len,
                                         1 + (uint32_t)(round % 8), it);

            atomic_fetch_add_explicit(&st.selects, 1, memory_order_relaxed);
            if (lb_iter_head_of(it)->gen < last_gen[a])
                FAIL("%s: generation went back from %llu to %llu", alg_names[a],
                     (unsigned long long)last_gen[a],
                     (unsigned long long)lb_iter_head_of(it)->gen);
            last_gen[a] = lb_iter_head_of(it)->gen;
            if (idx == LB_DECLINED) {
                atomic_fetch_add_explicit(&st.declined, 1,
                                          memory_order_relaxed);
                continue;
            }
            if (idx < 0) {
                FAIL("%s: select returned %d", alg_names[a], idx);
                continue;
            }
            if (!lb_iter_head_of(it)->ready)
                FAIL("%s: select returned a backend that is not ready",
                     alg_names[a]);
            check_pick(a, lb_iter_head_of(it)->gen, idx,
                       lb_iter_head_of(it)->ready);
            /* A long walk only where it proves something: a small ring
             * is walked whole; elsewhere a few steps. */
            if (round % 16 == (uintptr_t)arg % 16) {
                uint32_t base, n, max = 32;

                if (algs[a] == LB_SELECT_CONSISTENT &&
                    ring_lookup(a, lb_iter_head_of(it)->gen, &base, &n) &&
                    n <= 8)
                    max = WALK_ITERS;
                walk(a, it, key, (size_t)len, max, seen);
            }
        }
    }
    lb_iter_free(it);
    return NULL;
}

/* Swap sets; after each swap check that backends which stayed kept their
 * health record and new ones got fresh records. */
static void *writer(void *arg)
{
    uint64_t rng = 12345;
    static lb_backend in[MAX_IN];
    static uint32_t order[MAX_IN];
    static uint64_t ids[NALG][MAX_SET];
    static uint32_t id_base[NALG], id_n[NALG];
    double deadline = *(double *)arg;
    long min_swaps = getenv("LB_STRESS_MIN_SWAPS")
                         ? atol(getenv("LB_STRESS_MIN_SWAPS"))
                         : 1000;
    static long swaps[NALG];

    for (size_t k = 0;; k++) {
        uint32_t n = sizes[k % NSIZES];
        uint32_t base = PORT0 + (uint32_t)(xorshift(&rng) % BASE_SPAN);
        size_t nin = 0;

        if (swaps[0] >= min_swaps && now_s() >= deadline)
            break;
        for (uint32_t i = 0; i < n; i++)
            make_backend(base + i, &in[nin++]);
        /* duplicates of the same identity collapse into one */
        for (uint32_t i = 0; n && i < n / 4 + 1; i++)
            make_backend(base + (uint32_t)(xorshift(&rng) % n), &in[nin++]);
        for (size_t i = nin; i > 1; i--) {
            size_t j = xorshift(&rng) % i;
            lb_backend t = in[i - 1];
            in[i - 1] = in[j];
            in[j] = t;
        }
        for (int a = 0; a < NALG; a++) {
            uint64_t gen = lb_balancer_generation(bal[a]) + 1;
            size_t count = 0;
            const char *err = NULL;
            int rc;

            /* A ring costs far more to build than a weighted list (most
             * of all under TSan): swap it on every third set, which still
             * walks it through every size since 3 does not divide NSIZES. */
            if ((algs[a] == LB_SELECT_CONSISTENT ||
                 strcmp(alg_names[a], "maglev") == 0) &&
                k % 3 != 0)
                continue;

            atomic_store_explicit(&ring[a][gen % RING].word,
                                  (gen << 32) | ((uint64_t)base << 16) | n,
                                  memory_order_release);
            rc = lb_balancer_update(bal[a], in, nin, order, &count, &err);
            if (rc < 0) {
                FAIL("%s: update: %s", alg_names[a], err);
                continue;
            }
            if (count != n)
                FAIL("%s: update kept %zu of %u", alg_names[a], count, n);
            for (size_t i = 0; i < count; i++)
                if (in[order[i]].port != base + i)
                    FAIL("%s: order[%zu] is port %u, want %u", alg_names[a], i,
                         in[order[i]].port, base + (uint32_t)i);
            if (rc == 1)
                swaps[a]++;
            if (lb_balancer_generation(bal[a]) != gen - (rc == 0))
                FAIL("%s: generation %llu after update, want %llu",
                     alg_names[a],
                     (unsigned long long)lb_balancer_generation(bal[a]),
                     (unsigned long long)(gen - (rc == 0)));
            /* health records: the writer is the only updater, so the
             * published set is stable between its own calls */
            for (uint32_t i = 0; i < n; i++) {
                lb_health_info hi;
                uint32_t port = base + i;

                if (lb_balancer_health(bal[a], i, &hi) != LB_OK) {
                    FAIL("%s: no health for %u", alg_names[a], i);
                    break;
                }
                if (port >= id_base[a] && port < id_base[a] + id_n[a]) {
                    if (hi.id != ids[a][port - id_base[a]])
                        FAIL("%s: port %u lost its health record", alg_names[a],
                             port);
                } else {
                    for (uint32_t j = 0; j < id_n[a]; j++)
                        if (ids[a][j] == hi.id)
                            FAIL("%s: new port %u reuses record %llu",
                                 alg_names[a], port, (unsigned long long)hi.id);
                }
            }
            for (uint32_t i = 0; i < n; i++) {
                lb_health_info hi;
                lb_balancer_health(bal[a], i, &hi);
                ids[a][i] = hi.id;
            }
            id_base[a] = base;
            id_n[a] = n;
        }
    }
    atomic_store(&stop, 1);
    return swaps;
}

/* Flip health and enablement; keep most backends ready so selects mostly
 * succeed on the first pick and sometimes walk. */
static void *health(void *arg)
{
    uint64_t rng = 777;
    long flips = 0;

    (void)arg;
    for (uint64_t round = 0; !atomic_load(&stop); round++) {
        /* leave the readers most of a 2-core machine */
        if (round % 64 == 0)
            nanosleep(&(struct timespec){0, 20000}, NULL);
        for (int a = 0; a < NALG; a++) {
            uint64_t gen = lb_balancer_generation(bal[a]);
            size_t n = lb_balancer_count(bal[a]);
            size_t i;
            int rc;
            uint64_t r = xorshift(&rng);

            if (n == 0)
                continue;
            i = r % (n + 2); /* sometimes out of range: must be refused */
            if (r & (1u << 20)) {
                rc = lb_balancer_observe(bal[a], gen, i, (r >> 21) % 8 != 0,
                                         1 + (uint32_t)((r >> 23) % 2), 1,
                                         (int)(r >> 40));
                if (rc == 1)
                    flips++;
                else if (rc != 0 && rc != LB_STALE)
                    FAIL("observe returned %d", rc);
                if (i >= n && rc != LB_STALE)
                    FAIL("observe accepted index %zu of %zu", i, n);
            } else {
                rc =
                    lb_balancer_set_enable(bal[a], gen, i, (r >> 21) % 10 != 0);
                if (rc != LB_OK && rc != LB_STALE)
                    FAIL("set_enable returned %d", rc);
                if (i >= n && rc != LB_STALE)
                    FAIL("set_enable accepted index %zu of %zu", i, n);
            }
            rc = lb_balancer_ready(bal[a], gen, i % (n ? n : 1));
            if (rc != 0 && rc != 1 && rc != LB_STALE)
                FAIL("ready returned %d", rc);
        }
    }
    return (void *)flips;
}

int main(void)
{
    const char *env = getenv("LB_STRESS_SECONDS");
    int nreaders =
        getenv("LB_STRESS_READERS") ? atoi(getenv("LB_STRESS_READERS")) : 2;
    double seconds = env ? atof(env) : 3.0, t0 = now_s(), deadline;
    pthread_t rt[64], wt, ht;
    void *flips;
    long *swaps;

    if (nreaders < 2)
        nreaders = 2;
    if (nreaders > 64)
        nreaders = 64;
    for (int a = 0; a < NALG; a++) {
        int bounded = strcmp(alg_names[a], "consistent_bounded") == 0;
        const char *name = bounded ? "consistent" : alg_names[a];
        lb_config cfg;
        const char *err;

        algs[a] = lb_selection_find(name, strlen(name), NULL);
        /* maglev: a prime table just above MAX_SET keeps TSan runs short */
        cfg = (lb_config){.selection = algs[a],
                          .hash_balance_factor = bounded ? 1.25 : 0,
                          .table_size = strcmp(name, "maglev") == 0 ? 307 : 0};

        bal[a] = lb_balancer_new(&cfg, &err);
        if (!bal[a]) {
            fprintf(stderr, "new: %s\n", err);
            return 1;
        }
        /* generation 1 is the empty set */
        atomic_store(&ring[a][1].word, (1ull << 32) | ((uint64_t)PORT0 << 16));
    }
    deadline = t0 + seconds;
    for (int r = 0; r < nreaders; r++)
        pthread_create(&rt[r], NULL, reader, (void *)(uintptr_t)(r + 1));
    pthread_create(&ht, NULL, health, NULL);
    pthread_create(&wt, NULL, writer, &deadline);
    pthread_join(wt, (void **)&swaps);
    pthread_join(ht, &flips);
    for (int r = 0; r < nreaders; r++)
        pthread_join(rt[r], NULL);
    for (int a = 0; a < NALG; a++)
        lb_balancer_free(bal[a]);
    lb_quiesce();

    CHECK(atomic_load(&fail_count) == 0);
    for (int a = 0; a < NALG; a++)
        CHECK(swaps[a] > 0);
    CHECK(atomic_load(&st.verified) > 0);
    {
        long total = 0;
        for (int a = 0; a < NALG; a++)
            total += swaps[a];
        printf("stress_snapshot: %d readers, %.1fs, %ld swaps (%ld rr, %ld "
               "random, %ld fnv, %ld consistent, %ld maglev, %ld wrr, %ld "
               "least_request, %ld peak_ewma, %ld bounded), ",
               nreaders, now_s() - t0, total, swaps[0], swaps[1], swaps[2],
               swaps[3], swaps[4], swaps[5], swaps[6], swaps[7], swaps[8]);
    }
    printf("%ld health flips, %llu selects (%llu declined), %llu walks "
           "(%llu stale), %llu picks verified (%llu not checkable), "
           "%d failures\n",
           (long)flips, (unsigned long long)st.selects,
           (unsigned long long)st.declined, (unsigned long long)st.walks,
           (unsigned long long)st.stale, (unsigned long long)st.verified,
           (unsigned long long)st.unverified, atomic_load(&fail_count));
    return tap_done("stress_snapshot");
}
