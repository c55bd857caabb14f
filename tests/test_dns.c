/*
 * test_dns.c - the DNS source against a real dnsmasq on loopback: an A
 * set published by the checker thread, a change picked up when the TTL
 * runs out, the server killed (the last set stays, the status says why,
 * waits are bounded), the server back (recovery), SRV with its lowest
 * priority only, and a balancer freed while its source runs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "tap.h"
#include "util.h"

static char dir[256];
static char hosts[300];
static int port;
static pid_t dns_pid = -1;

static void write_hosts(const char *text)
{
    char tmp[320];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", hosts);
    f = fopen(tmp, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
    rename(tmp, hosts);
}

static void dns_start(void)
{
    char a_port[32], a_hosts[340];

    snprintf(a_port, sizeof(a_port), "--port=%d", port);
    snprintf(a_hosts, sizeof(a_hosts), "--addn-hosts=%s", hosts);
    {
        /* posix_spawn, not fork: the process has threads (and TSan
         * forbids starting threads in a forked child of such a process) */
        char *argv[] = {"dnsmasq",
                        "--keep-in-foreground",
                        "--conf-file=/dev/null",
                        "--no-resolv",
                        "--no-hosts",
                        "--no-poll",
                        a_port,
                        "--listen-address=127.0.0.1",
                        "--bind-interfaces",
                        "--local=/lb.test/",
                        a_hosts,
                        "--local-ttl=1",
                        "--user=root",
                        "--srv-host=_app._tcp.lb.test,a.lb.test,8001,10,5",
                        "--srv-host=_app._tcp.lb.test,b.lb.test,8002,10,7",
                        "--srv-host=_app._tcp.lb.test,c.lb.test,8003,20,5",
                        NULL};
        extern char **environ;

        if (posix_spawnp(&dns_pid, "dnsmasq", NULL, NULL, argv, environ) != 0)
            dns_pid = -1;
    }
}

static void dns_stop(void)
{
    int st;

    if (dns_pid > 0) {
        kill(dns_pid, SIGTERM);
        wait_child(dns_pid, 5, &st);
    }
    dns_pid = -1;
}

static void cleanup(void)
{
    char path[340];

    dns_stop();
    snprintf(path, sizeof(path), "%s.new", hosts);
    unlink(path);
    unlink(hosts);
    rmdir(dir);
}

static int has(lb_balancer *b, const char *addr)
{
    size_t n = lb_balancer_count(b);
    lb_backend be;

    for (size_t i = 0; i < n; i++)
        if (lb_balancer_backend(b, i, &be) == LB_OK &&
            strcmp(be.addr, addr) == 0)
            return 1;
    return 0;
}

static lb_balancer *with_dns(const char *name, int type, uint16_t bport)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    char res[64];
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_dns_config dc = {0};

    snprintf(res, sizeof(res), "127.0.0.1:%d", port);
    dc.name = name;
    dc.name_len = strlen(name);
    dc.type = type;
    dc.port = bport;
    dc.resolvers = res;
    dc.resolvers_len = strlen(res);
    dc.timeout = 0.5;
    dc.min_ttl = 0.2;
    dc.max_ttl = 1;
    if (!b || lb_balancer_set_dns(b, &dc, &err) != LB_OK) {
        fprintf(stderr, "set_dns: %s\n", err);
        exit(2);
    }
    return b;
}

static void test_bad_config(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_dns_config dc = {
        .name = "x.lb.test", .name_len = 9, .type = 5, .port = 80};

    CHECK_EQ(lb_balancer_set_dns(b, &dc, &err), LB_ERROR);
    CHECK(err && strstr(err, "type"));
    dc.type = LB_DNS_A;
    dc.resolvers = "127.0.0.1:99999";
    dc.resolvers_len = strlen(dc.resolvers);
    CHECK_EQ(lb_balancer_set_dns(b, &dc, &err), LB_ERROR);
    CHECK(err && strstr(err, "resolver"));
    dc.resolvers = "[::1]:53,127.0.0.1";
    dc.resolvers_len = strlen(dc.resolvers);
    CHECK_EQ(lb_balancer_set_dns(b, &dc, &err), LB_OK);
    dc.port = 0;
    CHECK_EQ(lb_balancer_set_dns(b, &dc, &err), LB_ERROR);
    CHECK(err && strstr(err, "port"));
    lb_balancer_free(b);
}

