/*
 * test_signals.c - no thread that lb starts takes the host's signals.
 *
 * nginx's master waits for its workers in sigsuspend() with SIGCHLD,
 * SIGQUIT, SIGHUP and the rest blocked on its own thread.  The kernel
 * hands a process-directed signal to any thread that does not block it:
 * a thread of lb's (liburcu's call_rcu worker, created on the first
 * deferred free in init_by_lua, or the checker thread) that leaves them
 * open takes them, the handler runs there, and the master's sigsuspend
 * never wakes.  Here every thread except the main one must block every
 * signal a host may use, in the process that created them and in a child
 * after fork() (where liburcu restarts its worker).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

/* The asynchronous signals a host such as nginx handles or waits for. */
static const int host_signals[] = {SIGHUP,  SIGINT,   SIGQUIT, SIGUSR1,
                                   SIGUSR2, SIGPIPE,  SIGALRM, SIGTERM,
                                   SIGCHLD, SIGWINCH, SIGIO,   SIGURG};

/* Threads of this process other than the main one whose blocked mask
 * leaves one of host_signals open; their names go to stderr.  -1 when
 * /proc cannot be read.  *threads receives the number of other threads. */
static int open_threads(int *threads)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int bad = 0;

    *threads = 0;
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char path[300], line[256], comm[32] = "?";
        unsigned long long blocked = 0;
        FILE *f;

        if (e->d_name[0] == '.' || atoi(e->d_name) == getpid())
            continue;
        (*threads)++;
        snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
        f = fopen(path, "r");
        if (!f)
            continue; /* the thread exited meanwhile */
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "Name:", 5) == 0)
                sscanf(line + 5, "%31s", comm);
            if (strncmp(line, "SigBlk:", 7) == 0)
                blocked = strtoull(line + 7, NULL, 16);
        }
        fclose(f);
        for (size_t i = 0; i < sizeof(host_signals) / sizeof(int); i++) {
            if (!(blocked & (1ull << (host_signals[i] - 1)))) {
                fprintf(stderr, "# thread %s (%s) takes signal %d\n", e->d_name,
                        comm, host_signals[i]);
                bad++;
                break;
            }
        }
    }
    closedir(d);
    return bad;
}

static lb_balancer *busy_balancer(void)
{
    lb_config cfg = {.selection = LB_SELECT_CONSISTENT};
    lb_check_config check = {.kind = LB_CHECK_TCP, .timeout = 0.2};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend set[2];
    size_t count;

    if (!b || lb_backend_parse("127.0.0.1:1", 11, 1, &set[0], &err) ||
        lb_backend_parse("127.0.0.1:2", 11, 2, &set[1], &err)) {
        fprintf(stderr, "setup: %s\n", err ? err : "?");
        exit(1);
    }
    /* Two updates: the second retires the first snapshot through
     * call_rcu, which starts liburcu's worker thread. */
    lb_balancer_update(b, set, 1, NULL, &count, &err);
    lb_balancer_update(b, set, 2, NULL, &count, &err);
    if (lb_balancer_set_check(b, &check, &err) != LB_OK ||
        lb_balancer_checks_start(b, 0.05, 0, &err) != LB_OK) {
        fprintf(stderr, "checks: %s\n", err);
        exit(1);
    }
    return b;
}

int main(void)
{
    int threads = 0, bad;
    lb_balancer *b = busy_balancer();
    pid_t pid;
    int status = 0;

    /* The checker thread and liburcu's call_rcu worker both exist. */
    CHECK(WAIT_FOR(checker_threads() == 1, 5));
    lb_quiesce();
    bad = open_threads(&threads);
    CHECK(threads >= 2);
    CHECK_EQ(bad, 0);

#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer cannot start threads in the child of a threaded
     * process (see test_fork.c). */
    printf("# fork case skipped under ThreadSanitizer\n");
    (void)pid;
    (void)status;
#else
    /* In a child, liburcu restarts its worker inside the fork handler and
     * lb restarts the checker: both must block the host's signals too. */
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        int n = 0, child_bad;

        lb_backend more[3];
        const char *err = NULL;
        size_t count;

        lb_backend_parse("127.0.0.1:3", 11, 1, &more[0], &err);
        lb_backend_parse("127.0.0.1:4", 11, 1, &more[1], &err);
        lb_backend_parse("127.0.0.1:5", 11, 1, &more[2], &err);
        lb_balancer_update(b, more, 3, NULL, &count, &err);
        if (!WAIT_FOR(checker_threads() == 1, 5))
            _exit(3);
        lb_quiesce();
        child_bad = open_threads(&n);
        _exit(child_bad == 0 && n >= 2 ? 0 : 2);
    }
    CHECK(pid > 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
#endif

    lb_balancer_free(b);
    lb_quiesce();
    return tap_done("test_signals");
}
