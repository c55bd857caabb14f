/*
 * tap.h - the smallest test harness: CHECK records a failure and goes on;
 * tap_done() prints "N passed, M failed" and returns the exit code.
 */
#ifndef LB_TAP_H
#define LB_TAP_H

#include <stdio.h>

static int tap_pass, tap_fail;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (cond) {                                                            \
            tap_pass++;                                                        \
        } else {                                                               \
            tap_fail++;                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
        }                                                                      \
    } while (0)

#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long tap_a = (long long)(a), tap_b = (long long)(b);              \
        if (tap_a == tap_b) {                                                  \
            tap_pass++;                                                        \
        } else {                                                               \
            tap_fail++;                                                        \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n",          \
                    __FILE__, __LINE__, #a, #b, tap_a, tap_b);                 \
        }                                                                      \
    } while (0)

static inline int tap_done(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, tap_pass, tap_fail);
    return tap_fail ? 1 : 0;
}

#endif
