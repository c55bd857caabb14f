/*
 * checker_servers.h - what test_checker.c and test_checker_rounds.c share:
 * loopback test servers on threads (HTTP with a status, silent, slow, raw
 * bytes, endless chunks, a greeting; over TCP on 127.0.0.1 / ::1, a unix
 * socket, or TLS), and helpers that make balancers, set checks and run
 * rounds.  Everything is static inline: each test program takes what it
 * uses.
 */
#ifndef LB_TESTS_CHECKER_SERVERS_H
#define LB_TESTS_CHECKER_SERVERS_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

/* ---- helpers ---- */

/* ---- test servers ---- */

enum mode {
    M_HTTP,   /* answer `status`, keep-alive when `keepalive` */
    M_SILENT, /* accept, read, never answer */
    M_SLOW,   /* answer 200 after delay_ms */
    M_RAW,    /* send `raw` and close */
    M_CHUNKS, /* a chunked body that never ends */
    M_GREET,  /* send `raw` at once, before any request, and close */
};

#define MAX_CONNS 64

struct srv {
    int family;
    int lfd;
    int port;
    int stopfd;
    enum mode mode;
    _Atomic int status;
    bool keepalive;
    _Atomic int per_conn; /* M_HTTP: answer this many requests per connection,
                     then close on the next one unanswered (0: no limit) */
    int delay_ms;
    const char *raw;
    size_t raw_len;
    SSL_CTX *tls;
    _Atomic int conns;
    _Atomic int requests;
    pthread_mutex_t mu;
    char last_req[4096];
    pthread_t thr;
    int nconn;
    pthread_t cthr[MAX_CONNS];
    int cfd[MAX_CONNS];
    char path[108];
};

struct conn_arg {
    struct srv *s;
    int fd;
};

/* Wait until fd is ready for `ev` or the server stops; 1 ready, 0 not. */
static inline int srv_wait(struct srv *s, int fd, short ev, int ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = ev},
                          {.fd = s->stopfd, .events = POLLIN}};

    if (poll(p, 2, ms) <= 0)
        return 0;
    return !(p[1].revents & POLLIN) && p[0].revents;
}

static inline ssize_t srv_read(struct srv *s, int fd, SSL *ssl, char *buf,
                               size_t len)
{
    if (ssl)
        return SSL_read(ssl, buf, (int)len);
    if (!srv_wait(s, fd, POLLIN, 10000))
        return -1;
    return recv(fd, buf, len, 0);
}

static inline int srv_write(struct srv *s, int fd, SSL *ssl, const char *buf,
                            size_t len)
{
    while (len > 0) {
        ssize_t n;

        if (ssl) {
            n = SSL_write(ssl, buf, (int)len);
        } else {
            if (!srv_wait(s, fd, POLLOUT, 10000))
                return -1;
            n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n < 0 && errno == EAGAIN)
                continue;
        }
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static inline void *srv_conn(void *arg)
{
    struct conn_arg *ca = arg;
    struct srv *s = ca->s;
    int fd = ca->fd;
    SSL *ssl = NULL;
    char buf[8192];

    free(ca);
    if (s->mode == M_GREET) {
        srv_write(s, fd, NULL, s->raw, s->raw_len);
        goto out;
    }
    if (s->tls) {
        ssl = SSL_new(s->tls);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) != 1)
            goto out;
    }
    for (int answered = 0;; answered++) {
        size_t len = 0;
        char resp[256];
        int n;

        /* one request head */
        while (!memmem(buf, len, "\r\n\r\n", 4)) {
            ssize_t r;

            if (len == sizeof(buf))
                goto out;
            r = srv_read(s, fd, ssl, buf + len, sizeof(buf) - len);
            if (r <= 0)
                goto out;
            len += (size_t)r;
        }
        atomic_fetch_add(&s->requests, 1);
        pthread_mutex_lock(&s->mu);
        n = len < sizeof(s->last_req) - 1 ? (int)len
                                          : (int)sizeof(s->last_req) - 1;
        memcpy(s->last_req, buf, (size_t)n);
        s->last_req[n] = '\0';
        pthread_mutex_unlock(&s->mu);

        switch (s->mode) {
        case M_SILENT:
            while (srv_wait(s, fd, POLLIN, 10000) &&
                   recv(fd, buf, sizeof(buf), 0) > 0)
                ;
            goto out;
        case M_RAW:
        case M_GREET:
            srv_write(s, fd, ssl, s->raw, s->raw_len);
            goto out;
        case M_CHUNKS: {
            const char *h =
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if (srv_write(s, fd, ssl, h, strlen(h)) < 0)
                goto out;
            while (srv_write(s, fd, ssl, "1\r\nx\r\n", 6) == 0)
                ;
            goto out;
        }
        case M_SLOW:
            if (srv_wait(s, s->stopfd, POLLIN, s->delay_ms))
                goto out;
            /* fall through */
        case M_HTTP:
            if (atomic_load(&s->per_conn) &&
                answered == atomic_load(&s->per_conn))
                goto out;
            n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 %d Test\r\nContent-Length: 2\r\n%s\r\nok",
                         atomic_load(&s->status),
                         s->keepalive ? "" : "Connection: close\r\n");
            if (srv_write(s, fd, ssl, resp, (size_t)n) < 0 || !s->keepalive)
                goto out;
            break;
        }
    }
