/*
 * test_hostile.c - the health checker against hostile loopback backends:
 * one that accepts and never reads, one that reads and never answers, one
 * that answers a byte per second, a 1 MiB header, a non-HTTP banner, a
 * reset in the middle of the response, a close before the status line, a
 * chunked body that never ends.  Each check ends within its timeout, the
 * checker goes on serving healthy backends in the same round and other
 * balancers meanwhile, and after 10,000 such checks the process holds the
 * descriptors it started with.
 *
 * The servers run in a child process forked before the first lb call (one
 * epoll loop over every listener), so this process's descriptor count is
 * the checker's alone.  Counters the server keeps are in shared memory.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

/* ---- the hostile servers (child process) ---- */

enum mode {
    H_OK,         /* 200 with a body, then close */
    H_NOREAD,     /* accept, never read */
    H_SILENT,     /* read the request, never answer */
    H_DRIP,       /* a valid 200, one byte per second */
    H_DRIP_FAST,  /* the same, one byte every 5 ms: done well in time */
    H_BIGHEAD,    /* a status line, then a 1 MiB header */
    H_BANNER,     /* a non-HTTP banner at once, before any request */
    H_RESET,      /* half a response, then RST (SO_LINGER 0) */
    H_EARLYCLOSE, /* read the request, close before the status line */
    H_CHUNKS,     /* 200, chunked, one chunk every 10 ms, never the last */
    NMODES
};

static const char *const mode_name[NMODES] = {
    "ok",          "never-read", "silent", "drip",        "drip-fast",
    "1MiB-header", "banner",     "reset",  "early-close", "endless-chunks",
};

static const char ok_resp[] =
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
static const char big_head[] = "HTTP/1.1 200 OK\r\nX-Big: ";
static const char banner[] = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
static const char reset_part[] = "HTTP/1.1 200 OK\r\nContent-Le";
static const char chunk_head[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

#define MAX_LISTENERS 512
#define BIG (1024 * 1024)

struct listener {
    int fd;
    int mode;
    int port;
    char ip[16];
};

/* Shared with the server process. */
struct shared {
    _Atomic long accepted[MAX_LISTENERS];
    _Atomic long requests[MAX_LISTENERS];
    _Atomic long open_conns;
};

static struct listener lis[MAX_LISTENERS];
static int nlis;
static struct shared *sh;
static pid_t server_pid;
static char *bigbuf;

struct conn {
    int fd;
    int li; /* listener index */
    int mode;
    char in[4096];
    size_t in_len;
    bool head; /* request head read */
    const char *out;
    size_t out_len, out_off;
    double next;        /* next timed write (drip, chunks); 0: none */
    bool chunking;      /* writing endless chunks */
    struct conn *tnext; /* timed list */
};

static int add_listener(const char *ip, int mode)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    socklen_t sl = sizeof(in);
    struct listener *l = &lis[nlis];

    if (nlis == MAX_LISTENERS) {
        fprintf(stderr, "too many listeners\n");
        exit(2);
    }
    inet_pton(AF_INET, ip, &in.sin_addr);
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&in, sizeof(in)) < 0 ||
        listen(l->fd, 512) < 0) {
        perror("listener");
        exit(2);
    }
    getsockname(l->fd, (struct sockaddr *)&in, &sl);
    l->port = ntohs(in.sin_port);
    l->mode = mode;
    snprintf(l->ip, sizeof(l->ip), "%s", ip);
    return nlis++;
}

static struct conn *timed_head;

static void conn_close(int ep, struct conn *c, bool reset)
{
    struct conn **pp;

    for (pp = &timed_head; *pp; pp = &(*pp)->tnext)
        if (*pp == c) {
            *pp = c->tnext;
            break;
        }
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    atomic_fetch_sub(&sh->open_conns, 1);
    free(c);
}

static void conn_timed(struct conn *c, double delay)
{
    c->next = now_s() + delay;
    c->tnext = timed_head;
    timed_head = c;
}