static void test_a(void)
{
    lb_balancer *b = with_dns("a.lb.test", LB_DNS_A, 80);
    lb_discovery_status st;
    const char *err = NULL;
    int64_t t;
    double t0;

    /* a refresh before start: one answer, waited for */
    t = lb_balancer_discovery_refresh(b, &err);
    CHECK(t > 0);
    CHECK_EQ(lb_balancer_discovery_wait(b, t, 5), LB_OK);
    CHECK_EQ(lb_balancer_count(b), 2);
    CHECK(has(b, "127.0.0.11:80") && has(b, "127.0.0.12:80"));
    CHECK_EQ(lb_balancer_discovery_status(b, &st), LB_OK);
    CHECK_EQ(st.ok, 1);
    CHECK(st.updated_at > 0);
    CHECK_EQ(st.running, 0);
    /* asked once and answered: no thread stays for it */
    CHECK(WAIT_FOR(checker_threads() == 0, 5));

    /* started: a change is seen once the TTL (1 s) runs out */
    CHECK_EQ(lb_balancer_discovery_start(b, &err), LB_OK);
    write_hosts("127.0.0.11 a.lb.test\n127.0.0.13 a.lb.test\n");
    kill(dns_pid, SIGHUP);
    t0 = now_s();
    CHECK(WAIT_FOR(has(b, "127.0.0.13:80") && !has(b, "127.0.0.12:80"), 10));
    printf("# TTL change seen after %.2f s\n", now_s() - t0);

    /* server down: the set stays, the status says so */
    dns_stop();
    CHECK(WAIT_FOR((lb_balancer_discovery_status(b, &st), st.ok == 0), 10));
    CHECK(strlen(st.last_error) > 0);
    printf("# with the server down: %s\n", st.last_error);
    CHECK_EQ(lb_balancer_count(b), 2);
    t = lb_balancer_discovery_refresh(b, &err);
    t0 = now_s();
    CHECK_EQ(lb_balancer_discovery_wait(b, t, 5), LB_ERROR);
    CHECK(now_s() - t0 < 3);
    CHECK_EQ(lb_balancer_count(b), 2);

    /* back: recovery */
    write_hosts("127.0.0.14 a.lb.test\n");
    dns_start();
    CHECK(WAIT_FOR(has(b, "127.0.0.14:80") && lb_balancer_count(b) == 1, 15));
    CHECK(WAIT_FOR((lb_balancer_discovery_status(b, &st), st.ok == 1), 5));

    /* NXDOMAIN keeps the set */
    {
        lb_balancer *nx = with_dns("nothing.lb.test", LB_DNS_A, 80);
        lb_backend keep = parse_backend("127.0.0.99:80", 1);

        publish_or_exit(nx, &keep, 1);
        t = lb_balancer_discovery_refresh(nx, &err);
        CHECK_EQ(lb_balancer_discovery_wait(nx, t, 5), LB_ERROR);
        lb_balancer_discovery_status(nx, &st);
        CHECK(strstr(st.last_error, "not found") != NULL);
        printf("# NXDOMAIN: %s\n", st.last_error);
        CHECK_EQ(lb_balancer_count(nx), 1);
        lb_balancer_free(nx);
    }
    /* freed while running */
    lb_balancer_free(b);
}

static void test_srv(void)
{
    lb_balancer *b = with_dns("_app._tcp.lb.test", LB_DNS_SRV, 0);
    const char *err = NULL;
    int64_t t;
    lb_backend be;

    write_hosts("127.0.0.21 a.lb.test\n127.0.0.22 b.lb.test\n"
                "127.0.0.23 c.lb.test\n");
    kill(dns_pid, SIGHUP);
    usleep(100000); /* dnsmasq re-reads on SIGHUP: a re-ask covers a miss */
    t = lb_balancer_discovery_refresh(b, &err);
    CHECK_EQ(lb_balancer_discovery_wait(b, t, 5), LB_OK);
    if (!has(b, "127.0.0.22:8002")) {
        t = lb_balancer_discovery_refresh(b, &err);
        lb_balancer_discovery_wait(b, t, 5);
    }
    CHECK_EQ(lb_balancer_count(b), 2); /* priority 20 left out */
    CHECK(has(b, "127.0.0.21:8001") && has(b, "127.0.0.22:8002"));
    CHECK(!has(b, "127.0.0.23:8003"));
    for (size_t i = 0; i < lb_balancer_count(b); i++) {
        lb_balancer_backend(b, i, &be);
        CHECK_EQ(be.weight, be.port == 8001 ? 5 : 7);
    }
    lb_balancer_free(b);
}

static lb_balancer *gated;

static int gate(lb_balancer *b) { return b != gated; }

/* The gate: a balancer it refuses asks nothing (as a shared balancer's
 * reader process); let through, it asks at its next due time. */
static void test_gate(void)
{
    lb_balancer *b = with_dns("a.lb.test", LB_DNS_A, 80);
    lb_discovery_status st;
    const char *err = NULL;
    int64_t t;

    write_hosts("127.0.0.61 a.lb.test\n");
    kill(dns_pid, SIGHUP);
    gated = b;
    lb_discovery_gate_set(gate);
    t = lb_balancer_discovery_refresh(b, &err);
    CHECK_EQ(lb_balancer_discovery_wait(b, t, 0.5), LB_DECLINED);
    lb_balancer_discovery_status(b, &st);
    CHECK_EQ(st.queries, 0);
    CHECK_EQ(lb_balancer_count(b), 0);
    lb_discovery_gate_set(NULL);
    CHECK_EQ(lb_balancer_discovery_wait(b, t, 5), LB_OK);
    CHECK(has(b, "127.0.0.61:80"));
    lb_balancer_free(b);
}

