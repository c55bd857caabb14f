/*
 * test_fork.c - fork() while every background part of lb is busy.
 *
 * nginx forks its workers (and daemonises) after init_by_lua has built
 * balancers, at any moment of liburcu's call_rcu worker freeing retired
 * snapshots and of the checker thread running rounds.  Here a writer thread
 * swaps consistent-hash sets without pause (so the call_rcu worker is
 * always giving Ketama arrays back), a second balancer is checked every
 * few milliseconds, and the main thread forks hundreds of times.  Every
 * fork must return in both processes, and every child must select from
 * the balancer it inherited, update it and free it.
 *
 * A fork that deadlocks leaves this process stuck inside fork(): a
 * watchdog thread that sees no progress for WATCHDOG_S seconds reports it
 * and ends the test with a failure.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer cannot start threads in the child of a threaded process,
 * and liburcu restarts its call_rcu worker there: the test runs in the
 * plain and ASan builds. */
int main(void)
{
    printf("# fork test skipped under ThreadSanitizer\n");
    return tap_done("test_fork");
}
#else

#define NBACKENDS 100
#define MIN_FORKS 100
#define MIN_SECONDS 2.0
#define CHILD_S 5
#define MAX_FAILED 3
#define WATCHDOG_S 15

static atomic_int stop;
static atomic_long progress;
static atomic_long updates;

static void make_set(lb_backend *set, size_t n, uint32_t shift)
{
    const char *err = NULL;

    for (size_t i = 0; i < n; i++) {
        char text[32];
        uint32_t k = (uint32_t)i + shift;
        int len =
            snprintf(text, sizeof(text), "10.1.%u.%u:80", k / 250, k % 250);

        if (lb_backend_parse(text, (size_t)len, 1 + k % 3, &set[i], &err) !=
            LB_OK) {
            fprintf(stderr, "parse %s: %s\n", text, err);
            abort();
        }
    }
}

/* Swap between two overlapping sets until told to stop: every update
 * retires a snapshot whose Ketama ring the call_rcu worker frees. */
static void *writer(void *arg)
{
    lb_balancer *b = arg;
    static lb_backend set[NBACKENDS + 1];
    static uint32_t order[NBACKENDS + 1];
    const char *err = NULL;

    for (uint32_t round = 0; !atomic_load(&stop); round++) {
        size_t count = 0;

        make_set(set, NBACKENDS, round % 2);
        if (lb_balancer_update(b, set, NBACKENDS, order, &count, &err) < 0) {
            fprintf(stderr, "update: %s\n", err);
            abort();
        }
        atomic_fetch_add(&updates, 1);
    }
    return NULL;
}

static void *watchdog(void *arg)
{
    long last = -1;
    double since = now_s();

    (void)arg;
    while (!atomic_load(&stop)) {
        long p = atomic_load(&progress);

        if (p != last) {
            last = p;
            since = now_s();
        } else if (now_s() - since > WATCHDOG_S) {
            fprintf(stderr,
                    "test_fork: no fork returned for %d s after %ld "
                    "forks: deadlock\n",
                    WATCHDOG_S, p);
            printf("test_fork: %d passed, %d failed\n", tap_pass, tap_fail + 1);
            fflush(stdout);
            _exit(1);
        }
        usleep(10000);
    }
    return NULL;
}

/* A loopback port nothing listens on: checks against it fail at once, so
 * the checker thread runs a round every few milliseconds. */
static int closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        abort();
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static lb_balancer *checked_balancer(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    lb_check_config cc = {.kind = LB_CHECK_TCP, .timeout = 0.5};
    lb_balancer *b;
    lb_backend be;
    uint32_t order;
    size_t count;
    char text[32];
    const char *err = NULL;
    int len = snprintf(text, sizeof(text), "127.0.0.1:%d", closed_port());

    b = lb_balancer_new(&cfg, &err);
    CHECK(b != NULL);
    CHECK_EQ(lb_backend_parse(text, (size_t)len, 1, &be, &err), LB_OK);
    CHECK(lb_balancer_update(b, &be, 1, &order, &count, &err) >= 0);
    CHECK_EQ(lb_balancer_set_check(b, &cc, &err), LB_OK);
    CHECK_EQ(lb_balancer_checks_start(b, 0.002, 1, &err), LB_OK);
    return b;
}

