/*
 * bench.h - shared by the C benchmarks: a monotonic clock, medians, and
 * the one row format bench/run.sh turns into a table:
 *
 *     ROW <benchmark> <case> <value> <unit> [note]
 *
 * Timing on a shared machine drifts between runs, so every figure is the
 * median of several runs made in the same process.
 */
#ifndef LB_BENCH_H
#define LB_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v, so v[0] is the minimum afterwards). */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Runs from the environment (BENCH_RUNS), at least 3, default `def`. */
static inline int bench_runs(int def)
{
    const char *e = getenv("BENCH_RUNS");
    int n = e ? atoi(e) : def;

    return n < 3 ? 3 : n > 99 ? 99 : n;
}

/* `note` (may be NULL) is free text for the table's last column. */
static inline void bench_row(const char *bench, const char *cs, double value,
                             const char *unit, const char *note)
{
    printf("ROW %s %s %.3f %s %s\n", bench, cs, value, unit, note ? note : "");
    fflush(stdout);
}

/* Keep a value alive without a store the compiler could drop. */
#define bench_keep(x) __asm__ volatile("" : : "r"(x) : "memory")

#endif
