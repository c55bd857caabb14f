/*
 * test_checker.c - the background health checker against real loopback
 * servers run by this test (threads on 127.0.0.1 / ::1 / a unix socket
 * under a temp directory): TCP, HTTP, TLS, thresholds, parallel timing,
 * events, fork, and that descriptors and the thread go away afterwards.
 */
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
static int srv_wait(struct srv *s, int fd, short ev, int ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = ev},
                          {.fd = s->stopfd, .events = POLLIN}};

    if (poll(p, 2, ms) <= 0)
        return 0;
    return !(p[1].revents & POLLIN) && p[0].revents;
}

static ssize_t srv_read(struct srv *s, int fd, SSL *ssl, char *buf, size_t len)
{
    if (ssl)
        return SSL_read(ssl, buf, (int)len);
    if (!srv_wait(s, fd, POLLIN, 10000))
        return -1;
    return recv(fd, buf, len, 0);
}

static int srv_write(struct srv *s, int fd, SSL *ssl, const char *buf,
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

static void *srv_conn(void *arg)
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

static void *srv_accept(void *arg)
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

static struct srv *srv_new(int family, enum mode mode)
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

static void srv_run(struct srv *s)
{
    pthread_create(&s->thr, NULL, srv_accept, s);
}

static struct srv *srv_start(enum mode mode)
{
    struct srv *s = srv_new(AF_INET, mode);

    srv_run(s);
    return s;
}

/* Drop the server side of every connection (a server closing idle
 * keep-alive connections). */
static void srv_drop(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nconn; i++)
        shutdown(s->cfd[i], SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
}

static void srv_stop(struct srv *s)
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

static char *srv_last(struct srv *s, char *buf, size_t len)
{
    pthread_mutex_lock(&s->mu);
    snprintf(buf, len, "%s", s->last_req);
    pthread_mutex_unlock(&s->mu);
    return buf;
}

/* A port nothing listens on: bound, then closed. */
static int closed_port(void)
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
static int full_listener(int *port, int *filler)
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
static void bal_weights(lb_balancer *b, int port, int n)
{
    lb_backend *be = calloc((size_t)n, sizeof(*be));
    char addr[32];

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    for (int i = 0; i < n; i++)
        be[i] = parse_backend(addr, (uint32_t)i + 1);
    publish_or_exit(b, be, (size_t)n);
    free(be);
}

static lb_balancer *bal_new(int start_unhealthy)
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

static void bal_set(lb_balancer *b, const char **addrs, int n)
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

static lb_balancer *bal_one(const char *host, int port, int start_unhealthy)
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

static int set_check(lb_balancer *b, const lb_check_config *c)
{
    const char *err = NULL;
    int rc = lb_balancer_set_check(b, c, &err);

    if (rc != LB_OK)
        fprintf(stderr, "set_check: %s\n", err);
    return rc;
}

static int round_(lb_balancer *b, int parallel)
{
    const char *err = NULL;

    return lb_balancer_check_round(b, parallel, &err);
}

static lb_health_info health(lb_balancer *b, size_t i)
{
    lb_health_info h;

    memset(&h, 0, sizeof(h));
    lb_balancer_health(b, i, &h);
    return h;
}

static int drain(lb_balancer *b, lb_health_event *ev, int max)
{
    return lb_balancer_events(b, ev, max);
}

static const char *errtext(lb_health_info h)
{
    static char buf[256];

    lb_check_error_text(h.err_kind, h.err_detail, buf, sizeof(buf));
    return buf;
}

static lb_check_config tcp_cfg(double timeout)
{
    lb_check_config c = {.kind = LB_CHECK_TCP, .timeout = timeout};
    return c;
}

static lb_check_config http_cfg(double timeout)
{
    lb_check_config c = {.kind = LB_CHECK_HTTP, .timeout = timeout};
    return c;
}

/* One HTTP round against a server answering `raw`; returns the health. */
static lb_health_info http_raw(const char *raw, size_t len, double timeout,
                               double *elapsed)
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

/* ---- tests ---- */

static void test_tcp(void)
{
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *b = bal_one("127.0.0.1", s->port, 1);
    lb_check_config c = tcp_cfg(1);
    lb_health_event ev[8];
    lb_health_info h;

    CHECK_EQ(lb_balancer_check_round(b, 0, &(const char *){0}), LB_DECLINED);
    CHECK_EQ(set_check(b, &c), LB_OK);
    CHECK_EQ(health(b, 0).healthy, 0);
    CHECK_EQ(round_(b, 0), 1);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 1);
    CHECK_EQ(h.err_kind, 0);
    CHECK_EQ(drain(b, ev, 8), 1);
    CHECK_EQ(ev[0].id, h.id);
    CHECK_EQ(ev[0].healthy, 1);
    CHECK_EQ(drain(b, ev, 8), 0);
    lb_balancer_free(b);

    /* refused */
    b = bal_one("127.0.0.1", closed_port(), 0);
    set_check(b, &c);
    CHECK_EQ(round_(b, 1), 1);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_CONNECT);
    CHECK_EQ(h.err_detail, ECONNREFUSED);
    CHECK(strcmp(errtext(h), "connect: Connection refused") == 0);
    CHECK_EQ(drain(b, ev, 8), 1);
    CHECK_EQ(ev[0].healthy, 0);
    CHECK_EQ(ev[0].err_kind, LB_CHECK_ERR_CONNECT);
    lb_balancer_free(b);

    /* port override: the backend's own port is closed */
    b = bal_one("127.0.0.1", closed_port(), 1);
    c.port = (uint16_t)s->port;
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    lb_balancer_free(b);
    srv_stop(s);

    /* IPv6 and a unix socket */
    s = srv_new(AF_INET6, M_HTTP);
    srv_run(s);
    b = bal_one("::1", s->port, 1);
    c = tcp_cfg(1);
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    lb_balancer_free(b);
    srv_stop(s);

    s = srv_new(AF_UNIX, M_HTTP);
    srv_run(s);
    {
        char addr[160];
        const char *a = addr;

        snprintf(addr, sizeof(addr), "unix:%s", s->path);
        b = bal_new(1);
        bal_set(b, &a, 1);
    }
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    lb_balancer_free(b);
    srv_stop(s);
}