/* Write what is pending; false when the peer is gone. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0)
            return errno == EAGAIN;
        c->out_off += (size_t)n;
    }
    return true;
}

static void conn_send(struct conn *c, const char *buf, size_t len)
{
    c->out = buf;
    c->out_len = len;
    c->out_off = 0;
}

/* The request head is in: start answering as the mode says.  Returns
 * false when the connection is to be closed now (reset: with RST). */
static bool on_request(int ep, struct conn *c)
{
    atomic_fetch_add(&sh->requests[c->li], 1);
    switch (c->mode) {
    case H_OK:
        conn_send(c, ok_resp, sizeof(ok_resp) - 1);
        break;
    case H_DRIP:
    case H_DRIP_FAST:
        conn_send(c, ok_resp, 1);
        conn_timed(c, c->mode == H_DRIP ? 1.0 : 0.005);
        break;
    case H_BIGHEAD:
        conn_send(c, bigbuf, BIG);
        break;
    case H_RESET:
        conn_send(c, reset_part, sizeof(reset_part) - 1);
        conn_flush(c);
        conn_close(ep, c, true);
        return false;
    case H_EARLYCLOSE:
        conn_close(ep, c, false);
        return false;
    case H_CHUNKS:
        conn_send(c, chunk_head, sizeof(chunk_head) - 1);
        c->chunking = true;
        conn_timed(c, 0.01);
        break;
    default: /* silent, banner: nothing more */
        break;
    }
    return true;
}

static void on_event(int ep, struct conn *c, uint32_t ev)
{
    if (c->mode != H_NOREAD && (ev & EPOLLIN)) {
        for (;;) {
            ssize_t n;

            if (c->in_len == sizeof(c->in))
                c->in_len = 0; /* silent: keep draining */
            n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN)) {
                conn_close(ep, c, false);
                return;
            }
            if (n < 0)
                break;
            c->in_len += (size_t)n;
            if (!c->head && memmem(c->in, c->in_len, "\r\n\r\n", 4)) {
                c->head = true;
                if (!on_request(ep, c))
                    return;
            }
        }
    }
    if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        conn_close(ep, c, false);
        return;
    }
    if (!conn_flush(c)) {
        conn_close(ep, c, false);
        return;
    }
    if (c->mode == H_OK && c->out_off == c->out_len && c->out_len) {
        conn_close(ep, c, false); /* Connection: close */
        return;
    }
}

static void on_timers(int ep)
{
    double t = now_s();
    struct conn *c = timed_head, *next;

    for (; c; c = next) {
        next = c->tnext;
        if (c->next > t)
            continue;
        if (c->chunking) {
            if (c->out_off == c->out_len)
                conn_send(c, "1\r\nx\r\n", 6);
            c->next = t + 0.01;
        } else {
            if (c->out_off == c->out_len && c->out_len < sizeof(ok_resp) - 1) {
                c->out_len++;
            }
            c->next = t + (c->mode == H_DRIP ? 1.0 : 0.005);
        }
        if (!conn_flush(c))
            conn_close(ep, c, false);
    }
}

static void serve(void)
{
    int ep = epoll_create1(0);
    struct epoll_event evs[256];

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(0);
    bigbuf = malloc(BIG);
    memset(bigbuf, 'a', BIG);
    memcpy(bigbuf, big_head, sizeof(big_head) - 1);
    for (int i = 0; i < nlis; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, lis[i].fd, &e);
    }
    for (;;) {
        int n = epoll_wait(ep, evs, 256, timed_head ? 2 : 100);

        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;

            if (d < MAX_LISTENERS) {
                struct listener *l = &lis[d];
                int fd;

                while ((fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct conn *c = calloc(1, sizeof(*c));
                    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT |
                                                      EPOLLRDHUP | EPOLLET};

                    c->fd = fd;
                    c->li = (int)d;
                    c->mode = l->mode;
                    e.data.ptr = c;
                    atomic_fetch_add(&sh->accepted[d], 1);
                    atomic_fetch_add(&sh->open_conns, 1);
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
                    if (c->mode == H_BANNER)
                        conn_send(c, banner, sizeof(banner) - 1);
                }
            } else {
                on_event(ep, evs[i].data.ptr, evs[i].events);
            }
        }
        on_timers(ep);
    }
}

