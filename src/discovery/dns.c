/*
 * dns.c - DNS discovery with c-ares on the checker thread.
 *
 * One request is one c-ares channel (made at begin, so /etc/resolv.conf
 * is read afresh each time when no resolvers are given): the query for
 * the name, and for SRV one A and one AAAA query per target of the lowest
 * priority present (RFC 2782: clients must use the lowest priority they
 * can reach; we take "reach" as "present", as Consul's and Kubernetes'
 * clients do).  The answer's TTL is the smallest TTL of every record used,
 * clamped to min_ttl..max_ttl; the next request begins when it runs out.
 * A failure keeps the last good set and retries with the backoff of
 * source.c, capped at max_ttl.
 *
 * c-ares tells us its sockets through the sock-state callback (they go in
 * the sources' epoll set, loop.c) and its timeouts through ares_timeout
 * (our io_due).  A channel is never destroyed from inside one of its own
 * callbacks: a finished request sets io_due to "now" and the timer step,
 * outside c-ares, settles it.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "checker/checker.h"
#include "discovery/dns.h"

#define DNS_MAX_FDS 32

struct target {
    char *name;
    uint16_t port;
    uint32_t weight;
    int found; /* addresses found */
};

struct dns_req {
    struct lb_disc *d;
    ares_channel ch;
    bool have_ch;
    bool finished, failed, destroying;
    char err[240];
    int outstanding;   /* queries not yet answered */
    uint64_t deadline; /* monotonic ns */
    double ttl;        /* smallest TTL seen, seconds */
    lb_backend *set;
    size_t n, cap;
    struct target *tg;
    size_t ntg;
    struct lb_disc_fd fds[DNS_MAX_FDS];
};

static const char *type_name(int t)
{
    return t == LB_DNS_A      ? "A"
           : t == LB_DNS_AAAA ? "AAAA"
           : t == DNS_ADDR    ? "address"
                              : "SRV";
}

static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
static int ares_init_rc;

static void ares_init_once(void)
{
    ares_init_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

static void req_fail(struct dns_req *q, const char *fmt, const char *a,
                     const char *b2)
{
    if (q->failed)
        return;
    q->failed = true;
    snprintf(q->err, sizeof(q->err), fmt, a, b2);
}

/* c-ares's text for a failed question.  c-ares ends a question with
 * ARES_ECONNREFUSED when every server refused the connection and also when
 * each answered SERVFAIL, NOTIMP or REFUSED (it moves on to the next server
 * on those), so its text "Could not contact DNS servers" gets both causes. */
static const char *dns_reason(int status)
{
    if (status == ARES_ECONNREFUSED)
        return "Could not contact DNS servers (each refused the connection, "
               "or answered SERVFAIL or REFUSED)";
    return ares_strerror(status);
}

static void req_maybe_finish(struct dns_req *q)
{
    if (q->outstanding == 0 && !q->finished) {
        q->finished = true;
        q->d->io_due = 1; /* settle in the timer step, outside c-ares */
    }
}

static void see_ttl(struct dns_req *q, int ttl)
{
    if (ttl >= 0 && (double)ttl < q->ttl)
        q->ttl = (double)ttl;
}

static void add_backend(struct dns_req *q, int family, const void *ip,
                        uint16_t port, uint32_t weight)
{
    char host[INET6_ADDRSTRLEN], text[LB_ADDR_MAX];
    const char *err;
    lb_backend b;

    inet_ntop(family, ip, host, sizeof(host));
    snprintf(text, sizeof(text), family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
             (unsigned)port);
    if (lb_backend_parse(text, strlen(text), weight, &b, &err) != LB_OK)
        return;
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 16;
        lb_backend *v = realloc(q->set, cap * sizeof(*v));

        if (!v) {
            req_fail(q, "%s%s", "out of memory", "");
            return;
        }
        q->set = v;
        q->cap = cap;
    }
    q->set[q->n++] = b;
}