out:
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    shutdown(fd, SHUT_RDWR);
    return NULL;
}

static inline void *srv_accept(void *arg)
{
    struct srv *s = arg;

    while (srv_wait(s, s->lfd, POLLIN, -1)) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        struct conn_arg *ca;
        struct timeval tv = {.tv_sec = 10};

        if (fd < 0)
            continue;
        atomic_fetch_add(&s->conns, 1);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        pthread_mutex_lock(&s->mu);
        if (s->nconn == MAX_CONNS) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            continue;
        }
        ca = malloc(sizeof(*ca));
        ca->s = s;
        ca->fd = fd;
        s->cfd[s->nconn] = fd;
        pthread_create(&s->cthr[s->nconn], NULL, srv_conn, ca);
        s->nconn++;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static inline struct srv *srv_new(int family, enum mode mode)
{
    struct srv *s = calloc(1, sizeof(*s));
    struct sockaddr_storage ss = {0};
    socklen_t sl;

    s->family = family;
    s->mode = mode;
    s->status = 200;
    pthread_mutex_init(&s->mu, NULL);
    s->stopfd = eventfd(0, EFD_CLOEXEC);
    s->lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*in);
    } else if (family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_addr = in6addr_loopback;
        sl = sizeof(*in6);
    } else {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        char dir[64];
        un->sun_family = AF_UNIX;
        if (!test_mkdtemp(dir, sizeof(dir), "lbtest")) {
            perror("srv_new: mkdtemp");
            exit(2);
        }
        snprintf(s->path, sizeof(s->path), "%s/s", dir);
        strcpy(un->sun_path, s->path);
        sl = sizeof(*un);
    }
    if (bind(s->lfd, (struct sockaddr *)&ss, sl) < 0 ||
        listen(s->lfd, 128) < 0) {
        perror("srv_new");
        exit(2);
    }
    sl = sizeof(ss);
    getsockname(s->lfd, (struct sockaddr *)&ss, &sl);
    if (family == AF_INET)
        s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    else if (family == AF_INET6)
        s->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return s;
}

static inline void srv_run(struct srv *s)
{
    pthread_create(&s->thr, NULL, srv_accept, s);
}

static inline struct srv *srv_start(enum mode mode)
{
    struct srv *s = srv_new(AF_INET, mode);

    srv_run(s);
    return s;
}

/* Drop the server side of every connection (a server closing idle
 * keep-alive connections). */
static inline void srv_drop(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nconn; i++)
        shutdown(s->cfd[i], SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
}

static inline void srv_stop(struct srv *s)
{
    uint64_t one = 1;

    if (!s)
        return;
    if (write(s->stopfd, &one, sizeof(one)) < 0)
        perror("srv_stop");
    srv_drop(s);
    pthread_join(s->thr, NULL);
    for (int i = 0; i < s->nconn; i++) {
        pthread_join(s->cthr[i], NULL);
        close(s->cfd[i]);
    }
    close(s->lfd);
    close(s->stopfd);
    if (s->path[0]) {
        unlink(s->path);
        *strrchr(s->path, '/') = '\0';
        rmdir(s->path);
    }
    free(s);
}

static inline char *srv_last(struct srv *s, char *buf, size_t len)
{
    pthread_mutex_lock(&s->mu);
    snprintf(buf, len, "%s", s->last_req);
    pthread_mutex_unlock(&s->mu);
    return buf;
}

/* A port nothing listens on: bound, then closed. */
static inline int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    struct sockaddr_in in = {.sin_family = AF_INET};
    socklen_t sl = sizeof(in);

    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&in, sizeof(in));
    getsockname(fd, (struct sockaddr *)&in, &sl);
    port = ntohs(in.sin_port);
    close(fd);
    return port;
}