static void server_start(void)
{
    sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    fflush(NULL);
    server_pid = fork();
    if (server_pid < 0) {
        perror("fork");
        exit(2);
    }
    if (server_pid == 0) {
        serve();
        _exit(0);
    }
    for (int i = 0; i < nlis; i++)
        close(lis[i].fd);
}

static void server_stop(void)
{
    int st;

    kill(server_pid, SIGKILL);
    waitpid(server_pid, &st, 0);
}

/* ---- balancers ---- */

static lb_balancer *bal_new(const int *li, int n)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_backend *be = calloc((size_t)n, sizeof(*be));

    if (!b || !be) {
        fprintf(stderr, "lb_balancer_new: %s\n", err);
        exit(2);
    }
    for (int i = 0; i < n; i++) {
        char addr[64];

        snprintf(addr, sizeof(addr), "%s:%d", lis[li[i]].ip, lis[li[i]].port);
        be[i] = parse_backend(addr, 1);
    }
    publish_or_exit(b, be, (size_t)n);
    free(be);
    return b;
}

static void set_http(lb_balancer *b, double timeout)
{
    lb_check_config c = {.kind = LB_CHECK_HTTP, .timeout = timeout};
    const char *err = NULL;

    if (lb_balancer_set_check(b, &c, &err) != LB_OK) {
        fprintf(stderr, "set_check: %s\n", err);
        exit(2);
    }
}

static lb_health_info health(lb_balancer *b, size_t i)
{
    lb_health_info h;

    memset(&h, 0, sizeof(h));
    lb_balancer_health(b, i, &h);
    return h;
}

static const char *errtext(lb_health_info h)
{
    static char buf[256];

    lb_check_error_text(h.err_kind, h.err_detail, buf, sizeof(buf));
    return buf;
}

/* ---- tests ---- */

struct expect {
    int mode;
    int healthy;
    int kind;   /* expected err_kind, or -1: IO or CLOSED */
    int detail; /* expected err_detail, or -1: any */
    bool full;  /* takes the whole timeout */
};

static const struct expect expects[] = {
    {H_NOREAD, 0, LB_CHECK_ERR_TIMEOUT, LB_CHECK_PHASE_RESPONSE, true},
    {H_SILENT, 0, LB_CHECK_ERR_TIMEOUT, LB_CHECK_PHASE_RESPONSE, true},
    {H_DRIP, 0, LB_CHECK_ERR_TIMEOUT, LB_CHECK_PHASE_RESPONSE, true},
    {H_DRIP_FAST, 1, LB_CHECK_ERR_NONE, -1, false},
    {H_BIGHEAD, 0, LB_CHECK_ERR_HTTP_MALFORMED, LB_HTTP_HEADER_TOO_LARGE,
     false},
    /* not "HTTP/": rejected with its first bytes, not at the timeout */
    {H_BANNER, 0, LB_CHECK_ERR_HTTP_MALFORMED, LB_HTTP_BAD_STATUS_LINE, false},
    {H_RESET, 0, -1, -1, false},
    {H_EARLYCLOSE, 0, LB_CHECK_ERR_CLOSED, LB_CHECK_PHASE_RESPONSE, false},
    {H_CHUNKS, 0, LB_CHECK_ERR_TIMEOUT, LB_CHECK_PHASE_RESPONSE, true},
};
#define NEXPECT (int)(sizeof(expects) / sizeof(expects[0]))