/* A listener whose accept queue is full: further SYNs are dropped, so a
 * connect neither succeeds nor fails until the timeout. */
static void test_tcp_timeout(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in in = {.sin_family = AF_INET};
    socklen_t sl = sizeof(in);
    int fill[16], nfill = 0, full = 0;
    lb_balancer *b;
    lb_check_config c = tcp_cfg(0.3);
    lb_health_info h;
    double t0, el;

    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(lfd, (struct sockaddr *)&in, sizeof(in));
    listen(lfd, 0);
    getsockname(lfd, (struct sockaddr *)&in, &sl);
    while (nfill < 16 && !full) {
        struct pollfd p;

        fill[nfill] =
            socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fill[nfill], (struct sockaddr *)&in, sizeof(in));
        p.fd = fill[nfill];
        p.events = POLLOUT;
        full = poll(&p, 1, 300) == 0;
        nfill++;
    }
    CHECK(full);
    b = bal_one("127.0.0.1", ntohs(in.sin_port), 0);
    set_check(b, &c);
    t0 = now_s();
    round_(b, 0);
    el = now_s() - t0;
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_TIMEOUT);
    CHECK_EQ(h.err_detail, LB_CHECK_PHASE_CONNECT);
    CHECK(strcmp(errtext(h), "timeout: connect") == 0);
    CHECK(el >= 0.29 && el < 1.5);
    lb_balancer_free(b);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
}

static void test_http_status(void)
{
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *b = bal_one("127.0.0.1", s->port, 1);
    lb_check_config c = http_cfg(1);
    uint16_t exp[] = {200, 503};
    char req[4096], want[128];
    lb_health_info h;

    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    /* the defaults: GET /, Host is the address checked, Connection: close */
    srv_last(s, req, sizeof(req));
    snprintf(want, sizeof(want), "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n",
             s->port);
    CHECK(strncmp(req, want, strlen(want)) == 0);
    CHECK(strstr(req, "\r\nConnection: close\r\n") != NULL);

    atomic_store(&s->status, 503);
    round_(b, 0);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_HTTP_STATUS);
    CHECK_EQ(h.err_detail, 503);
    CHECK(strcmp(errtext(h), "unexpected status 503") == 0);

    c.expected_status = exp;
    c.nexpected = 2;
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    atomic_store(&s->status, 204);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 0);
    CHECK_EQ(health(b, 0).err_detail, 204);
    {
        /* HTTP status codes are 100 to 599 (RFC 9110, section 15) */
        uint16_t bad[] = {200, 600};
        const char *err = NULL;

        c.expected_status = bad;
        CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
        CHECK(err != NULL && strstr(err, "100-599") != NULL);
    }
    lb_balancer_free(b);
    srv_stop(s);
}