/* ---- balancers ---- */

/* A listener on 127.0.0.1 whose accept queue (backlog 0: one connection)
 * is full and never drained: the SYN of every further connection is
 * dropped, so a connect to it times out.  *filler is the connection that
 * fills it; the caller closes both. */
static inline int full_listener(int *port, int *filler)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET};
    socklen_t sl = sizeof(in);

    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&in, sizeof(in)) < 0 || listen(fd, 0) < 0) {
        perror("full_listener");
        exit(2);
    }
    getsockname(fd, (struct sockaddr *)&in, &sl);
    *port = ntohs(in.sin_port);
    *filler = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(*filler, (struct sockaddr *)&in, sizeof(in)) < 0) {
        perror("full_listener: connect");
        exit(2);
    }
    return fd;
}

/* n backends 127.0.0.1:port with weights 1..n (distinct identities on one
 * address). */
static inline void bal_weights(lb_balancer *b, int port, int n)
{
    lb_backend *be = calloc((size_t)n, sizeof(*be));
    char addr[32];

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (int i = 0; i < n; i++)
        be[i] = parse_backend(addr, (uint32_t)i + 1);
    publish_or_exit(b, be, (size_t)n);
    free(be);
}

static inline lb_balancer *bal_new(int start_unhealthy)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN,
                     .start_unhealthy = start_unhealthy};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);

    if (!b) {
        fprintf(stderr, "lb_balancer_new: %s\n", err);
        exit(2);
    }
    return b;
}

static inline void bal_set(lb_balancer *b, const char **addrs, int n)
{
    lb_backend be[32];
    const char *err = NULL;

    for (int i = 0; i < n; i++)
        if (lb_backend_parse(addrs[i], strlen(addrs[i]), 1, &be[i], &err)) {
            fprintf(stderr, "parse %s: %s\n", addrs[i], err);
            exit(2);
        }
    if (lb_balancer_update(b, be, (size_t)n, NULL, NULL, &err) < 0) {
        fprintf(stderr, "update: %s\n", err);
        exit(2);
    }
}

static inline lb_balancer *bal_one(const char *host, int port,
                                   int start_unhealthy)
{
    lb_balancer *b = bal_new(start_unhealthy);
    char addr[64];
    const char *a = addr;

    if (strchr(host, ':'))
        snprintf(addr, sizeof(addr), "[%s]:%d", host, port);
    else
        snprintf(addr, sizeof(addr), "%s:%d", host, port);
    bal_set(b, &a, 1);
    return b;
}

static inline int set_check(lb_balancer *b, const lb_check_config *c)
{
    const char *err = NULL;
    int rc = lb_balancer_set_check(b, c, &err);

    if (rc != LB_OK)
        fprintf(stderr, "set_check: %s\n", err);
    return rc;
}

static inline int round_(lb_balancer *b, int parallel)
{
    const char *err = NULL;

    return lb_balancer_check_round(b, parallel, &err);
}

static inline lb_health_info health(lb_balancer *b, size_t i)
{
    lb_health_info h;

    memset(&h, 0, sizeof(h));
    lb_balancer_health(b, i, &h);
    return h;
}

static inline int drain(lb_balancer *b, lb_health_event *ev, int max)
{
    return lb_balancer_events(b, ev, max);
}

static inline const char *errtext(lb_health_info h)
{
    static char buf[256];

    lb_check_error_text(h.err_kind, h.err_detail, buf, sizeof(buf));
    return buf;
}

static inline lb_check_config tcp_cfg(double timeout)
{
    lb_check_config c = {.kind = LB_CHECK_TCP, .timeout = timeout};
    return c;
}

static inline lb_check_config http_cfg(double timeout)
{
    lb_check_config c = {.kind = LB_CHECK_HTTP, .timeout = timeout};
    return c;
}

/* One HTTP round against a server answering `raw`; returns the health. */
static inline lb_health_info http_raw(const char *raw, size_t len,
                                      double timeout, double *elapsed)
{
    struct srv *s = srv_new(AF_INET, M_RAW);
    lb_balancer *b;
    lb_check_config c = http_cfg(timeout);
    lb_health_info h;
    double t0;

    s->raw = raw;
    s->raw_len = len;
    srv_run(s);
    b = bal_one("127.0.0.1", s->port, 0);
    set_check(b, &c);
    t0 = now_s();
    round_(b, 0);
    if (elapsed)
        *elapsed = now_s() - t0;
    h = health(b, 0);
    lb_balancer_free(b);
    srv_stop(s);
    return h;
}

#endif
