/*
 * test_checker_rounds.c - the background health checker's rounds against
 * real loopback servers (checker_servers.h): parallel timing, periodic
 * checks and rounds beside them, the fair share between balancers, TLS,
 * fork, running out of descriptors, and that descriptors and the thread go
 * away afterwards.
 */
#include "checker_servers.h"

/* ---- tests ---- */

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

int main(void)
{
    int fds0;

    signal(SIGPIPE, SIG_IGN);
    SSL_library_init();
    fds0 = count_fds();
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
    return tap_done("test_checker_rounds");
}
