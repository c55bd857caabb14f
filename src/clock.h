/*
 * clock.h - the clocks of the core, in one place.
 *
 * lb_clock_ns: CLOCK_MONOTONIC in ns (ejections, the checker's schedule,
 * the shared region's quarantine).  lb_clock_coarse_ns: the same time base,
 * CLOCK_MONOTONIC_COARSE (a few ms of resolution, a few ns to read: slow
 * start's ramp on the select path).  lb_deadline: CLOCK_REALTIME plus a
 * number of seconds, the absolute time pthread_cond_timedwait and
 * pthread_mutex_timedlock take (the realtime clock, which ThreadSanitizer
 * intercepts: a clock step changes one wait, nothing else).  All pure, any
 * thread, no lock.
 */
#ifndef LB_CLOCK_H
#define LB_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t lb_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t lb_clock_coarse_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Now on CLOCK_REALTIME plus `seconds` (taken as 0 when negative or NaN;
 * the caller bounds the top). */
static inline struct timespec lb_deadline(double seconds)
{
    struct timespec ts;
    time_t whole;

    if (!(seconds > 0))
        seconds = 0;
    whole = (time_t)seconds;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += whole;
    ts.tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

#endif
