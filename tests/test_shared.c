/*
 * test_shared.c - shared balancers across fork(): records, enablement and
 * in-flight counts seen by every process, a set published by one process
 * adopted by the others, one prober at a time with takeover when it is
 * killed or stops renewing, the capacity bound, and the reuse of slots.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core.h"
#include "tap.h"
#include "util.h"

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer cannot start threads in the child of a threaded process
 * (liburcu restarts its call_rcu worker there); the threaded side of the
 * region is in stress_shared.c. */
int main(void)
{
    printf("# fork test skipped under ThreadSanitizer\n");
    return tap_done("test_shared");
}
#else

static lb_balancer *shared_balancer(int sel, uint32_t capacity)
{
    lb_config cfg = {.selection = sel};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);

    CHECK(b != NULL);
    CHECK_EQ(lb_balancer_share(b, capacity, &err), LB_OK);
    return b;
}

static int step(lb_balancer *b, double lease)
{
    const char *err = NULL;
    int adopted = 0;

    return lb_balancer_shared_step(b, lease, &adopted, &err);
}

static int set_of(lb_balancer *b, const char **addrs, size_t n)
{
    lb_backend in[64];
    const char *err = NULL;

    for (size_t i = 0; i < n; i++)
        in[i] = parse_backend(addrs[i], 1);
    return lb_balancer_update(b, in, n, NULL, NULL, &err);
}

static uint32_t in_flight(lb_balancer *b, size_t i)
{
    lb_record_info info;

    if (lb_balancer_record(b, i, &info) != LB_OK)
        return UINT32_MAX;
    return info.in_flight;
}

/* A record written in a child (health, enablement, counters, in flight)
 * reads the same in the parent, with the same id; the in-flight counts of
 * a child that exits are dropped by the next sweep. */
