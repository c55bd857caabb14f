/*
 * random.c - uniform random picks over the weighted list (Pingora's Random).
 *
 * Pingora draws from thread_rng for the first pick and for every fallback.
 * Here each thread has its own xoshiro256** generator (no shared state, no
 * lock), seeded from getrandom() on its first use; statistical quality is
 * ample for spreading load, and it is not meant for anything secret.
 * A forked child reseeds: nginx workers forked from one master would
 * otherwise all draw the same sequence.
 */
#include <sys/random.h>
#include <time.h>

#include "weighted.h"

static __thread uint64_t rng[4];
static __thread int seeded;

/* Fork step (select.h): the child's one thread is the one that forked: its
 * generator is the only one that carries over, and it reseeds on its next
 * pick. */
static void random_fork_child(void) { seeded = 0; }

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void seed(void)
{
    uint64_t s = 0;

    if (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng)) {
        /* splitmix64 from the clock and the TLS address */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
            (uint64_t)(uintptr_t)&seeded;
        for (int i = 0; i < 4; i++) {
            uint64_t z = (s += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            rng[i] = z ^ (z >> 31);
        }
    }
    if (!(rng[0] | rng[1] | rng[2] | rng[3]))
        rng[0] = 1;
    seeded = 1;
}

static inline uint64_t rng_next(void)
{
    uint64_t r, t;

    if (__builtin_expect(!seeded, 0))
        seed();
    r = rotl(rng[1] * 5, 7) * 9;
    t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

static uint64_t draw_next(struct lb_weighted *w)
{
    (void)w;
    return rng_next();
}

/* Slow start: a ramping candidate is taken with probability its factor,
 * else drawn again (lb_weighted_ramp). */
static uint32_t random_first(void *sel, const char *key, size_t len,
                             uint64_t *state)
{
    struct lb_weighted *w = sel;
    uint64_t now = lb_view_slow_start_now(w->view);
    uint32_t idx;

    (void)key;
    (void)len;
    *state = rng_next();
    idx = lb_weighted_first(w, *state);
    if (__builtin_expect(now != 0, 0))
        idx = lb_weighted_ramp(w, idx, state, now, draw_next);
    return idx;
}

static uint32_t random_next(void *sel, uint64_t *state)
{
    *state = rng_next();
    return lb_weighted_fallback(sel, *state);
}

const struct lb_selector_ops lb_select_random = {
    .build = lb_weighted_build,
    .first = random_first,
    .next = random_next,
    .destroy = lb_weighted_destroy,
    .fork_child = random_fork_child,
};