static bool kind_ok(const struct expect *x, lb_health_info h)
{
    if (x->kind == -1)
        return h.err_kind == LB_CHECK_ERR_IO ||
               h.err_kind == LB_CHECK_ERR_CLOSED;
    return h.err_kind == x->kind &&
           (x->detail == -1 || h.err_detail == x->detail);
}

/* Per kind: the listener on 127.0.0.1 (checked first in a sequential
 * round: sorted by address) and a healthy one on 127.0.0.2. */
static int single_li[NMODES], healthy_li;

/*
 * One hostile backend beside a healthy one, in a parallel and in a
 * sequential round, with a timeout of T: the hostile check ends as
 * expected, no later than T (+ slack), and the healthy one passes.
 */
static void test_each(void)
{
    const double T = 1.5, slack = 0.5;

    for (int k = 0; k < NEXPECT; k++) {
        const struct expect *x = &expects[k];
        int li[2] = {single_li[x->mode], healthy_li};
        lb_balancer *b = bal_new(li, 2);

        set_http(b, T);
        for (int parallel = 1; parallel >= 0; parallel--) {
            const char *err = NULL;
            double t0 = now_s(), el;
            lb_health_info hh, ok;
            int rc = lb_balancer_check_round(b, parallel, &err);

            el = now_s() - t0;
            hh = health(b, 0);
            ok = health(b, 1);
            CHECK_EQ(rc, 2);
            CHECK_EQ(hh.healthy, x->healthy);
            CHECK(x->healthy ? hh.err_kind == 0 : kind_ok(x, hh));
            CHECK_EQ(ok.healthy, 1);
            CHECK_EQ(ok.err_kind, 0);
            CHECK(el < T + slack);
            if (x->full)
                CHECK(el >= T * 0.95);
            printf("# %-14s %-10s %.3f s  %s\n", mode_name[x->mode],
                   parallel ? "parallel" : "sequential", el,
                   hh.healthy ? "healthy" : errtext(hh));
        }
        lb_balancer_free(b);
    }
}

/*
 * 10,000 hostile checks: every hostile kind on many listeners beside
 * healthy ones, parallel rounds with a short timeout, while a second
 * balancer's periodic checks of a healthy backend keep going.  Each round
 * ends within the timeout; healthy backends pass in every round; the
 * descriptors of the process are those of the start once it is over.
 */