/* The addresses of an A or AAAA answer, with port and weight. */
static int take_addresses(struct dns_req *q, int type, unsigned char *abuf,
                          int alen, uint16_t port, uint32_t weight)
{
    int found = 0;

    if (type == LB_DNS_A) {
        struct ares_addrttl a[64];
        int na = 64;

        if (ares_parse_a_reply(abuf, alen, NULL, a, &na) != ARES_SUCCESS)
            return -1;
        for (int i = 0; i < na; i++) {
            see_ttl(q, a[i].ttl);
            add_backend(q, AF_INET, &a[i].ipaddr, port, weight);
            found++;
        }
    } else {
        struct ares_addr6ttl a[64];
        int na = 64;

        if (ares_parse_aaaa_reply(abuf, alen, NULL, a, &na) != ARES_SUCCESS)
            return -1;
        for (int i = 0; i < na; i++) {
            see_ttl(q, a[i].ttl);
            add_backend(q, AF_INET6, &a[i].ip6addr, port, weight);
            found++;
        }
    }
    return found;
}

/* The smallest TTL of the answer section (c-ares' SRV parser gives
 * none): header, questions skipped, then each record's TTL. */
static void answer_ttls(struct dns_req *q, const unsigned char *abuf, int alen)
{
    const unsigned char *p = abuf + 12, *end = abuf + alen;
    int qd, an;

    if (alen < 12)
        return;
    qd = abuf[4] << 8 | abuf[5];
    an = abuf[6] << 8 | abuf[7];
    for (int i = 0; i < qd + an; i++) {
        char *name;
        long len;

        if (ares_expand_name(p, abuf, alen, &name, &len) != ARES_SUCCESS)
            return;
        ares_free_string(name);
        p += len;
        if (i < qd) {
            p += 4;
            continue;
        }
        if (end - p < 10)
            return;
        see_ttl(q, (int)((uint32_t)p[4] << 24 | (uint32_t)p[5] << 16 |
                         (uint32_t)p[6] << 8 | p[7]) &
                       0x7fffffff);
        p += 10 + (p[8] << 8 | p[9]);
        if (p > end)
            return;
    }
}

struct tq {
    struct dns_req *q;
    size_t t;
    int type;
};

static void on_target(void *arg, int status, int timeouts, unsigned char *abuf,
                      int alen)
{
    struct tq *a = arg;
    struct dns_req *q = a->q;
    struct target *t = &q->tg[a->t];

    (void)timeouts;
    if (!q->destroying) {
        if (status == ARES_SUCCESS) {
            int n = take_addresses(q, a->type, abuf, alen, t->port, t->weight);
            if (n > 0)
                t->found += n;
        } else if (status != ARES_ENODATA && status != ARES_ENOTFOUND)
            req_fail(q, "%.140s: %.95s", t->name, dns_reason(status));
        q->outstanding--;
        req_maybe_finish(q);
    }
    free(a);
}

static void ask(struct dns_req *q, const char *name, int type, ares_callback cb,
                void *arg)
{
    q->outstanding++;
    lb_disc_count_query(q->d);
    ares_query(q->ch, name, 1 /* C_IN */, type, cb, arg);
}

static void on_srv(struct dns_req *q, unsigned char *abuf, int alen)
{
    struct ares_srv_reply *srv = NULL;
    unsigned short low = 0xffff;
    size_t n = 0;

    if (ares_parse_srv_reply(abuf, alen, &srv) != ARES_SUCCESS || !srv) {
        req_fail(q, "%s SRV: %s", ((struct dns_cfg *)q->d->cfg)->name,
                 "malformed answer");
        return;
    }
    answer_ttls(q, abuf, alen);
    for (struct ares_srv_reply *r = srv; r; r = r->next) {
        if (r->priority < low)
            low = r->priority;
        n++;
    }
    q->tg = calloc(n, sizeof(*q->tg));
    if (!q->tg) {
        ares_free_data(srv);
        req_fail(q, "%s%s", "out of memory", "");
        return;
    }
    for (struct ares_srv_reply *r = srv; r; r = r->next) {
        struct target *t;

        if (r->priority != low)
            continue;
        t = &q->tg[q->ntg++];
        t->name = strdup(r->host);
        t->port = r->port;
        t->weight = r->weight == 0              ? 1
                    : r->weight > LB_MAX_WEIGHT ? LB_MAX_WEIGHT
                                                : r->weight;
    }
    ares_free_data(srv);
    for (size_t i = 0; i < q->ntg; i++) {
        for (int k = 0; k < 2; k++) {
            struct tq *a = malloc(sizeof(*a));

            if (!a || !q->tg[i].name) {
                free(a);
                req_fail(q, "%s%s", "out of memory", "");
                return;
            }
            a->q = q;
            a->t = i;
            a->type = k == 0 ? LB_DNS_A : LB_DNS_AAAA;
            ask(q, q->tg[i].name, a->type, on_target, a);
        }
    }
}