static void test_http_request(void)
{
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *b = bal_one("127.0.0.1", closed_port(), 1);
    lb_check_config c = http_cfg(1);
    lb_check_header hd[] = {{"X-Check", 7, "yes", 3},
                            {"User-Agent", 10, "probe/1", 7}};
    lb_check_header bad[] = {{"X-Bad", 5, "a\r\nInjected: 1", 14}};
    lb_check_header badname[] = {{"X Bad", 5, "a", 1}};
    const char *err = NULL;
    char req[4096];

    c.method = "HEAD";
    c.method_len = 4;
    c.path = "/healthz?full=1";
    c.path_len = strlen(c.path);
    c.host = "api.example.test";
    c.host_len = strlen(c.host);
    c.headers = hd;
    c.nheaders = 2;
    c.port = (uint16_t)s->port;
    CHECK_EQ(set_check(b, &c), LB_OK);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    srv_last(s, req, sizeof(req));
    CHECK(strncmp(req,
                  "HEAD /healthz?full=1 HTTP/1.1\r\n"
                  "Host: api.example.test\r\n",
                  55) == 0);
    CHECK(strstr(req, "\r\nX-Check: yes\r\n") != NULL);
    CHECK(strstr(req, "\r\nUser-Agent: probe/1\r\n") != NULL);
    CHECK(strstr(req, "lb/") == NULL);

    /* configurations that would inject into the request are refused, and
     * the previous one stays */
    c.headers = bad;
    c.nheaders = 1;
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    c.headers = badname;
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    c.nheaders = 0;
    c.path = "/a b";
    c.path_len = 4;
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    c.path = "/";
    c.path_len = 1;
    c.method = "GE\nT";
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    c.method = NULL;
    c.tls = 1;
    c.tls_verify = 1;
    c.tls_ca = "/nonexistent/ca.pem";
    c.tls_ca_len = strlen(c.tls_ca);
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    CHECK(err && strstr(err, "CA") != NULL);
    c = tcp_cfg(-1);
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    c.kind = 7;
    c.timeout = 1;
    CHECK_EQ(lb_balancer_set_check(b, &c, &err), LB_ERROR);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    CHECK_EQ(atomic_load(&s->requests), 2);

    /* removing the check */
    CHECK_EQ(lb_balancer_set_check(b, NULL, &err), LB_OK);
    CHECK_EQ(round_(b, 0), LB_DECLINED);
    lb_balancer_free(b);
    srv_stop(s);
}

static void test_reuse(void)
{
    struct srv *s = srv_new(AF_INET, M_HTTP);
    lb_balancer *b;
    lb_check_config c = http_cfg(1);

    s->keepalive = true;
    srv_run(s);
    b = bal_one("127.0.0.1", s->port, 1);
    c.reuse_connection = 1;
    set_check(b, &c);
    for (int i = 0; i < 3; i++)
        round_(b, i & 1);
    CHECK_EQ(health(b, 0).healthy, 1);
    CHECK_EQ(atomic_load(&s->requests), 3);
    CHECK_EQ(atomic_load(&s->conns), 1);

    /* the server closes its idle connections: the next round reconnects */
    srv_drop(s);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    CHECK_EQ(atomic_load(&s->requests), 4);
    CHECK_EQ(atomic_load(&s->conns), 2);

    /* the server takes the next request on the kept connection and closes
     * it unanswered: the check retries on a fresh connection, and that
     * one is watched (it usually gets the closed one's descriptor) */
    s->per_conn = 1;
    srv_drop(s);
    round_(b, 0);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    CHECK_EQ(health(b, 0).err_kind, 0);
    CHECK_EQ(atomic_load(&s->requests), 7);
    CHECK_EQ(atomic_load(&s->conns), 4);
    s->per_conn = 0;

    /* without reuse_connection: one connection per round */
    c.reuse_connection = 0;
    set_check(b, &c);
    round_(b, 0);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    CHECK_EQ(atomic_load(&s->conns), 6);
    lb_balancer_free(b);
    srv_stop(s);

    /* a server that says Connection: close is not reused */
    s = srv_start(M_HTTP);
    b = bal_one("127.0.0.1", s->port, 1);
    c.reuse_connection = 1;
    set_check(b, &c);
    round_(b, 0);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    CHECK_EQ(atomic_load(&s->conns), 2);
    lb_balancer_free(b);
    srv_stop(s);
}

/*
 * reuse_connection does not hide a dead listener: with the unix socket's
 * path deleted, every new connection fails while the kept one still
 * answers; a fresh connection at least every second (and every third
 * round) finds it within a few seconds.
 */
static void test_reuse_dead_listener(void)
{
    struct srv *s = srv_new(AF_UNIX, M_HTTP);
    lb_balancer *b = bal_new(0);
    lb_check_config c = http_cfg(1);
    char addr[128];
    const char *a = addr, *err = NULL;
    double t0, el;
    int req, conns;

    s->keepalive = true;
    srv_run(s);
    snprintf(addr, sizeof(addr), "unix:%s", s->path);
    bal_set(b, &a, 1);
    c.reuse_connection = 1;
    set_check(b, &c);
    CHECK_EQ(lb_balancer_checks_start(b, 0.05, 0, &err), LB_OK);
    /* reuse still works: ~20 checks a second on ~1 connection a second */
    CHECK(WAIT_FOR(atomic_load(&s->requests) >= 40, 10));
    req = atomic_load(&s->requests);
    conns = atomic_load(&s->conns);
    printf("# reuse at 0.05 s: %d checks on %d connections\n", req, conns);
    CHECK(conns >= 2 && conns * 5 <= req);
    unlink(s->path);
    t0 = now_s();
    CHECK(WAIT_FOR(!health(b, 0).healthy, 5));
    el = now_s() - t0;
    printf("# deleted unix socket found down after %.2f s (%s)\n", el,
           errtext(health(b, 0)));
    CHECK_EQ(health(b, 0).err_kind, LB_CHECK_ERR_CONNECT);
    CHECK_EQ(health(b, 0).err_detail, ENOENT);
    lb_balancer_free(b);
    srv_stop(s);
}