static void test_records_across_fork(void)
{
    lb_balancer *b = shared_balancer(LB_SELECT_ROUND_ROBIN, 16);
    const char *addrs[] = {"127.0.0.1:8080", "127.0.0.1:8081"};
    lb_health_info h0, h1;
    lb_record_info info;
    int status = -1;
    pid_t pid;

    CHECK_EQ(lb_balancer_role(b), LB_ROLE_READER);
    CHECK_EQ(set_of(b, addrs, 2), 1);
    lb_balancer_health(b, 0, &h0);
    pid = fork();
    if (pid == 0) {
        uint64_t g = lb_balancer_generation(b);
        const char *err = NULL;
        int ok = lb_balancer_observe(b, g, 0, 0, 1, LB_CHECK_ERR_CONNECT,
                                     111) == 1 &&
                 lb_balancer_set_enable(b, g, 1, 0) == LB_OK &&
                 lb_balancer_report(b, g, 1, 0, 0.25, &err) == LB_OK &&
                 lb_balancer_in_flight_add(b, g, 1, 3) == LB_OK &&
                 in_flight(b, 1) == 3;
        /* exits holding 3 in flight on purpose */
        _exit(ok ? 0 : 2);
    }
    CHECK(pid > 0);
    CHECK(wait_child(pid, 10, &status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    lb_balancer_health(b, 0, &h1);
    CHECK_EQ(h1.id, h0.id);
    CHECK_EQ(h1.healthy, 0);
    CHECK_EQ(h1.err_kind, LB_CHECK_ERR_CONNECT);
    CHECK_EQ(h1.err_detail, 111);
    lb_balancer_record(b, 1, &info);
    CHECK_EQ(info.enabled, 0);
    CHECK_EQ(info.reports_failed, 1);
    CHECK_EQ(info.latency_last_ns, 250000000);
    CHECK_EQ(lb_balancer_ready(b, lb_balancer_generation(b), 1), 0);
    /* the child is gone: a sweep (any process's step) drops its count;
     * the parent never stepped, so it is not registered either */
    CHECK_EQ(lb_balancer_shared_processes(b), 0);
    CHECK_EQ(in_flight(b, 1), 0);
    lb_balancer_free(b);
}

/* Counted selects in two processes go to each one's column: every
 * process reads the sum, a child's picks stay counted after it exits, and
 * a new record starts at zero. */
static void test_picks_across_fork(void)
{
    lb_balancer *b = shared_balancer(LB_SELECT_ROUND_ROBIN, 16);
    const char *addrs[] = {"127.0.0.1:8080", "127.0.0.1:8081"};
    const char *other[] = {"127.0.0.1:8082"};
    lb_iter *it = lb_iter_new();
    lb_record_info info;
    uint64_t g;
    int status = -1;
    pid_t pid;

    CHECK_EQ(set_of(b, addrs, 2), 1);
    g = lb_balancer_generation(b);
    for (int k = 0; k < 10; k++) /* 5 picks of each backend */
        CHECK(lb_balancer_select_counted(b, g, "", 0, 4, 0, it) >= 0);
    pid = fork();
    if (pid == 0) {
        int ok = 1;
        for (int k = 0; k < 20; k++)
            ok &= lb_balancer_select_counted(b, g, "", 0, 4, 1, it) >= 0;
        ok &= lb_balancer_record(b, 0, &info) == LB_OK &&
              info.selections == 15 && info.in_flight == 10;
        /* its own share is all of it: the parent counted none */
        ok &= lb_balancer_in_flight_own(b, g, 0) == 10;
        _exit(ok ? 0 : 2);
    }
    CHECK(pid > 0);
    CHECK(wait_child(pid, 10, &status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* the child's share is not the parent's */
    CHECK_EQ(lb_balancer_in_flight_own(b, g, 0), 0);
    CHECK_EQ(lb_balancer_in_flight_own(b, g + 1, 0), 0);
    CHECK_EQ(lb_balancer_selected(b, g, 1), LB_OK); /* the atomic count */
    lb_balancer_record(b, 0, &info);
    CHECK_EQ(info.selections, 15);
    lb_balancer_record(b, 1, &info);
    CHECK_EQ(info.selections, 16);
    /* a backend new to the set starts from zero */
    CHECK_EQ(set_of(b, other, 1), 1);
    lb_balancer_record(b, 0, &info);
    CHECK_EQ(info.selections, 0);
    lb_iter_free(it);
    lb_balancer_free(b);
}

/* A set published by one process is adopted by another at its next step,
 * with the records (and ids) of the backends that stay; an update in a
 * process that lags is made relative to the region's set. */
static void test_set_adoption(void)
{
    lb_balancer *b = shared_balancer(LB_SELECT_CONSISTENT, 16);
    const char *a1[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"};
    const char *a2[] = {"10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"};
    const char *a3[] = {"10.0.0.3:80", "10.0.0.5:80"};
    lb_health_info h_keep, h;
    uint64_t ad, pub;
    int status = -1, adopted = 0;
    const char *err = NULL;
    lb_backend out;
    pid_t pid;

    CHECK_EQ(set_of(b, a1, 3), 1);
    lb_balancer_health(b, 2, &h_keep); /* 10.0.0.3 */
    pid = fork();
    if (pid == 0)
        _exit(set_of(b, a2, 3) == 1 ? 0 : 2);
    CHECK(wait_child(pid, 10, &status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    lb_balancer_shared_versions(b, &ad, &pub);
    CHECK_EQ(pub, ad + 1);
    CHECK_EQ(lb_balancer_backend(b, 0, &out), LB_OK);
    CHECK(strcmp(out.addr, "10.0.0.1:80") == 0); /* not adopted yet */
    CHECK_EQ(lb_balancer_shared_step(b, 1, &adopted, &err), LB_ROLE_PROBER);
    CHECK_EQ(adopted, 1);
    CHECK_EQ(lb_balancer_count(b), 3);
    lb_balancer_backend(b, 2, &out);
    CHECK(strcmp(out.addr, "10.0.0.4:80") == 0);
    lb_balancer_health(b, 1, &h);
    CHECK_EQ(h.id, h_keep.id);
    CHECK_EQ(lb_balancer_shared_step(b, 1, &adopted, &err), LB_ROLE_PROBER);
    CHECK_EQ(adopted, 0);
    /* the same key goes to the same backend here and in a child that
     * adopted the same set */
    {
        lb_iter *it = lb_iter_new();
        int mine = lb_balancer_select(b, "key-42", 6, 1, it), fd[2];
        CHECK(pipe(fd) == 0);
        pid = fork();
        if (pid == 0) {
            int theirs = lb_balancer_select(b, "key-42", 6, 1, it);
            ssize_t w = write(fd[1], &theirs, sizeof(theirs));
            _exit(w == sizeof(theirs) ? 0 : 2);
        }
        {
            int theirs = -1;
            CHECK(read(fd[0], &theirs, sizeof(theirs)) == sizeof(theirs));
            CHECK_EQ(theirs, mine);
        }
        CHECK(wait_child(pid, 10, &status));
        close(fd[0]);
        close(fd[1]);
        lb_iter_free(it);
    }
    /* a lagging process: the child publishes a3, the parent (still at a2)
     * updates to a1 without adopting first: the result is a1, and
     * 10.0.0.3 kept its record throughout */
    pid = fork();
    if (pid == 0)
        _exit(set_of(b, a3, 2) == 1 ? 0 : 2);
    CHECK(wait_child(pid, 10, &status));
    CHECK_EQ(set_of(b, a1, 3), 1);
    lb_balancer_shared_versions(b, &ad, &pub);
    CHECK_EQ(ad, pub);
    lb_balancer_health(b, 2, &h);
    CHECK_EQ(h.id, h_keep.id);
    /* the same set again: nothing published */
    CHECK_EQ(set_of(b, a1, 3), 0);
    lb_balancer_free(b);
}

/* Over capacity: an error naming it, the previous set stays. */
static void test_capacity(void)
{
    lb_balancer *b = shared_balancer(LB_SELECT_ROUND_ROBIN, 3);
    const char *a[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80",
                       "10.0.0.4:80"};
    lb_backend in[4];
    const char *err = NULL;

    CHECK_EQ(set_of(b, a, 3), 1);
    for (int i = 0; i < 4; i++)
        in[i] = parse_backend(a[i], 1);
    CHECK_EQ(lb_balancer_update(b, in, 4, NULL, NULL, &err), LB_ERROR);
    CHECK(err && strstr(err, "capacity 3") != NULL);
    CHECK_EQ(lb_balancer_count(b), 3);
    /* slots of removed backends come back after the quarantine, once every
     * live process has adopted the set without them */
    lb_shared_set_quarantine(100000000); /* 0.1 s */
    CHECK_EQ(lb_balancer_update(b, in + 1, 3, NULL, NULL, &err), LB_ERROR);
    CHECK(err && strstr(err, "no free slot") != NULL);
    CHECK_EQ(lb_balancer_count(b), 3);
    CHECK_EQ(step(b, 1), LB_ROLE_PROBER); /* registered: adoption counts */
    {
        const char *one[] = {"10.0.0.1:80"};
        const char *three[] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.4:80"};
        double t0 = now_s();
        CHECK_EQ(set_of(b, one, 1), 1);          /* .2 and .3 retired */
        CHECK_EQ(set_of(b, three, 3), LB_ERROR); /* in quarantine */
        int done = 0; /* WAIT_FOR evaluates its condition once more */
        CHECK(WAIT_FOR(done || (done = set_of(b, three, 3) == 1), 5));
        CHECK(now_s() - t0 >= 0.1);
        CHECK_EQ(lb_balancer_count(b), 3);
    }
    lb_shared_set_quarantine(LB_SHARED_QUARANTINE_NS);
    {
        lb_config cfg = {0};
        lb_balancer *p = lb_balancer_new(&cfg, &err);
        CHECK(lb_balancer_share(p, 0, &err) == LB_ERROR);
        CHECK(strstr(err, "capacity") != NULL);
        CHECK_EQ(set_of(p, a, 1), 1);
        CHECK(lb_balancer_share(p, 8, &err) == LB_ERROR); /* not empty */
        CHECK_EQ(lb_balancer_role(p), LB_ROLE_PRIVATE);
        lb_balancer_free(p);
    }
    lb_balancer_free(b);
}

/* Children that step every 20 ms and write their role to a shared byte. */
struct board {
    _Atomic int role[8];
    _Atomic int stop;
};

static pid_t stepper(lb_balancer *b, struct board *bd, int k, double lease)
{
    pid_t pid = fork();

    if (pid == 0) {
        while (!atomic_load(&bd->stop)) {
            atomic_store(&bd->role[k], step(b, lease));
            usleep(20000);
        }
        _exit(0);
    }
    return pid;
}

static int probers(struct board *bd, int n)
{
    int c = 0;

    for (int i = 0; i < n; i++)
        c += atomic_load(&bd->role[i]) == LB_ROLE_PROBER;
    return c;
}

static int prober_index(struct board *bd, int n)
{
    for (int i = 0; i < n; i++)
        if (atomic_load(&bd->role[i]) == LB_ROLE_PROBER)
            return i;
    return -1;
}

/* One prober among three processes; kill -9 it and another takes over at
 * once (its mutex is released by the kernel); stop it (SIGSTOP: it stops
 * renewing) and another takes over when its lease runs out. */
static void test_turn(void)
{
    lb_balancer *b = shared_balancer(LB_SELECT_ROUND_ROBIN, 8);
    struct board *bd = mmap(NULL, sizeof(*bd), PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const double lease = 0.5;
    pid_t pids[3], killed = 0;
    int p, status;
    double t0;

    CHECK(bd != MAP_FAILED);
    memset(bd, 0, sizeof(*bd));
    for (int i = 0; i < 3; i++)
        pids[i] = stepper(b, bd, i, lease);
    CHECK(WAIT_FOR(probers(bd, 3) == 1 && atomic_load(&bd->role[0]) &&
                       atomic_load(&bd->role[1]) && atomic_load(&bd->role[2]),
                   5));
    /* stays one over time */
    for (int k = 0; k < 20; k++) {
        usleep(10000);
        CHECK_EQ(probers(bd, 3) <= 1, 1);
    }
    p = prober_index(bd, 3);
    CHECK(p >= 0);
    CHECK_EQ(lb_balancer_role(b), LB_ROLE_READER); /* the parent */
    killed = pids[p];
    kill(pids[p], SIGKILL);
    t0 = now_s();
    CHECK(wait_child(pids[p], 5, &status));
    atomic_store(&bd->role[p], 0);
    CHECK(WAIT_FOR(probers(bd, 3) == 1, 5));
    printf("# takeover after kill -9: %.3f s (lease %.1f s)\n", now_s() - t0,
           lease);
    CHECK(now_s() - t0 < lease); /* no need to wait for the lease */
    p = prober_index(bd, 3);
    CHECK(p >= 0);
    kill(pids[p], SIGSTOP);
    t0 = now_s();
    atomic_store(&bd->role[p], 0);
    CHECK(WAIT_FOR(probers(bd, 3) == 1, 5));
    printf("# takeover from a stopped prober: %.3f s (lease %.1f s)\n",
           now_s() - t0, lease);
    CHECK(now_s() - t0 < 2 * lease + 0.5);
    {
        int q = prober_index(bd, 3);
        kill(pids[p], SIGCONT); /* back: a reader now */
        CHECK(WAIT_FOR(atomic_load(&bd->role[p]) == LB_ROLE_READER, 5));
        CHECK_EQ(prober_index(bd, 3), q);
    }
    atomic_store(&bd->stop, 1);
    for (int i = 0; i < 3; i++)
        if (pids[i] != killed)
            CHECK(wait_child(pids[i], 5, &status));
    munmap(bd, sizeof(*bd));
    lb_balancer_free(b);
}

/* A process stopped while it holds the region's lock stops nobody for
 * good: an update fails after the wait with an error saying so, a step
 * returns at once; once the holder is killed, the next writer repairs and
 * goes on. */
static void test_stopped_holder(void)
{
    lb_balancer *b = shared_balancer(LB_SELECT_ROUND_ROBIN, 8);
    const char *a[] = {"10.0.0.1:80", "10.0.0.2:80"};
    const char *err = NULL;
    int status, adopted;
    double t0;
    pid_t pid;

    CHECK_EQ(set_of(b, a, 1), 1);
    pid = fork();
    if (pid == 0) {
        lb_shared_lock(b->shared, 1);
        raise(SIGSTOP);
        _exit(0);
    }
    {
        int stopped = 0; /* WAIT_FOR evaluates its condition once more */
        CHECK(WAIT_FOR(
            stopped ||
                (stopped = waitpid(pid, &status, WUNTRACED | WNOHANG) == pid),
            5));
    }
    t0 = now_s();
    CHECK_EQ(lb_balancer_shared_step(b, 1, &adopted, &err), LB_ROLE_READER);
    CHECK(now_s() - t0 < 0.5); /* could not register: tries next time */
    t0 = now_s();
    {
        lb_backend in[2] = {parse_backend(a[0], 1), parse_backend(a[1], 1)};
        CHECK_EQ(lb_balancer_update(b, in, 2, NULL, NULL, &err), LB_ERROR);
        CHECK(err && strstr(err, "stayed locked") != NULL);
    }
    printf("# update gave up after %.2f s\n", now_s() - t0);
    CHECK(now_s() - t0 < LB_SHARED_WAIT + 1);
    CHECK_EQ(lb_balancer_count(b), 1);
    kill(pid, SIGKILL);
    CHECK(wait_child(pid, 5, &status));
    CHECK_EQ(set_of(b, a, 2), 1);
    CHECK_EQ(lb_balancer_shared_step(b, 1, &adopted, &err), LB_ROLE_PROBER);
    {
        uint32_t repairs, swept;
        lb_shared_counts(b->shared, &repairs, &swept);
        CHECK_EQ(repairs, 1);
    }
    lb_balancer_free(b);
}

int main(void)
{
    TEST(test_stopped_holder());
    TEST(test_records_across_fork());
    TEST(test_picks_across_fork());
    TEST(test_set_adoption());
    TEST(test_capacity());
    TEST(test_turn());
    lb_quiesce();
    return tap_done("test_shared");
}
#endif
