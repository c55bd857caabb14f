/*
 * choices.c - the power of k choices' random draws (see choices.h).
 *
 * The generator is xoshiro256** (Blackman and Vigna), as random.c's, but
 * its own per-thread state: the two algorithms do not share a sequence,
 * and each file keeps its own fork step.
 */
#include <sys/random.h>
#include <time.h>

#include "choices.h"

static __thread uint64_t rng[4];
static __thread int seeded;

void lb_choices_fork_child(void) { seeded = 0; }

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void seed(void)
{
    if (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng)) {
        /* splitmix64 from the clock and the TLS address */
        struct timespec ts;
        uint64_t s;

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

uint64_t lb_choices_random(void)
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

/* Lemire's multiply-shift: a uniform index below n from 32 random bits
 * (bias below n / 2^32, far under the sampling noise). */
static inline uint32_t below(uint32_t n, uint32_t r)
{
    return (uint32_t)(((uint64_t)r * n) >> 32);
}

uint32_t lb_choices_draw(uint32_t n, uint32_t k, uint32_t *out)
{
    uint32_t got = 0;

    if (k >= n) {
        /* every backend, from a random one on: ties (first best wins) go
         * to each in turn, not always to backend 0 */
        uint32_t off = below(n, (uint32_t)lb_choices_random());
        for (uint32_t i = 0; i < n; i++)
            out[i] = off + i < n ? off + i : off + i - n;
        return n;
    }
    while (got < k) {
        uint64_t r = lb_choices_random();

        /* two draws per 64-bit number */
        for (int half = 0; half < 2 && got < k; half++) {
            uint32_t c = below(n, (uint32_t)(half ? r >> 32 : r));
            uint32_t j = 0;

            while (j < got && out[j] != c)
                j++;
            if (j == got)
                out[got++] = c;
        }
    }
    return got;
}