static void test_bad_responses(void)
{
    static const char garbage[] = "garbage\r\n\r\n";
    static const char trunc_body[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    static const char trunc_head[] = "HTTP/1.1 200 OK\r\nContent-";
    static const char chunked[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n";
    static const char bad_chunk[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    static const char two_lengths[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok";
    static const char until_close[] = "HTTP/1.0 200 OK\r\n\r\nbody";
    static const char http2[] = "HTTP/2 200\r\n\r\n";
    size_t big_len = 1024 * 1024 + 64;
    char *big = malloc(big_len);
    lb_health_info h;
    double el;

    h = http_raw(garbage, sizeof(garbage) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_HTTP_MALFORMED);
    CHECK_EQ(h.err_detail, LB_HTTP_BAD_STATUS_LINE);
    CHECK(strcmp(errtext(h), "malformed response: bad status line") == 0);

    h = http_raw(trunc_body, sizeof(trunc_body) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_CLOSED);

    h = http_raw(trunc_head, sizeof(trunc_head) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_CLOSED);
    CHECK_EQ(h.err_detail, LB_CHECK_PHASE_RESPONSE);

    h = http_raw(chunked, sizeof(chunked) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 1);

    h = http_raw(bad_chunk, sizeof(bad_chunk) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_detail, LB_HTTP_BAD_CHUNK);

    h = http_raw(two_lengths, sizeof(two_lengths) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_detail, LB_HTTP_BAD_LENGTH);

    h = http_raw(until_close, sizeof(until_close) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 1);

    h = http_raw(http2, sizeof(http2) - 1, 1, NULL);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_detail, LB_HTTP_BAD_VERSION);

    /* 1 MiB of headers: refused after LB_HTTP_MAX_HEADER bytes */
    memset(big, 'a', big_len);
    memcpy(big, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    h = http_raw(big, big_len, 2, &el);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_HTTP_MALFORMED);
    CHECK_EQ(h.err_detail, LB_HTTP_HEADER_TOO_LARGE);
    CHECK(el < 1.5);
    free(big);

    /* a chunked body that never ends fails within the timeout */
    {
        struct srv *s = srv_start(M_CHUNKS);
        lb_balancer *b = bal_one("127.0.0.1", s->port, 0);
        lb_check_config c = http_cfg(0.5);
        double t0 = now_s();

        set_check(b, &c);
        round_(b, 0);
        el = now_s() - t0;
        h = health(b, 0);
        CHECK_EQ(h.healthy, 0);
        CHECK(h.err_kind == LB_CHECK_ERR_TIMEOUT ||
              h.err_kind == LB_CHECK_ERR_HTTP_MALFORMED);
        CHECK(el < 1.5);
        lb_balancer_free(b);
        srv_stop(s);
    }
}

static void test_slow_and_silent(void)
{
    struct srv *slow = srv_new(AF_INET, M_SLOW);
    struct srv *silent = srv_start(M_SILENT);
    lb_check_config c = http_cfg(1);
    lb_balancer *b;
    lb_health_info h;
    double t0, el;

    slow->delay_ms = 200;
    srv_run(slow);
    b = bal_one("127.0.0.1", slow->port, 1);
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    lb_balancer_free(b);

    b = bal_one("127.0.0.1", silent->port, 0);
    c.timeout = 0.3;
    set_check(b, &c);
    t0 = now_s();
    round_(b, 0);
    el = now_s() - t0;
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_TIMEOUT);
    CHECK_EQ(h.err_detail, LB_CHECK_PHASE_RESPONSE);
    CHECK(strcmp(errtext(h), "timeout: response") == 0);
    CHECK(el >= 0.29 && el < 1.5);
    lb_balancer_free(b);
    srv_stop(slow);
    srv_stop(silent);
}

/* Pingora's observe_health: an opposite result counts up and flips at the
 * threshold; an equal result resets the count.  One event per flip. */
static void test_thresholds(void)
{
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *b = bal_one("127.0.0.1", s->port, 0);
    lb_check_config c = http_cfg(1);
    lb_health_event ev[8];
    static const struct {
        int status, healthy, count, events;
    } steps[] = {
        {503, 1, 1, 0}, {200, 1, 0, 0}, {503, 1, 1, 0}, {503, 0, 0, 1},
        {200, 0, 1, 0}, {200, 0, 2, 0}, {503, 0, 0, 0}, {200, 0, 1, 0},
        {200, 0, 2, 0}, {200, 1, 0, 1}, {200, 1, 0, 0},
    };

    c.consecutive_failure = 2;
    c.consecutive_success = 3;
    set_check(b, &c);
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        lb_health_info h;
        int n;

        atomic_store(&s->status, steps[i].status);
        round_(b, 0);
        h = health(b, 0);
        n = drain(b, ev, 8);
        CHECK_EQ(h.healthy, steps[i].healthy);
        CHECK_EQ(h.consecutive, steps[i].count);
        CHECK_EQ(n, steps[i].events);
        if (n == 1) {
            CHECK_EQ(ev[0].healthy, steps[i].healthy);
            CHECK_EQ(ev[0].id, h.id);
            CHECK_EQ(ev[0].err_kind,
                     steps[i].healthy ? 0 : LB_CHECK_ERR_HTTP_STATUS);
        }
    }
    lb_balancer_free(b);
    srv_stop(s);
}

static void test_parallel(void)
{
    enum { N = 20 };
    struct srv *s[N];
    char addrs[N][32];
    const char *ap[N];
    lb_balancer *b = bal_new(0);
    lb_check_config c = http_cfg(0.4);
    double t0, el;
    int down = 0;

    for (int i = 0; i < N; i++) {
        s[i] = srv_start(M_SILENT);
        snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%d", s[i]->port);
        ap[i] = addrs[i];
    }
    bal_set(b, ap, N);
    set_check(b, &c);
    t0 = now_s();
    CHECK_EQ(round_(b, 1), N);
    el = now_s() - t0;
    for (int i = 0; i < N; i++)
        down += !health(b, (size_t)i).healthy;
    CHECK_EQ(down, N);
    CHECK(el >= 0.39 && el < 3 * 0.4);
    printf("# parallel: %d silent backends, timeout 0.4 s: %.3f s\n", N, el);

    /* sequential: one at a time, so three of them take three timeouts */
    bal_set(b, ap, 3);
    t0 = now_s();
    CHECK_EQ(round_(b, 0), 3);
    el = now_s() - t0;
    CHECK(el >= 3 * 0.39 && el < 3 * 0.4 + 1);
    lb_balancer_free(b);
    for (int i = 0; i < N; i++)
        srv_stop(s[i]);
}

static void test_periodic(void)
{
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *b = bal_one("127.0.0.1", s->port, 1);
    lb_check_config c = http_cfg(1);
    lb_health_event ev[8];
    const char *err = NULL;
    int n = 0, req;

    CHECK_EQ(lb_balancer_checks_start(b, 0.02, 0, &err), LB_DECLINED);
    set_check(b, &c);
    CHECK_EQ(lb_balancer_checks_start(b, 0, 0, &err), LB_ERROR);
    CHECK_EQ(lb_balancer_checks_start(b, 0.02, 0, &err), LB_OK);
    CHECK(WAIT_FOR((n += drain(b, ev + n, 8 - n)) >= 1, 5));
    CHECK_EQ(ev[0].healthy, 1);
    CHECK_EQ(checker_threads(), 1);
    atomic_store(&s->status, 500);
    n = 0;
    CHECK(WAIT_FOR((n += drain(b, ev + n, 8 - n)) >= 1, 5));
    CHECK_EQ(ev[0].healthy, 0);
    CHECK(WAIT_FOR(atomic_load(&s->requests) >= 5, 5));
    /* a round now, while periodic rounds run */
    atomic_store(&s->status, 200);
    CHECK_EQ(round_(b, 1), 1);
    CHECK_EQ(health(b, 0).healthy, 1);
    lb_balancer_checks_stop(b);
    /* stopped: the thread is joined and no round runs any more */
    CHECK(WAIT_FOR(checker_threads() == 0, 2));
    /* (a flip made now stays: nothing observes the record any more; the
     * wait is longer than ten periods; the observation's own flip is the
     * one event on the balancer's queue) */
    drain(b, ev, 8);
    lb_balancer_observe(b, lb_balancer_generation(b), 0, 0, 1,
                        LB_CHECK_ERR_CUSTOM, 0);
    usleep(200000);
    CHECK_EQ(health(b, 0).healthy, 0);
    CHECK_EQ(health(b, 0).err_kind, LB_CHECK_ERR_CUSTOM);
    CHECK_EQ(drain(b, ev, 8), 1);
    CHECK_EQ(ev[0].healthy, 0);
    CHECK_EQ(ev[0].err_kind, LB_CHECK_ERR_CUSTOM);
    CHECK_EQ(drain(b, ev, 8), 0);
    lb_balancer_checks_stop(b);
    req = atomic_load(&s->requests);

    /* an hour's period, then a shorter one: the next round is due one new
     * period after the last began, not an hour later */
    CHECK_EQ(lb_balancer_checks_start(b, 3600, 0, &err), LB_OK);
    CHECK(WAIT_FOR(atomic_load(&s->requests) >= req + 1, 5));
    CHECK_EQ(lb_balancer_checks_start(b, 0.01, 0, &err), LB_OK);
    CHECK(WAIT_FOR(atomic_load(&s->requests) >= req + 4, 5));
    lb_balancer_checks_stop(b);
    req = atomic_load(&s->requests);

    /* freed while running */
    CHECK_EQ(lb_balancer_checks_start(b, 0.01, 1, &err), LB_OK);
    CHECK(WAIT_FOR(atomic_load(&s->requests) >= req + 3, 5));
    lb_balancer_free(b);
    CHECK(WAIT_FOR(checker_threads() == 0, 2));
    srv_stop(s);
}

static void make_cert(const char *dir)
{
    char cmd[1024];

    snprintf(
        cmd, sizeof(cmd),
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
        "-nodes -keyout %s/key.pem -out %s/cert.pem -days 2 "
        "-subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null",
        dir, dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "openssl req failed\n");
        exit(2);
    }
}

