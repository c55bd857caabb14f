/*
 * stress_shared.c - a shared balancer's region survives processes killed
 * at any instruction.
 *
 * Processes (LB_STRESS_PROCS, default 4) forked from one shared balancer
 * loop without pause over everything that writes the region: updates to
 * random subsets of 40 addresses (slots taken, sets published, slots
 * retired and reused after a 20 ms quarantine), observations, set_enable,
 * in-flight counts up and down, and the periodic step (turn, sweep,
 * adoption).  The parent kills one at random every 0-20 ms with SIGKILL
 * and forks a replacement, for LB_STRESS_SECONDS (default 3).  Then every
 * worker is killed and the parent checks what the survivors would find:
 *
 *   - the turn is not stuck: the parent becomes the prober at once;
 *   - the set adopts whole: sorted, unique, every backend one of the 40;
 *   - no in-flight count of the dead is left;
 *   - no process entry of the dead is left;
 *   - no slot is lost: after an empty set and the quarantine, a set of
 *     the full capacity of new backends fits.
 *
 * Under ThreadSanitizer (which cannot start threads in a forked child)
 * the same operations run on threads of one process instead, with no
 * kills: the race check of the region's code paths.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "tap.h"
#include "util.h"

#define CAP 64
#define POOL 40

static lb_backend pool_backend(int i)
{
    char a[48];

    snprintf(a, sizeof(a), "127.0.%d.%d:%d", 1 + i / 200, 1 + i % 200,
             8000 + i);
    return parse_backend(a, 1 + (uint32_t)(i % 3));
}

/* One random operation; `held` counts this worker's in-flight adds by
 * snapshot index (reset when the set changes). */
static void one_op(lb_balancer *b, uint64_t *seed, int *held)
{
    uint64_t x = xorshift(seed);
    uint64_t g = lb_balancer_generation(b);
    size_t n = lb_balancer_count(b);
    const char *err = NULL;
    int adopted;

    switch (x % 8) {
    case 0: { /* a new set */
        lb_backend in[POOL];
        size_t m = 0;
        for (int i = 0; i < POOL; i++)
            if (xorshift(seed) % 3 == 0)
                in[m++] = pool_backend(i);
        lb_balancer_update(b, in, m, NULL, NULL, &err);
        break;
    }
    case 1:
    case 2:
        if (n)
            lb_balancer_observe(b, g, (x >> 8) % n, (x >> 16) & 1, 1,
                                LB_CHECK_ERR_CONNECT, 111);
        break;
    case 3:
        if (n)
            lb_balancer_set_enable(b, g, (x >> 8) % n, (x >> 16) & 1);
        break;
    case 4:
    case 5:
        if (n && lb_balancer_in_flight_add(b, g, (x >> 8) % n, 1) == LB_OK)
            (*held)++;
        break;
    case 6:
        if (n && *held > 0 &&
            lb_balancer_in_flight_add(b, g, (x >> 8) % n, -1) == LB_OK)
            (*held)--;
        break;
    default:
        lb_balancer_shared_step(b, 0.05, &adopted, &err);
        break;
    }
}

/* The region as the next process finds it. */
static void check_region(lb_balancer *b, int workers_gone, bool all_dead)
{
    const char *err = NULL;
    int adopted = 0, role;
    size_t n;
    uint32_t repairs, swept;

    if (all_dead)
        CHECK_EQ(lb_balancer_shared_processes(b), 0);
    role = lb_balancer_shared_step(b, 1, &adopted, &err);
    CHECK_EQ(role, LB_ROLE_PROBER);
    n = lb_balancer_count(b);
    CHECK(n <= POOL);
    for (size_t i = 0; i < n; i++) {
        lb_backend x, y;
        lb_record_info info;
        int known = 0;

        lb_balancer_backend(b, i, &x);
        if (i + 1 < n) {
            lb_balancer_backend(b, i + 1, &y);
            CHECK(lb_backend_compare(&x, &y) < 0);
        }
        for (int k = 0; k < POOL && !known; k++) {
            lb_backend p = pool_backend(k);
            known = lb_backend_compare(&p, &x) == 0;
        }
        CHECK(known);
        lb_balancer_record(b, i, &info);
        if (all_dead)
            CHECK_EQ(info.in_flight, 0);
    }
    /* no slot lost */
    lb_shared_set_quarantine(20000000);
    CHECK_EQ(lb_balancer_update(b, NULL, 0, NULL, NULL, &err) >= 0, 1);
    {
        lb_backend in[CAP];
        int rc = LB_ERROR;
        double end = now_s() + 5;

        for (int i = 0; i < CAP; i++) {
            char a[32];
            snprintf(a, sizeof(a), "127.0.9.%d:%d", 1 + i, 9000 + i);
            in[i] = parse_backend(a, 1);
        }
        while (rc != 1 && now_s() < end) {
            rc = lb_balancer_update(b, in, CAP, NULL, NULL, &err);
            if (rc != 1)
                usleep(5000);
        }
        CHECK_EQ(rc, 1);
        if (rc != 1)
            printf("# full set: %s\n", err);
        CHECK_EQ(lb_balancer_count(b), CAP);
    }
    lb_shared_counts(b->shared, &repairs, &swept);
    printf("# %d workers gone, %u writers found dead in the lock (repaired), "
           "%u dead processes swept\n",
           workers_gone, repairs, swept);
}

