/*
 * rcu_flavour.c - read-side cost of liburcu's memb and bp flavours: ns per
 * rcu_read_lock + rcu_dereference + rcu_read_unlock, the sequence every
 * lb_balancer_select runs once.
 *
 * Built twice (bench section of the Makefile): -DFLAVOUR_MEMB against
 * -lurcu-memb and -DFLAVOUR_BP against -lurcu-bp.  Two cases each:
 *   idle  no writer;
 *   gp    another thread runs synchronize_rcu in a loop, so the reader
 *         pays for grace periods (bp and memb both use sys_membarrier
 *         when the kernel has it, which interrupts the reader).
 * Rows: rcu_<flavour> <case> <ns>, median of BENCH_RUNS (default 5) loops
 * of 20,000,000 sections.
 */
#define _LGPL_SOURCE 1
#include <pthread.h>
#include <stdatomic.h>

#if defined(FLAVOUR_MEMB)
#include <urcu/urcu-memb.h>
#define FLAVOUR "rcu_memb"
#define read_lock urcu_memb_read_lock
#define read_unlock urcu_memb_read_unlock
#define register_thread urcu_memb_register_thread
#define unregister_thread urcu_memb_unregister_thread
#define synchronize urcu_memb_synchronize_rcu
#elif defined(FLAVOUR_BP)
#include <urcu/urcu-bp.h>
#define FLAVOUR "rcu_bp"
#define read_lock urcu_bp_read_lock
#define read_unlock urcu_bp_read_unlock
#define register_thread() ((void)0) /* bp registers on first lock */
#define unregister_thread() ((void)0)
#define synchronize urcu_bp_synchronize_rcu
#else
#error "build with -DFLAVOUR_MEMB or -DFLAVOUR_BP"
#endif

#include "bench.h"

#define SECTIONS 20000000L

static int value = 42;
static int *slot = &value;
static atomic_int stop;
static atomic_long grace_periods;

static void *synchronizer(void *arg)
{
    (void)arg;
    register_thread();
    while (!atomic_load(&stop)) {
        synchronize();
        atomic_fetch_add(&grace_periods, 1);
    }
    unregister_thread();
    return NULL;
}

static double run_once(void)
{
    long sum = 0;
    double t0 = bench_now_ns();

    for (long i = 0; i < SECTIONS; i++) {
        read_lock();
        sum += *rcu_dereference(slot);
        read_unlock();
    }
    bench_keep(sum);
    return (bench_now_ns() - t0) / SECTIONS;
}

int main(void)
{
    int runs = bench_runs(5);
    double t[99];
    pthread_t th;
    char cs[64];

    register_thread();
    run_once(); /* warm-up, and registration for bp */
    for (int r = 0; r < runs; r++)
        t[r] = run_once();
    bench_row(FLAVOUR, "idle", bench_median(t, runs), "ns", NULL);

    pthread_create(&th, NULL, synchronizer, NULL);
    for (int r = 0; r < runs; r++)
        t[r] = run_once();
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    snprintf(cs, sizeof(cs), "%ld grace periods meanwhile",
             atomic_load(&grace_periods));
    bench_row(FLAVOUR, "gp", bench_median(t, runs), "ns", cs);
    unregister_thread();
    return 0;
}
