/*
 * util.h - small helpers shared by the C tests: a monotonic clock, a
 * deadline wait, a PRNG, counts of this process's descriptors and
 * checker threads (for "nothing leaks" checks), and the ports and temporary
 * directories of servers a test starts (LB_PORT_BASE, LB_PORT_COUNT,
 * LB_TMPDIR, as spec/support/ports.lua reads them).
 */
#ifndef LB_TEST_UTIL_H
#define LB_TEST_UTIL_H

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lb.h"

static inline double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wait for cond with a deadline, polling every millisecond; the value of
 * cond at the end. */
#define WAIT_FOR(cond, secs)                                                   \
    __extension__({                                                            \
        double wf_end = now_s() + (secs);                                      \
        while (!(cond) && now_s() < wf_end)                                    \
            usleep(1000);                                                      \
        (cond);                                                                \
    })

static inline uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Entries of a /proc directory, less the descriptor opendir itself holds
 * (which /proc/self/fd lists). */
static inline int count_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;
}

static inline int count_fds(void) { return count_dir("/proc/self/fd"); }

/* Checker threads alive, by name (liburcu has threads of its own); *tid,
 * when not NULL, receives the id of the last one found (0: none). */
static inline int checker_scan(int *tid)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    if (tid)
        *tid = 0;
    while (d && (e = readdir(d))) {
        char path[300], comm[32] = "";
        FILE *f;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof(comm), f) &&
                strncmp(comm, "lb-checker", 10) == 0) {
                n++;
                if (tid)
                    *tid = atoi(e->d_name);
            }
            fclose(f);
        }
    }
    if (d)
        closedir(d);
    return n;
}

static inline int checker_threads(void) { return checker_scan(NULL); }

/* Wait up to `secs` for child `pid` to exit; one that is still running
 * then is killed (and reaped).  *status as waitpid gives it.  Returns true
 * when the child exited by itself in time. */
static inline int wait_child(pid_t pid, double secs, int *status)
{
    double end = now_s() + secs;
    pid_t w;

    while ((w = waitpid(pid, status, WNOHANG)) == 0 && now_s() < end)
        usleep(2000);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, status, 0);
    }
    return w == pid;
}

/* A backend from its text, or abort (test data is never wrong). */
static inline lb_backend parse_backend(const char *s, uint32_t w)
{
    lb_backend b;
    const char *err = NULL;

    if (lb_backend_parse(s, strlen(s), w, &b, &err) != LB_OK) {
        fprintf(stderr, "parse %s: %s\n", s, err);
        abort();
    }
    return b;
}

/* Publish be[0..n) on b, or exit (a test cannot go on without its set). */
static inline void publish_or_exit(lb_balancer *b, const lb_backend *be,
                                   size_t n)
{
    const char *err = NULL;

    if (lb_balancer_update(b, be, n, NULL, NULL, &err) < 0) {
        fprintf(stderr, "update: %s\n", err);
        exit(2);
    }
}

/* Where temporary directories go: LB_TMPDIR, else TMPDIR, else /tmp. */
static inline const char *test_tmpdir(void)
{
    const char *t = getenv("LB_TMPDIR");

    if (t == NULL || *t == '\0')
        t = getenv("TMPDIR");
    return t == NULL || *t == '\0' ? "/tmp" : t;
}

/* mkdtemp(3) of <test_tmpdir()>/<name>XXXXXX into buf: buf, or NULL. */
static inline char *test_mkdtemp(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%sXXXXXX", test_tmpdir(), name);

    if (n < 0 || (size_t)n >= size)
        return NULL;
    return mkdtemp(buf);
}

/* Can a socket of this type bind 127.0.0.1:port (0: any) now?  The port
 * bound, or 0. */
static inline int test_probe_port(int type, int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, type, 0), got = 0;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        got = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return got;
}

/* A 127.0.0.1 port free a moment ago for TCP (and for UDP too when udp is
 * set), for a server the test starts later, never the same twice in this
 * process: from [LB_PORT_BASE, LB_PORT_BASE + LB_PORT_COUNT) when
 * LB_PORT_BASE is set (LB_PORT_COUNT defaults to 1000), else chosen by the
 * kernel.  0 when none is left. */
static inline int test_free_port(int udp)
{
    static unsigned char handed[65536];
    static int cursor;
    const char *b = getenv("LB_PORT_BASE"), *c = getenv("LB_PORT_COUNT");
    int base = b && *b ? atoi(b) : 0, count = c && *c ? atoi(c) : 1000;

    for (int i = 0; i < (base > 0 ? count : 100); i++) {
        int p;

        if (base > 0) {
            p = base + cursor;
            cursor = (cursor + 1) % count;
            if (p > 65535 || handed[p] || test_probe_port(SOCK_STREAM, p) != p)
                continue;
        } else if ((p = test_probe_port(SOCK_STREAM, 0)) == 0 || handed[p]) {
            continue;
        }
        if (udp && test_probe_port(SOCK_DGRAM, p) != p)
            continue;
        handed[p] = 1;
        return p;
    }
    return 0;
}

#endif