/* A source made before fork() and started in the child (OpenResty's
 * master and workers), while the parent's thread runs one too. */
static void test_fork(void)
{
#ifndef __SANITIZE_THREAD__ /* TSan: no threads in a forked child */
    lb_balancer *b = with_dns("a.lb.test", LB_DNS_A, 80);
    const char *err = NULL;
    int st = 0;
    pid_t pid;

    CHECK_EQ(lb_balancer_discovery_start(b, &err), LB_OK);
    CHECK(WAIT_FOR(has(b, "127.0.0.61:80"), 5));
    pid = fork();
    if (pid == 0) {
        int ok = 1;
        write_hosts("127.0.0.62 a.lb.test\n");
        kill(dns_pid, SIGHUP);
        /* started in the parent: it runs again here by itself */
        ok &= WAIT_FOR(has(b, "127.0.0.62:80"), 10);
        lb_balancer_free(b);
        _exit(ok ? 0 : 1);
    }
    CHECK(wait_child(pid, 20, &st));
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* the parent's source went on beside it */
    CHECK(WAIT_FOR(has(b, "127.0.0.62:80"), 10));
    lb_balancer_free(b);
#endif
}

/* DNS queries at TTL 1 s while started: one per TTL. */
static void test_rate(void)
{
    lb_balancer *b = with_dns("a.lb.test", LB_DNS_A, 80);
    lb_discovery_status st;
    const char *err = NULL;
    double t0 = now_s();

    CHECK_EQ(lb_balancer_discovery_start(b, &err), LB_OK);
    usleep(4000000);
    lb_balancer_discovery_status(b, &st);
    printf("# %llu queries in %.1f s at TTL 1 s (max_ttl 1)\n",
           (unsigned long long)st.queries, now_s() - t0);
    CHECK(st.queries >= 3 && st.queries <= 6);
    lb_balancer_free(b);
}

/* One host name resolved on the thread (lb_resolve_*): /etc/hosts'
 * localhost, so no query leaves the machine. */
static void test_resolve(void)
{
    const char *err = NULL;
    lb_backend out[8];
    lb_resolve *r = lb_resolve_start("localhost:8080", 14, 3, 2, &err);
    int n, v4 = 0;

    CHECK(r != NULL);
    CHECK_EQ(lb_resolve_wait(r, 5), LB_OK);
    n = lb_resolve_result(r, out, 8, &err);
    CHECK(n >= 1);
    for (int i = 0; i < n && i < 8; i++) {
        v4 += strcmp(out[i].addr, "127.0.0.1:8080") == 0;
        CHECK_EQ(out[i].weight, 3);
    }
    CHECK_EQ(v4, 1);
    lb_resolve_free(r);
    CHECK(lb_resolve_start("bad name:80", 11, 1, 2, &err) == NULL);
    CHECK(err && strstr(err, "host name"));
    CHECK(lb_resolve_start("localhost:0", 11, 1, 2, &err) == NULL);
    CHECK(lb_resolve_start("localhost", 9, 1, 2, &err) == NULL);
    /* freed while pending */
    r = lb_resolve_start("localhost:1", 11, 1, 2, &err);
    CHECK(r != NULL);
    lb_resolve_free(r);
    CHECK(WAIT_FOR(checker_threads() == 0, 5));
}

int main(void)
{
    if (!test_mkdtemp(dir, sizeof(dir), "lb-test-dns-"))
        return 2;
    snprintf(hosts, sizeof(hosts), "%s/hosts", dir);
    write_hosts("127.0.0.11 a.lb.test\n127.0.0.12 a.lb.test\n");
    /* dnsmasq binds both UDP and TCP */
    if ((port = test_free_port(1)) == 0)
        return 2;
    dns_start();
    atexit(cleanup);
    {
        /* ready when it answers */
        lb_balancer *probe = with_dns("a.lb.test", LB_DNS_A, 80);
        const char *err = NULL;
        double end = now_s() + 10;

        while (now_s() < end) {
            int64_t t = lb_balancer_discovery_refresh(probe, &err);
            if (lb_balancer_discovery_wait(probe, t, 1) == LB_OK)
                break;
            usleep(50000);
        }
        lb_balancer_free(probe);
    }
    TEST(test_bad_config());
    TEST(test_a());
    TEST(test_srv());
    TEST(test_gate());
    TEST(test_fork());
    TEST(test_rate());
    TEST(test_resolve());
    lb_quiesce();
    return tap_done("test_dns");
}