static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf,
                      int alen)
{
    struct dns_req *q = arg;
    struct dns_cfg *c;

    (void)timeouts;
    if (q->destroying)
        return;
    c = q->d->cfg;
    if (status != ARES_SUCCESS) {
        char what[300];

        snprintf(what, sizeof(what), "%s %s", c->name, type_name(c->type));
        req_fail(q, "%.140s: %.95s", what, dns_reason(status));
    } else if (c->type == LB_DNS_SRV)
        on_srv(q, abuf, alen);
    else if (take_addresses(q, c->type, abuf, alen, c->port, 1) < 0)
        req_fail(q, "%s %s: malformed answer", c->name, type_name(c->type));
    q->outstanding--;
    req_maybe_finish(q);
}

static void on_addrinfo(void *arg, int status, int timeouts,
                        struct ares_addrinfo *res)
{
    struct dns_req *q = arg;
    struct dns_cfg *c;

    (void)timeouts;
    if (q->destroying) {
        ares_freeaddrinfo(res);
        return;
    }
    c = q->d->cfg;
    if (status != ARES_SUCCESS) {
        req_fail(q, "%.140s: %.95s", c->name, dns_reason(status));
    } else {
        for (struct ares_addrinfo_node *n = res ? res->nodes : NULL; n;
             n = n->ai_next) {
            if (n->ai_family == AF_INET)
                add_backend(
                    q, AF_INET,
                    &((struct sockaddr_in *)(void *)n->ai_addr)->sin_addr,
                    c->port, c->weight);
            else if (n->ai_family == AF_INET6)
                add_backend(
                    q, AF_INET6,
                    &((struct sockaddr_in6 *)(void *)n->ai_addr)->sin6_addr,
                    c->port, c->weight);
            else
                continue;
            see_ttl(q, n->ai_ttl);
        }
    }
    ares_freeaddrinfo(res);
    q->outstanding--;
    req_maybe_finish(q);
}

static void on_fd(struct lb_disc_fd *h, uint32_t rev)
{
    struct dns_req *q = h->arg;
    ares_socket_t r = ARES_SOCKET_BAD, w = ARES_SOCKET_BAD;

    if (rev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        r = h->fd;
    if (rev & EPOLLOUT)
        w = h->fd;
    ares_process_fd(q->ch, r, w);
    if (!q->finished)
        q->d->io_due = 1; /* re-arm from ares_timeout in the timer step */
}

static void on_sock_state(void *data, ares_socket_t fd, int readable,
                          int writable)
{
    struct dns_req *q = data;
    struct lb_disc_fd *h = NULL, *free_slot = NULL;
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);

    for (int i = 0; i < DNS_MAX_FDS; i++) {
        if (q->fds[i].fd == fd && q->fds[i].events)
            h = &q->fds[i];
        else if (!free_slot && q->fds[i].events == 0)
            free_slot = &q->fds[i];
    }
    if (!h) {
        if (!ev)
            return;
        if (!free_slot) {
            req_fail(q, "%s%s", "too many resolver sockets", "");
            return;
        }
        h = free_slot;
        h->fd = fd;
        h->ready = on_fd;
        h->arg = q;
    }
    if (lb_disc_watch(h, ev) != LB_OK)
        req_fail(q, "%s%s", "cannot watch a resolver socket", "");
}

/* Tear the request down (c-ares closes its sockets, telling us first) and
 * free it.  Outside c-ares' callbacks. */
static void req_free(struct dns_req *q, bool child)
{
    if (q->have_ch) {
        q->destroying = true;
        if (child) {
            /* the epoll set is the parent's: only close ours (c-ares does
             * in ares_destroy; the watch calls find no set) */
        }
        ares_destroy(q->ch);
    }
    for (size_t i = 0; i < q->ntg; i++)
        free(q->tg[i].name);
    free(q->tg);
    free(q->set);
    free(q);
}

static double clamp_ttl(const struct dns_cfg *c, double ttl)
{
    if (!(ttl >= c->min_ttl))
        ttl = c->min_ttl;
    if (ttl > c->max_ttl)
        ttl = c->max_ttl;
    return ttl;
}

