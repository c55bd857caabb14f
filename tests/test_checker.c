/*
 * test_checker.c - the background health checker against real loopback
 * servers run by this test (checker_servers.h): TCP, HTTP, keep-alive
 * reuse, bad and slow responses, thresholds, and that descriptors and the
 * thread go away afterwards.  Rounds beside periodic checks, TLS, fork and
 * running out of descriptors are in test_checker_rounds.c.
 */
#include "checker_servers.h"

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
    CHECK_EQ(count_fds(), fds0);
    CHECK(WAIT_FOR(checker_threads() == 0, 2));
    return tap_done("test_checker");
}