static void test_mass(int fds0, const int *mass_li, int nmass,
                      const int *mass_ok, int nok, int periodic_li)
{
    const double T = 0.4;
    const int target = 10000;
    int all[MAX_LISTENERS], mode_at[MAX_LISTENERS],
        n = 0, hostile_per_round = 0, rounds = 0;
    int checks = 0, bad_rounds = 0, unhealthy_ok = 0, wrong = 0;
    double worst = 0, t0 = now_s();
    long pr0, pr1;
    lb_balancer *b, *p;
    const char *err = NULL;
    int fds_round1 = -1;

    for (int i = 0; i < nmass; i++)
        all[n++] = mass_li[i];
    for (int i = 0; i < nok; i++)
        all[n++] = mass_ok[i];
    b = bal_new(all, n);
    set_http(b, T);
    p = bal_new(&periodic_li, 1);
    set_http(p, 1);
    CHECK_EQ(lb_balancer_checks_start(p, 0.02, 0, &err), LB_OK);
    CHECK(WAIT_FOR(atomic_load(&sh->requests[periodic_li]) >= 1, 5));
    pr0 = atomic_load(&sh->requests[periodic_li]);

    /* the mode of each backend, in the balancer's (sorted) order */
    for (int i = 0; i < n; i++) {
        lb_backend be;

        lb_balancer_backend(b, (size_t)i, &be);
        mode_at[i] = -1;
        for (int j = 0; j < n; j++) {
            char addr[64];

            snprintf(addr, sizeof(addr), "%s:%d", lis[all[j]].ip,
                     lis[all[j]].port);
            if (strlen(addr) == be.addr_len &&
                memcmp(addr, be.addr, be.addr_len) == 0)
                mode_at[i] = lis[all[j]].mode;
        }
        CHECK(mode_at[i] >= 0);
        hostile_per_round += mode_at[i] != H_OK;
    }
    while (checks < target) {
        double r0 = now_s(), el;
        int rc = lb_balancer_check_round(b, 1, &err);

        el = now_s() - r0;
        worst = el > worst ? el : worst;
        if (rc != n || el > T + 0.75) {
            bad_rounds++;
            printf("# round %d: %d checked in %.3f s\n", rounds, rc, el);
        }
        for (int i = 0; i < n; i++) {
            lb_health_info h = health(b, (size_t)i);

            if (mode_at[i] == H_OK) {
                if (!h.healthy && unhealthy_ok++ < 5)
                    printf(
                        "# round %d (%.3f s): a healthy backend failed: %s\n",
                        rounds, el, errtext(h));
            } else
                wrong += h.healthy;
        }
        checks += hostile_per_round;
        rounds++;
        if (rounds == 1)
            fds_round1 = count_fds();
    }
    pr1 = atomic_load(&sh->requests[periodic_li]);
    CHECK_EQ(bad_rounds, 0);
    CHECK_EQ(unhealthy_ok, 0);
    CHECK_EQ(wrong, 0);
    /* the periodic balancer was served all along: about one check per
     * 20 ms over the whole run, at least a quarter of that counted */
    CHECK(pr1 - pr0 >= (long)((now_s() - t0) / 0.02 / 4));
    /* The periodic balancer may hold one connection in flight at either
     * count; the exact balance is checked once it is freed, below. */
    CHECK(abs(count_fds() - fds_round1) <= 1);
    printf("# %d hostile checks in %d rounds of %d backends (timeout %.2f s): "
           "%.1f s, slowest round %.3f s, periodic checks meanwhile %ld, "
           "fds after round 1 %d, at the end %d\n",
           checks, rounds, n, T, now_s() - t0, worst, pr1 - pr0, fds_round1,
           count_fds());
    lb_balancer_checks_stop(p);
    lb_balancer_free(p);
    lb_balancer_free(b);
    CHECK(WAIT_FOR(checker_threads() == 0, 5));
    lb_quiesce();
    CHECK_EQ(count_fds(), fds0);
    printf("# descriptors: %d at the start, %d at the end\n", fds0,
           count_fds());
}

int main(void)
{
    enum { PER_KIND = 25, OK_LISTENERS = 20 };
    int mass_li[MAX_LISTENERS], nmass = 0, mass_ok[OK_LISTENERS], periodic_li;
    int fds0;
    double t0 = now_s();

    signal(SIGPIPE, SIG_IGN);
    for (int m = 0; m < NMODES; m++)
        single_li[m] = add_listener("127.0.0.1", m);
    healthy_li = add_listener("127.0.0.2", H_OK);
    periodic_li = add_listener("127.0.0.3", H_OK);
    for (int k = 0; k < NEXPECT; k++) {
        if (expects[k].mode == H_DRIP_FAST)
            continue;
        for (int i = 0; i < PER_KIND; i++)
            mass_li[nmass++] = add_listener("127.0.0.1", expects[k].mode);
    }
    for (int i = 0; i < OK_LISTENERS; i++)
        mass_ok[i] = add_listener("127.0.0.2", H_OK);
    server_start();
    fds0 = count_fds();

    TEST(test_each());
    TEST(test_mass(fds0, mass_li, nmass, mass_ok, OK_LISTENERS, periodic_li));
    /* every check connection was closed by lb */
    CHECK(WAIT_FOR(atomic_load(&sh->open_conns) == 0, 5));
    server_stop();
    printf("# %.1f s\n", now_s() - t0);
    return tap_done("test_hostile");
}