/* The request is complete (or timed out): report and end it. */
static void settle(struct lb_disc *d)
{
    struct dns_req *q = d->state;
    struct dns_cfg *c = d->cfg;
    bool ok = false;

    d->state = NULL;
    if (!q->failed && !q->finished)
        req_fail(q, "%s %s: timeout", c->name, type_name(c->type));
    if (!q->failed && c->type == LB_DNS_SRV) {
        for (size_t i = 0; i < q->ntg; i++)
            if (q->tg[i].found == 0)
                req_fail(q, "SRV target %s: no address%s", q->tg[i].name, "");
    }
    if (!q->failed && q->n == 0)
        req_fail(q, "%s %s: no address", c->name, type_name(c->type));
    if (q->failed) {
        char msg[256];

        snprintf(msg, sizeof(msg), "dns: %s", q->err);
        lb_disc_fail(d, msg, true);
    } else {
        lb_disc_answer(d, q->set, q->n, false, 0);
        ok = true;
    }
    lb_disc_end(d, ok, clamp_ttl(c, q->ttl), c->max_ttl < 30 ? c->max_ttl : 30);
    req_free(q, false);
}

static void dns_begin(struct lb_disc *d, uint64_t now)
{
    struct dns_cfg *c = d->cfg;
    struct dns_req *q = calloc(1, sizeof(*q));
    struct ares_options o;
    int rc;

    pthread_once(&ares_once, ares_init_once);
    if (!q || ares_init_rc != ARES_SUCCESS) {
        free(q);
        lb_disc_fail(d, "dns: cannot start the resolver", true);
        lb_disc_end(d, false, 0, c->max_ttl);
        return;
    }
    q->d = d;
    q->ttl = HUGE_VAL;
    q->deadline = now + (uint64_t)(c->timeout * 1e9);
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = q;
    o.timeout = (int)(c->timeout * 1000);
    o.tries = 1;
    rc = ares_init_options(&q->ch, &o,
                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                               ARES_OPT_TRIES);
    if (rc == ARES_SUCCESS) {
        q->have_ch = true;
        if (c->servers)
            rc = ares_set_servers_ports_csv(q->ch, c->servers);
    }
    d->state = q;
    if (rc != ARES_SUCCESS) {
        req_fail(q, "resolver: %s%s", ares_strerror(rc), "");
        q->finished = true;
        settle(d);
        return;
    }
    q->outstanding++;
    lb_disc_count_query(d);
    if (c->type == DNS_ADDR) {
        struct ares_addrinfo_hints h;

        memset(&h, 0, sizeof(h));
        h.ai_family = AF_UNSPEC;
        h.ai_socktype = SOCK_STREAM;
        ares_getaddrinfo(q->ch, c->name, NULL, &h, on_addrinfo, q);
    } else
        ares_query(q->ch, c->name, 1 /* C_IN */, c->type, on_answer, q);
    d->io_due = 1;
}

static void dns_timer(struct lb_disc *d, uint64_t now)
{
    struct dns_req *q = d->state;
    struct timeval tv, *tp;
    uint64_t next;

    if (!q)
        return;
    if (!q->finished && now >= q->deadline) {
        struct dns_cfg *c = d->cfg;
        char what[300];

        snprintf(what, sizeof(what), "%s %s", c->name, type_name(c->type));
        req_fail(q, "%.150s: timeout (no answer in time)%s", what, "");
        ares_cancel(q->ch); /* callbacks run with ARES_ECANCELLED */
    }
    if (q->finished || q->failed) {
        if (!q->finished)
            ares_cancel(q->ch);
        settle(d);
        return;
    }
    ares_process_fd(q->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    if (q->finished) {
        settle(d);
        return;
    }
    next = q->deadline;
    tp = ares_timeout(q->ch, NULL, &tv);
    if (tp) {
        uint64_t t = now + (uint64_t)tp->tv_sec * 1000000000u +
                     (uint64_t)tp->tv_usec * 1000u;
        if (t < next)
            next = t;
    }
    d->io_due = next ? next : 1;
}

static void dns_abort(struct lb_disc *d, bool child)
{
    if (d->state)
        req_free(d->state, child);
    d->state = NULL;
}

const struct lb_disc_ops lb_disc_dns_ops = {
    .kind = 1,
    .begin = dns_begin,
    .timer = dns_timer,
    .abort = dns_abort,
    .free_cfg = lb_dns_cfg_free,
};
