/*
 * test_etcd.c - the etcd source against a real etcd on loopback, for the
 * sanitizers: the initial range, a put seen through the watch, etcd killed
 * (the set stays, the status says so) and restarted (the watch resumes),
 * and a balancer freed while its watch runs.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>

#include "tap.h"
#include "util.h"

extern char **environ;

static char dir[256];
static char client_url[64], peer_url[64], data[300], cluster[100];
static pid_t etcd_pid = -1;

/* posix_spawn, not fork: the process has threads */
static pid_t spawn(char **argv)
{
    posix_spawn_file_actions_t fa;
    pid_t pid = -1;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ) != 0)
        pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static void etcd_start(void)
{
    char *argv[] = {"etcd",     "--name",
                    "default",  "--data-dir",
                    data,       "--listen-client-urls",
                    client_url, "--advertise-client-urls",
                    client_url, "--listen-peer-urls",
                    peer_url,   "--initial-advertise-peer-urls",
                    peer_url,   "--initial-cluster",
                    cluster,    NULL};

    etcd_pid = spawn(argv);
}

static void etcd_stop(void)
{
    int st;

    if (etcd_pid > 0) {
        kill(etcd_pid, SIGKILL);
        wait_child(etcd_pid, 10, &st);
    }
    etcd_pid = -1;
}

/* etcdctl put/del; true when it succeeded */
static int ctl(const char *op, const char *key, const char *value)
{
    char ep[80];
    char *argv[] = {"etcdctl",     ep,  (char *)op, (char *)key,
                    (char *)value, NULL};
    pid_t pid;
    int st = 0;

    snprintf(ep, sizeof(ep), "--endpoints=%s", client_url);
    pid = spawn(argv);
    return pid > 0 && wait_child(pid, 10, &st) && WIFEXITED(st) &&
           WEXITSTATUS(st) == 0;
}

static void cleanup(void)
{
    char cmd[400];

    etcd_stop();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        /* best effort: a temp dir */
    }
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

static lb_balancer *with_etcd(void)
{
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_balancer *b = lb_balancer_new(&cfg, &err);
    lb_etcd_config ec = {0};

    ec.endpoints = client_url;
    ec.endpoints_len = strlen(client_url);
    ec.prefix = "/t/";
    ec.prefix_len = 3;
    ec.timeout = 1;
    if (!b || lb_balancer_set_etcd(b, &ec, &err) != LB_OK) {
        fprintf(stderr, "set_etcd: %s\n", err);
        exit(2);
    }
    return b;
}

/* tls.sni: checked, and copied for each https endpoint (IPv4, IPv6, no
 * port) but not the http:// one; the sanitizer builds see the copies
 * freed with the balancer. */
static void test_sni_config(void)
{
    static const char *eps = "http://127.0.0.1:1,https://127.0.0.1:2,"
                             "https://[::1]:3,https://etcd.lb.test";
    static const char *bad[] = {"", "a b", "a:1", "a/b", "\xc3\xa9"};
    lb_config cfg = {.selection = LB_SELECT_ROUND_ROBIN};
    const char *err = NULL;
    lb_etcd_config ec = {0};
    lb_balancer *b = lb_balancer_new(&cfg, &err);

    CHECK(b != NULL);
    if (!b)
        return;
    ec.endpoints = eps;
    ec.endpoints_len = strlen(eps);
    ec.prefix = "/t/";
    ec.prefix_len = 3;
    ec.tls_verify = 1;
    ec.tls_sni = "etcd.lb.test";
    ec.tls_sni_len = strlen(ec.tls_sni);
    CHECK_EQ(lb_balancer_set_etcd(b, &ec, &err), LB_OK);
    /* set again: the first copy is freed */
    CHECK_EQ(lb_balancer_set_etcd(b, &ec, &err), LB_OK);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err = NULL;
        ec.tls_sni = bad[i];
        ec.tls_sni_len = strlen(bad[i]);
        CHECK_EQ(lb_balancer_set_etcd(b, &ec, &err), LB_ERROR);
        CHECK(err && strcmp(err, "etcd: tls.sni must be a host name") == 0);
    }
    /* https endpoints without a host, or with a path */
    ec.tls_sni = "etcd.lb.test";
    ec.tls_sni_len = strlen(ec.tls_sni);
    for (int i = 0; i < 2; i++) {
        ec.endpoints = i == 0 ? "https://:2379" : "https://127.0.0.1:2379/x";
        ec.endpoints_len = strlen(ec.endpoints);
        CHECK_EQ(lb_balancer_set_etcd(b, &ec, &err), LB_ERROR);
        CHECK(strstr(err, "must be scheme, host and port") != NULL);
    }
    lb_balancer_free(b);
}

int main(void)
{
    lb_balancer *b;
    lb_discovery_status st;
    const char *err = NULL;
    int64_t t;
    int up = 0;

    TEST(test_sni_config());
    if (!test_mkdtemp(dir, sizeof(dir), "lb-test-etcd-"))
        return 2;
    snprintf(data, sizeof(data), "%s/data", dir);
    {
        int cp = test_free_port(0), pp = test_free_port(0);

        if (cp == 0 || pp == 0)
            return 2;
        snprintf(client_url, sizeof(client_url), "http://127.0.0.1:%d", cp);
        snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d", pp);
    }
    snprintf(cluster, sizeof(cluster), "default=%s", peer_url);
    etcd_start();
    atexit(cleanup);
    up = WAIT_FOR(ctl("put", "/t/a", "127.0.0.1:8001"), 20);
    CHECK(up);
    if (!up)
        return tap_done("test_etcd");

    b = with_etcd();
    t = lb_balancer_discovery_refresh(b, &err);
    CHECK_EQ(lb_balancer_discovery_wait(b, t, 5), LB_OK);
    CHECK(has(b, "127.0.0.1:8001"));
    /* asked once: no watch stays open for it (the thread goes) */
    CHECK(WAIT_FOR((lb_balancer_discovery_status(b, &st), st.running == 0) &&
                       checker_threads() == 0,
                   5) ||
          (lb_balancer_discovery_wait(b, t, 0) == LB_OK &&
           WAIT_FOR(checker_threads() == 0, 5)));
    CHECK_EQ(lb_balancer_discovery_start(b, &err), LB_OK);
    CHECK(ctl("put", "/t/b", "{\"addr\": \"127.0.0.1:8002\", \"weight\": 2}"));
    CHECK(WAIT_FOR(has(b, "127.0.0.1:8002"), 2));

    etcd_stop();
    CHECK(WAIT_FOR((lb_balancer_discovery_status(b, &st), st.ok == 0), 5));
    printf("# etcd down: %s\n", st.last_error);
    CHECK_EQ(lb_balancer_count(b), 2);
    etcd_start();
    CHECK(WAIT_FOR(ctl("put", "/t/c", "127.0.0.1:8003"), 20));
    CHECK(WAIT_FOR(has(b, "127.0.0.1:8003"), 10));
    CHECK(WAIT_FOR((lb_balancer_discovery_status(b, &st), st.ok == 1), 5));
    CHECK(st.has_revision && st.revision >= 3);

    /* freed with its watch running */
    lb_balancer_free(b);
    lb_quiesce();
    return tap_done("test_etcd");
}