static void test_tls(void)
{
    char dir[200], path[256], cmd[300];
    struct srv *s, *plain;
    SSL_CTX *ctx;
    lb_balancer *b;
    lb_check_config c = http_cfg(2);
    lb_health_info h;

    if (!test_mkdtemp(dir, sizeof(dir), "lbtls")) {
        perror("mkdtemp");
        exit(2);
    }
    make_cert(dir);
    ctx = SSL_CTX_new(TLS_server_method());
    snprintf(path, sizeof(path), "%s/cert.pem", dir);
    CHECK_EQ(SSL_CTX_use_certificate_file(ctx, path, SSL_FILETYPE_PEM), 1);
    snprintf(path, sizeof(path), "%s/key.pem", dir);
    CHECK_EQ(SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM), 1);
    snprintf(path, sizeof(path), "%s/cert.pem", dir);
    s = srv_new(AF_INET, M_HTTP);
    s->tls = ctx;
    s->keepalive = true;
    srv_run(s);
    b = bal_one("127.0.0.1", s->port, 1);

    /* HTTPS without verification */
    c.tls = 1;
    CHECK_EQ(set_check(b, &c), LB_OK);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);

    /* verified with the CA, by SNI name and by IP address */
    c.tls_verify = 1;
    c.tls_ca = path;
    c.tls_ca_len = strlen(path);
    c.tls_sni = "localhost";
    c.tls_sni_len = 9;
    CHECK_EQ(set_check(b, &c), LB_OK);
    round_(b, 0);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 1);
    c.tls_sni = NULL;
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);

    /* a name the certificate does not have */
    c.tls_sni = "other.test";
    c.tls_sni_len = 10;
    set_check(b, &c);
    round_(b, 0);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_TLS_VERIFY);

    /* verification without our CA: self-signed is refused */
    c.tls_sni = "localhost";
    c.tls_sni_len = 9;
    c.tls_ca = NULL;
    set_check(b, &c);
    round_(b, 0);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_TLS_VERIFY);
    CHECK(strncmp(errtext(h), "TLS verify: ", 12) == 0);

    /* TCP + TLS, with reuse over TLS */
    c = tcp_cfg(2);
    c.tls = 1;
    c.tls_verify = 1;
    c.tls_ca = path;
    c.tls_ca_len = strlen(path);
    set_check(b, &c);
    round_(b, 0);
    CHECK_EQ(health(b, 0).healthy, 1);
    c = http_cfg(2);
    c.tls = 1;
    c.reuse_connection = 1;
    set_check(b, &c);
    {
        int conns = atomic_load(&s->conns);

        round_(b, 0);
        round_(b, 1);
        CHECK_EQ(health(b, 0).healthy, 1);
        CHECK_EQ(atomic_load(&s->conns), conns + 1);
    }
    lb_balancer_free(b);

    /* TLS to a plain HTTP server fails the handshake */
    plain = srv_new(AF_INET, M_GREET);
    plain->raw = "HTTP/1.1 400 Bad Request\r\n\r\n";
    plain->raw_len = strlen(plain->raw);
    srv_run(plain);
    b = bal_one("127.0.0.1", plain->port, 0);
    c.reuse_connection = 0;
    set_check(b, &c);
    round_(b, 0);
    h = health(b, 0);
    CHECK_EQ(h.healthy, 0);
    CHECK_EQ(h.err_kind, LB_CHECK_ERR_TLS_HANDSHAKE);
    printf("# TLS to plain HTTP: %s\n", errtext(h));
    lb_balancer_free(b);
    srv_stop(plain);
    srv_stop(s);
    SSL_CTX_free(ctx);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
}