/* The child: select from the inherited balancer, update it (which needs
 * the call_rcu worker liburcu restarts in the child), and free both
 * balancers (the checked one stops the child's checker thread).  Exit
 * status 0 when all went as expected. */
static int child(lb_balancer *b, lb_balancer *checked)
{
    static lb_backend set[NBACKENDS];
    static uint32_t order[NBACKENDS];
    lb_iter *it = lb_iter_new();
    const char *err = NULL;
    size_t count = 0;
    int ok = it != NULL;

    alarm(CHILD_S);
    for (int k = 0; ok && k < 50; k++) {
        char key[16];
        int len = snprintf(key, sizeof(key), "k%d", k);
        int idx = lb_balancer_select(b, key, (size_t)len, 8, it);

        ok = idx >= 0 && idx < NBACKENDS;
    }
    make_set(set, NBACKENDS, 7);
    ok &= lb_balancer_update(b, set, NBACKENDS, order, &count, &err) >= 0;
    ok &= lb_balancer_select(b, "x", 1, 8, it) >= 0;
    lb_balancer_free(checked);
    lb_balancer_free(b);
    lb_quiesce();
    lb_iter_free(it);
    return ok ? 0 : 1;
}

int main(void)
{
    lb_config cfg = {.selection = LB_SELECT_CONSISTENT};
    static lb_backend set[NBACKENDS];
    static uint32_t order[NBACKENDS];
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err), *checked = NULL;
    pthread_t wt, dt;
    size_t count = 0;
    long forks = 0, failed = 0;
    double start;

    CHECK(b != NULL);
    if (!b)
        return tap_done("test_fork");
    make_set(set, NBACKENDS, 0);
    CHECK(lb_balancer_update(b, set, NBACKENDS, order, &count, &err) >= 0);
    checked = checked_balancer();
    pthread_create(&wt, NULL, writer, b);
    pthread_create(&dt, NULL, watchdog, NULL);
    CHECK(WAIT_FOR(atomic_load(&updates) >= 10, 10));

    start = now_s();
    while ((forks < MIN_FORKS || now_s() - start < MIN_SECONDS) &&
           failed < MAX_FAILED) {
        pid_t pid = fork();
        int status = -1;
        pid_t w = 0;
        double end;

        if (pid == 0)
            _exit(child(b, checked));
        atomic_fetch_add(&progress, 1);
        CHECK(pid > 0);
        if (pid < 0)
            break;
        forks++;
        end = now_s() + CHILD_S + 5;
        while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < end)
            usleep(500);
        if (w == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            failed++;
            fprintf(stderr, "child %ld: status 0x%x\n", forks, status);
        }
    }
    atomic_store(&stop, 1);
    pthread_join(wt, NULL);
    pthread_join(dt, NULL);
    CHECK_EQ(failed, 0);
    CHECK(forks >= MIN_FORKS);
    printf("# %ld forks, %ld updates in %.1f s\n", forks, atomic_load(&updates),
           now_s() - start);

    /* the parent goes on: a select, an update, and everything freed */
    {
        lb_iter *it = lb_iter_new();

        CHECK(lb_balancer_select(b, "after", 5, 8, it) >= 0);
        lb_iter_free(it);
    }
    make_set(set, NBACKENDS, 3);
    CHECK(lb_balancer_update(b, set, NBACKENDS, order, &count, &err) >= 0);
    if (checked)
        lb_balancer_free(checked);
    lb_balancer_free(b);
    lb_quiesce();
    return tap_done("test_fork");
}
#endif