static lb_balancer *make(void)
{
    lb_config cfg = {.selection = LB_SELECT_CONSISTENT};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend in[POOL];

    CHECK(b && lb_balancer_share(b, CAP, &err) == LB_OK);
    for (int i = 0; i < 16; i++)
        in[i] = pool_backend(i);
    CHECK_EQ(lb_balancer_update(b, in, 16, NULL, NULL, &err), 1);
    lb_shared_set_quarantine(20000000);
    return b;
}

static double seconds(void)
{
    const char *e = getenv("LB_STRESS_SECONDS");
    return e ? atof(e) : 3.0;
}

#if defined(__SANITIZE_THREAD__)

struct worker {
    lb_balancer *b;
    uint64_t seed;
    double until;
    long ops;
};

static void *run(void *arg)
{
    struct worker *w = arg;
    int held = 0;

    while (now_s() < w->until) {
        one_op(w->b, &w->seed, &held);
        w->ops++;
    }
    return NULL;
}

int main(void)
{
    lb_balancer *b = make();
    struct worker w[4];
    const char *err = NULL;
    int adopted;

    /* the main thread registers the process: it lives to the end */
    CHECK_EQ(lb_balancer_shared_step(b, 0.05, &adopted, &err), LB_ROLE_PROBER);
    pthread_t t[4];
    long ops = 0;

    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){b, 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1),
                               now_s() + seconds(), 0};
        pthread_create(&t[i], NULL, run, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ops += w[i].ops;
    }
    printf("# %ld operations on 4 threads\n", ops);
    CHECK(ops > 0);
    check_region(b, 0, false); /* the threads' counts are this process's */
    lb_balancer_free(b);
    lb_quiesce();
    return tap_done("stress_shared");
}

#else

static pid_t spawn(lb_balancer *b, uint64_t seed)
{
    pid_t pid = fork();

    if (pid == 0) {
        int held = 0;
        for (;;)
            one_op(b, &seed, &held);
    }
    return pid;
}

int main(void)
{
    lb_balancer *b = make();
    int nproc = getenv("LB_STRESS_PROCS") ? atoi(getenv("LB_STRESS_PROCS")) : 4;
    pid_t pids[16];
    uint64_t seed = 0x2545f4914f6cdd1dull;
    double end = now_s() + seconds();
    int kills = 0, status;

    if (nproc < 1 || nproc > 16)
        nproc = 4;
    for (int i = 0; i < nproc; i++)
        pids[i] = spawn(b, xorshift(&seed));
    while (now_s() < end) {
        int k = (int)(xorshift(&seed) % (uint64_t)nproc);
        usleep((useconds_t)(xorshift(&seed) % 20000));
        kill(pids[k], SIGKILL);
        waitpid(pids[k], &status, 0);
        kills++;
        pids[k] = spawn(b, xorshift(&seed));
        CHECK(pids[k] > 0);
    }
    for (int i = 0; i < nproc; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], &status, 0);
    }
    printf("# %d kills at random points\n", kills);
    CHECK(kills > 10);
    check_region(b, kills + nproc, true);
    lb_balancer_free(b);
    lb_quiesce();
    return tap_done("stress_shared");
}
#endif
