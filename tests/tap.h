/*
 * tap.h - the smallest test harness.  CHECK records a failed check and goes
 * on; TEST(test_x(...)) runs one test function, which passes when none of
 * its checks failed; tap_done() prints "name: N passed, M failed (K checks)"
 * where N and M count tests, not checks, and returns the exit code.  A
 * program with no TEST is one test; checks that fail outside every TEST
 * count as one more failed test.
 */
#ifndef LB_TAP_H
#define LB_TAP_H

#include <stdio.h>

static int tap_pass, tap_fail;
static int tap_tests, tap_tests_failed, tap_fail_in_tests;

#define TEST(call)                                                             \
    do {                                                                       \
        int tap_f0 = tap_fail;                                                 \
        call;                                                                  \
        tap_tests++;                                                           \
        if (tap_fail != tap_f0) {                                              \
            tap_tests_failed++;                                                \
            tap_fail_in_tests += tap_fail - tap_f0;                            \
            fprintf(stderr, "test failed: %s\n", #call);                       \
        }                                                                      \
    } while (0)

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
    int tests = tap_tests, failed = tap_tests_failed;

    if (tests == 0 || tap_fail > tap_fail_in_tests) {
        tests++;
        failed += tap_fail > tap_fail_in_tests;
    }
    printf("%s: %d passed, %d failed (%d checks, %d failed)\n", name,
           tests - failed, failed, tap_pass + tap_fail, tap_fail);
    return tap_fail ? 1 : 0;
}

#endif