/* A balancer made before fork() is used and checked in both processes; in
 * the child the periodic checks it had keep running on a new thread. */
static __attribute__((unused)) void test_fork(void)
{
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *b = bal_one("127.0.0.1", s->port, 0);
    lb_check_config c = http_cfg(1);
    lb_health_event ev[8];
    const char *err = NULL;
    int status = -1;
    pid_t pid;

    set_check(b, &c);
    CHECK_EQ(lb_balancer_checks_start(b, 0.02, 1, &err), LB_OK);
    CHECK(WAIT_FOR(atomic_load(&s->requests) >= 2, 5));
    pid = fork();
    if (pid == 0) {
        lb_iter *it = lb_iter_new();
        int n = 0, ok = 1;
        uint64_t gen = lb_balancer_generation(b);

        alarm(20);
        drain(b, ev, 8);
        /* force a flip, then the child's checker must flip it back */
        lb_balancer_observe(b, gen, 0, 0, 1, LB_CHECK_ERR_CUSTOM, 0);
        ok &= lb_balancer_select(b, "", 0, 8, it) == LB_DECLINED;
        /* the forced flip is queued first, then the checker's flip back */
        ok &= WAIT_FOR((n += drain(b, ev + n, 8 - n)) >= 2, 5);
        ok &= n >= 2 && ev[0].healthy == 0 && ev[1].healthy == 1;
        ok &= lb_balancer_select(b, "", 0, 8, it) == 0;
        ok &= round_(b, 0) == 1;
        ok &= health(b, 0).healthy == 1;
        lb_balancer_free(b);
        lb_iter_free(it);
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0);
    if (pid > 0) {
        wait_child(pid, 20, &status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* the parent's checker went on */
    {
        int req = atomic_load(&s->requests);

        CHECK(WAIT_FOR(atomic_load(&s->requests) >= req + 3, 5));
        CHECK_EQ(round_(b, 0), 1);
        CHECK_EQ(health(b, 0).healthy, 1);
    }
    lb_balancer_free(b);
    srv_stop(s);
}

/* lb_balancer_check_round runs its own round at once, beside a periodic
 * round in flight: a sequential periodic round over 8 backends that time
 * out takes 8 s, the parallel round asked for meanwhile about 1 s. */
static void test_round_beside_periodic(void)
{
    enum { N = 8 };
    int port, filler, lfd = full_listener(&port, &filler);
    lb_balancer *b = bal_new(0);
    lb_check_config c = tcp_cfg(1);
    const char *err = NULL;
    double t0, el;

    bal_weights(b, port, N);
    set_check(b, &c);
    CHECK_EQ(lb_balancer_checks_start(b, 60, 0, &err), LB_OK);
    /* the periodic round is in flight once its first probe timed out */
    CHECK(WAIT_FOR(!health(b, 0).healthy, 5));
    CHECK_EQ(health(b, 0).err_kind, LB_CHECK_ERR_TIMEOUT);
    t0 = now_s();
    CHECK_EQ(round_(b, 1), N);
    el = now_s() - t0;
    printf("# check_round beside a periodic round of %d timeouts: %.2f s\n", N,
           el);
    CHECK(el < 3);
    for (int i = 0; i < N; i++)
        CHECK_EQ(health(b, (size_t)i).healthy, 0);
    lb_balancer_free(b);
    close(filler);
    close(lfd);
}

/*
 * One broken balancer does not starve another's checks: beside a balancer
 * whose 300 backends all time out (more than the cap of probes in flight,
 * here 128 from a soft descriptor limit of 256), a balancer checked every
 * 0.1 s gets at least 90% of its rounds.
 */
static void test_fair_share(void)
{
    enum { BROKEN = 300 };
    int port, filler, lfd = full_listener(&port, &filler);
    struct srv *s = srv_start(M_HTTP);
    lb_balancer *broken = bal_new(0), *ok;
    lb_check_config c = tcp_cfg(1);
    const char *err = NULL;
    struct rlimit rl, low;
    double t0, el, share;
    int c0, got;

    CHECK_EQ(checker_threads(), 0);
    getrlimit(RLIMIT_NOFILE, &rl);
    low = rl;
    low.rlim_cur = 256;
    setrlimit(RLIMIT_NOFILE, &low);
    bal_weights(broken, port, BROKEN);
    set_check(broken, &c);
    CHECK_EQ(lb_balancer_checks_start(broken, 0.1, 1, &err), LB_OK);
    /* the cap is taken when the thread starts: the host's limit is back */
    setrlimit(RLIMIT_NOFILE, &rl);
    CHECK(WAIT_FOR(!health(broken, 0).healthy, 5));
    ok = bal_one("127.0.0.1", s->port, 0);
    set_check(ok, &c);
    c0 = atomic_load(&s->conns);
    t0 = now_s();
    CHECK_EQ(lb_balancer_checks_start(ok, 0.1, 0, &err), LB_OK);
    WAIT_FOR(atomic_load(&s->conns) - c0 >= 45, 6);
    el = now_s() - t0;
    got = atomic_load(&s->conns) - c0;
    share = got / (el / 0.1 + 1);
    printf("# beside %d timeouts: %d checks in %.2f s (%.0f%% of rounds)\n",
           BROKEN, got, el, 100 * share);
    CHECK(share >= 0.9);
    CHECK_EQ(health(ok, 0).healthy, 1);
    lb_balancer_free(ok);
    lb_balancer_free(broken);
    srv_stop(s);
    close(filler);
    close(lfd);
}

static lb_check_stats stats(lb_balancer *b)
{
    lb_check_stats st;

    lb_balancer_check_stats(b, &st);
    return st;
}

/*
 * Out of descriptors, a check cannot even start: that is no verdict on the
 * backend.  In a forked child (so this process keeps its limit), with the
 * soft RLIMIT_NOFILE lowered to the lowest free descriptor, a healthy
 * backend stays healthy and the skipped count rises; with the limit back,
 * checks pass again.
 */
static __attribute__((unused)) void test_out_of_descriptors(void)
{
    int status = -1;
    pid_t pid = fork();

    if (pid == 0) {
        struct srv *s = srv_start(M_HTTP);
        lb_balancer *b = bal_one("127.0.0.1", s->port, 0);
        lb_check_config c = tcp_cfg(1);
        const char *err = NULL;
        struct rlimit rl, low;
        lb_check_stats st0;
        int fd, bad = 0;

        alarm(30);
        set_check(b, &c);
        bad |= lb_balancer_checks_start(b, 0.02, 0, &err) != LB_OK;
        bad |= !WAIT_FOR(stats(b).ok >= 2, 5) << 1;
        getrlimit(RLIMIT_NOFILE, &rl);
        low = rl;
        fd = dup(0);
        close(fd);
        low.rlim_cur = (rlim_t)fd;
        st0 = stats(b);
        setrlimit(RLIMIT_NOFILE, &low);
        /* every check now fails to get a socket: EMFILE */
        WAIT_FOR(stats(b).skipped >= st0.skipped + 5 ||
                     stats(b).failed > st0.failed,
                 5);
        bad |= (stats(b).skipped < st0.skipped + 5) << 2;
        bad |= (stats(b).failed != st0.failed) << 3;
        bad |= (health(b, 0).healthy != 1) << 4;
        setrlimit(RLIMIT_NOFILE, &rl);
        st0 = stats(b);
        bad |= !WAIT_FOR(stats(b).ok >= st0.ok + 2, 5) << 5;
        bad |= (health(b, 0).healthy != 1) << 6;
        lb_balancer_free(b);
        srv_stop(s);
        _exit(bad);
    }
    CHECK(pid > 0);
    if (pid > 0) {
        wait_child(pid, 40, &status);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            printf("# out of descriptors: child status %#x\n", status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
}

/* Many checks of every kind, then everything is back: descriptors and the
 * thread. */
static void test_resources(int fds0)
{
    struct srv *s = srv_new(AF_INET, M_HTTP);
    const char *addrs[3];
    char a0[32], a1[32], a2[32];
    lb_balancer *b1 = bal_new(0), *b2 = bal_new(0);
    lb_check_config c1 = http_cfg(1), c2 = tcp_cfg(1);
    const char *err = NULL;

    s->keepalive = true;
    srv_run(s);
    snprintf(a0, sizeof(a0), "127.0.0.1:%d", s->port);
    snprintf(a1, sizeof(a1), "127.0.0.2:%d", s->port);
    snprintf(a2, sizeof(a2), "127.0.0.1:%d", closed_port());
    addrs[0] = a0;
    addrs[1] = a1;
    addrs[2] = a2;
    bal_set(b1, addrs, 3);
    bal_set(b2, addrs, 3);
    c1.reuse_connection = 1;
    set_check(b1, &c1);
    set_check(b2, &c2);
    lb_balancer_checks_start(b2, 0.005, 1, &err);
    for (int i = 0; i < 50; i++) {
        CHECK_EQ(round_(b1, i & 1), i <= 25 ? 3 : 2);
        if (i == 25)
            bal_set(b1, addrs + 1, 2); /* a kept connection's backend goes */
    }
    lb_balancer_free(b1);
    lb_balancer_free(b2);
    srv_stop(s);
    CHECK_EQ(count_fds(), fds0);
    CHECK(WAIT_FOR(checker_threads() == 0, 2));
}

static void test_error_text(void)
{
    char buf[64];

    lb_check_error_text(LB_CHECK_ERR_CONNECT, ECONNREFUSED, buf, sizeof(buf));
    CHECK(strcmp(buf, "connect: Connection refused") == 0);
    lb_check_error_text(LB_CHECK_ERR_TIMEOUT, LB_CHECK_PHASE_TLS, buf,
                        sizeof(buf));
    CHECK(strcmp(buf, "timeout: TLS handshake") == 0);
    CHECK_EQ(lb_check_error_text(LB_CHECK_ERR_HTTP_STATUS, 503, buf, 4), 21);
    CHECK(strcmp(buf, "une") == 0);
    lb_check_error_text(LB_CHECK_ERR_NONE, 0, buf, sizeof(buf));
    CHECK(buf[0] == '\0');
}

int main(void)
{
    int fds0;

    signal(SIGPIPE, SIG_IGN);
    SSL_library_init();
    fds0 = count_fds();
    TEST(test_error_text());
    TEST(test_tcp());
    TEST(test_tcp_timeout());
    TEST(test_http_status());
    TEST(test_http_request());
    TEST(test_reuse());
    TEST(test_reuse_dead_listener());
    TEST(test_bad_responses());
    TEST(test_slow_and_silent());
    TEST(test_thresholds());
    TEST(test_parallel());
    TEST(test_periodic());
    TEST(test_round_beside_periodic());
    TEST(test_fair_share());
    TEST(test_tls());
#if defined(__SANITIZE_THREAD__)
    /* ThreadSanitizer cannot start threads in the child of a threaded
     * process; the fork path runs in the plain and ASan builds. */
    printf("# fork test skipped under ThreadSanitizer\n");
#else
    TEST(test_fork());
    TEST(test_out_of_descriptors());
#endif
    TEST(test_resources(fds0));
    CHECK_EQ(count_fds(), fds0);
    CHECK_EQ(checker_threads(), 0);
    return tap_done("test_checker");
}
