/*
 * etcd.c - etcd v3 discovery through its JSON gateway, on the checker
 * thread: libcurl's multi interface for HTTP (its sockets in the sources'
 * epoll set, its timer as our deadline) and jansson for JSON.
 *
 * Why libcurl rather than the checker's connection code (src/check/
 * conn.c): a watch is one long chunked response, with TLS, basic
 * authentication tokens, redirects of a proxy in between, reconnects; the
 * checker's client reads one bounded response.  libcurl's multi interface
 * is made to sit in someone else's event loop (CURLMOPT_SOCKETFUNCTION,
 * CURLMOPT_TIMERFUNCTION) and never blocks it.  Why jansson: a small,
 * well-kept C library in Debian (libjansson-dev) with no global state we
 * would share with the host (cJSON's allocator hooks are process-wide).
 *
 * One request: (authenticate when a user is set:
 * POST /v3/auth/authenticate gives a token for the Authorization header),
 * then POST /v3/kv/range over the prefix (key, range_end = prefix + 1,
 * base64) unless a revision is known, then POST /v3/watch from revision+1,
 * streaming one JSON message per line.  Each change rebuilds the set from
 * the keys held here and publishes it.  A lost connection ends the
 * request; the next (after the backoff) resumes the watch from the last
 * revision, and a watch cancelled as compacted reads the prefix again.
 * Endpoints are tried in turn within one request when one cannot be
 * reached.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "checker/checker.h"
#include "discovery/etcd.h"

#define ETCD_MAX_FDS 8
#define ETCD_MAX_BODY (16u * 1024 * 1024)

enum phase { PH_AUTH, PH_RANGE, PH_WATCH };

struct etcd_req {
    struct lb_disc *d;
    CURLM *multi;
    CURL *easy;
    struct curl_slist *headers;
    struct curl_slist *connect_to; /* with tls.sni */
    enum phase phase;
    char *body; /* the request's */
    char *buf;  /* the response so far */
    size_t len, cap;
    char *token;
    size_t tried;  /* endpoints tried in this request */
    bool done;     /* ended: settle in the timer step */
    bool ok;       /* ... and how */
    bool watching; /* the watch was created */
    bool refresh;  /* a ticket asked during the watch */
    uint64_t curl_due;
    struct lb_disc_fd fds[ETCD_MAX_FDS];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;

static void curl_init_once(void) { curl_init_rc = curl_global_init(0); }

/* ---- HTTP ---- */

static void req_end(struct etcd_req *r, bool ok)
{
    if (r->done)
        return;
    r->done = true;
    r->ok = ok;
    r->d->io_due = 1; /* settle in the timer step, outside libcurl */
}

static void req_fail(struct etcd_req *r, const char *what, const char *detail)
{
    char msg[256];

    snprintf(msg, sizeof(msg), "etcd: %.60s: %.180s", what, detail);
    lb_disc_fail(r->d, msg, true);
    req_end(r, false);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg);
static int start_phase(struct etcd_req *r);

static const char *phase_name(enum phase p)
{
    return p == PH_AUTH ? "authenticate" : p == PH_RANGE ? "range" : "watch";
}

static char *range_json(const struct etcd_src *e, bool watch)
{
    char *key = lb_etcd_b64_encode(e->prefix, e->prefix_len), *end;
    char *pe = malloc(e->prefix_len + 1);
    size_t n = e->prefix_len;
    json_t *o;
    char *s = NULL;

    if (!key || !pe) {
        free(key);
        free(pe);
        return NULL;
    }
    /* range_end: the prefix with its last byte that is not 0xff plus one
     * (etcd's GetPrefixRangeEnd); all 0xff: "\0", every key after */
    memcpy(pe, e->prefix, n);
    while (n && (unsigned char)pe[n - 1] == 0xff)
        n--;
    if (n)
        pe[n - 1]++;
    else
        pe[n++] = '\0';
    end = lb_etcd_b64_encode(pe, n);
    free(pe);
    if (!end) {
        free(key);
        return NULL;
    }
    o = json_pack("{s:s,s:s}", "key", key, "range_end", end);
    if (o && watch) {
        json_t *w = json_pack("{s:o}", "create_request", o);
        o = w;
        if (o)
            json_object_set_new(json_object_get(o, "create_request"),
                                "start_revision",
                                json_integer((json_int_t)e->revision + 1));
    }
    if (o)
        s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    free(key);
    free(end);
    return s;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp,
                     void *socketp);
static int on_timer(CURLM *multi, long ms, void *userp);

static void drive(struct etcd_req *r, curl_socket_t s, int ev);

static void on_fd(struct lb_disc_fd *h, uint32_t rev)
{
    struct etcd_req *r = h->arg;
    int ev = 0;

    if (rev & (EPOLLIN | EPOLLHUP))
        ev |= CURL_CSELECT_IN;
    if (rev & EPOLLOUT)
        ev |= CURL_CSELECT_OUT;
    if (rev & EPOLLERR)
        ev |= CURL_CSELECT_ERR;
    drive(r, h->fd, ev);
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp,
                     void *socketp)
{
    struct etcd_req *r = userp;
    struct lb_disc_fd *h = socketp;
    uint32_t ev = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (h) {
            lb_disc_watch(h, 0);
            h->fd = -1;
        }
        curl_multi_assign(r->multi, s, NULL);
        return 0;
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= EPOLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= EPOLLOUT;
    if (!h) {
        for (int i = 0; i < ETCD_MAX_FDS && !h; i++)
            if (r->fds[i].events == 0 && r->fds[i].fd < 0)
                h = &r->fds[i];
        if (!h)
            return -1;
        h->fd = s;
        h->ready = on_fd;
        h->arg = r;
        curl_multi_assign(r->multi, s, h);
    }
    return lb_disc_watch(h, ev) == LB_OK ? 0 : -1;
}

static int on_timer(CURLM *multi, long ms, void *userp)
{
    struct etcd_req *r = userp;

    (void)multi;
    r->curl_due = ms < 0 ? 0 : lb_ck_now_ns() + (uint64_t)ms * 1000000u + 1;
    return 0;
}

/* A complete JSON message of the watch stream. */
static void watch_message(struct etcd_req *r, const char *line, size_t n)
{
    struct lb_disc *d = r->d;
    struct etcd_src *e = d->cfg;
    json_error_t je;
    json_t *j = json_loadb(line, n, 0, &je), *res, *evs;
    bool changed = false;

    if (!j) {
        req_fail(r, "watch", "a message that is not JSON");
        return;
    }
    res = json_object_get(j, "result");
    if (!res) {
        json_t *err = json_object_get(j, "error");
        const char *m = NULL;

        if (json_is_object(err))
            m = json_string_value(json_object_get(err, "message"));
        req_fail(r, "watch", m ? m : "an answer without a result");
        json_decref(j);
        return;
    }
    if (lb_etcd_json_u64(json_object_get(res, "compact_revision")) > 0 ||
        json_is_true(json_object_get(res, "canceled"))) {
        /* compacted past our revision: read the prefix again */
        e->revision = 0;
        lb_disc_fail(d,
                     "etcd: watch: revision compacted, reading the "
                     "prefix again",
                     false);
        json_decref(j);
        req_end(r, true);
        d->failures = 0;
        return;
    }
    if (json_is_true(json_object_get(res, "created")))
        r->watching = true;
    evs = json_object_get(res, "events");
    for (size_t i = 0; json_is_array(evs) && i < json_array_size(evs); i++) {
        json_t *ev = json_array_get(evs, i), *kv = json_object_get(ev, "kv");
        const char *type = json_string_value(json_object_get(ev, "type"));
        const char *k64 = json_string_value(json_object_get(kv, "key"));
        char *key = k64 ? lb_etcd_b64_decode(k64) : NULL;

        if (!key)
            continue;
        if (type && strcmp(type, "DELETE") == 0) {
            lb_etcd_kv_delete(e, key);
            free(key);
        } else {
            const char *v64 = json_string_value(json_object_get(kv, "value"));
            char *value = lb_etcd_b64_decode(v64 ? v64 : "");

            if (!value || !lb_etcd_kv_put(e, key, value)) {
                if (!value)
                    free(key);
                continue;
            }
        }
        changed = true;
    }
    {
        uint64_t rev = lb_etcd_json_u64(
            json_object_get(json_object_get(res, "header"), "revision"));
        if (rev > e->revision && changed)
            e->revision = rev;
    }
    json_decref(j);
    if (changed)
        lb_etcd_publish_keys(d);
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct etcd_req *r = arg;
    size_t add = size * n;

    if (r->len + add + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        char *b;

        while (cap < r->len + add + 1)
            cap *= 2;
        if (cap > ETCD_MAX_BODY)
            return 0; /* aborts the transfer */
        b = realloc(r->buf, cap);
        if (!b)
            return 0;
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, add);
    r->len += add;
    r->buf[r->len] = '\0';
    if (r->phase == PH_WATCH) {
        char *nl;

        while (!r->done && (nl = memchr(r->buf, '\n', r->len))) {
            size_t line = (size_t)(nl - r->buf);

            if (line > 0)
                watch_message(r, r->buf, line);
            memmove(r->buf, nl + 1, r->len - line - 1);
            r->len -= line + 1;
            r->buf[r->len] = '\0';
        }
        if (r->done)
            return 0;
    }
    return add;
}

/* A whole answer of authenticate or range. */
static void phase_done(struct etcd_req *r, long status)
{
    struct lb_disc *d = r->d;
    struct etcd_src *e = d->cfg;
    json_error_t je;
    json_t *j = json_loadb(r->buf ? r->buf : "", r->len, 0, &je);

    if (!j || status != 200) {
        const char *m =
            j ? json_string_value(json_object_get(j, "message")) : NULL;
        char detail[200];

        if (!m && j)
            m = json_string_value(json_object_get(j, "error"));
        snprintf(detail, sizeof(detail), "HTTP %ld%s%.150s", status,
                 m ? ": " : "", m ? m : "");
        json_decref(j);
        req_fail(r, phase_name(r->phase), detail);
        return;
    }
    if (r->phase == PH_AUTH) {
        const char *t = json_string_value(json_object_get(j, "token"));

        if (!t) {
            json_decref(j);
            req_fail(r, "authenticate", "no token in the answer");
            return;
        }
        free(r->token);
        r->token = strdup(t);
        r->phase = e->revision && d->started ? PH_WATCH : PH_RANGE;
    } else {
        json_t *kvs = json_object_get(j, "kvs");

        lb_etcd_kvs_clear(e);
        for (size_t i = 0; json_is_array(kvs) && i < json_array_size(kvs);
             i++) {
            json_t *kv = json_array_get(kvs, i);
            const char *k64 = json_string_value(json_object_get(kv, "key"));
            const char *v64 = json_string_value(json_object_get(kv, "value"));
            char *key = k64 ? lb_etcd_b64_decode(k64) : NULL;
            char *value = lb_etcd_b64_decode(v64 ? v64 : "");

            if (!key || !value) {
                free(key);
                free(value);
                continue;
            }
            lb_etcd_kv_put(e, key, value);
        }
        e->revision = lb_etcd_json_u64(
            json_object_get(json_object_get(j, "header"), "revision"));
        lb_etcd_publish_keys(d);
        if (!d->started) {
            /* asked once (update): the answer is in, no watch follows */
            json_decref(j);
            req_end(r, true);
            return;
        }
        r->phase = PH_WATCH;
    }
    json_decref(j);
    if (start_phase(r) != LB_OK)
        req_fail(r, phase_name(r->phase), "cannot start the request");
}

/* Is this a failure to reach the endpoint (try the next one)? */
static bool unreachable(CURLcode c)
{
    return c == CURLE_COULDNT_CONNECT || c == CURLE_COULDNT_RESOLVE_HOST ||
           c == CURLE_OPERATION_TIMEDOUT || c == CURLE_SSL_CONNECT_ERROR ||
           c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR ||
           c == CURLE_GOT_NOTHING;
}

static void read_messages(struct etcd_req *r)
{
    struct etcd_src *e = r->d->cfg;
    CURLMsg *m;
    int left;

    while (!r->done && (m = curl_multi_info_read(r->multi, &left))) {
        long status = 0;
        CURLcode c = m->data.result;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        if (c != CURLE_OK && unreachable(c) && !r->watching &&
            r->tried + 1 < e->nendpoints) {
            /* the next endpoint, at once */
            r->tried++;
            e->next_endpoint = (e->next_endpoint + 1) % e->nendpoints;
            if (start_phase(r) != LB_OK)
                req_fail(r, "connect", "cannot start the request");
            return;
        }
        if (c != CURLE_OK) {
            if (unreachable(c))
                e->next_endpoint = (e->next_endpoint + 1) % e->nendpoints;
            req_fail(r, phase_name(r->phase), curl_easy_strerror(c));
            return;
        }
        if (r->phase == PH_WATCH) {
            /* the server ended the stream */
            if (status != 200) {
                char detail[64];
                snprintf(detail, sizeof(detail), "HTTP %ld", status);
                req_fail(r, "watch", detail);
            } else
                req_fail(r, "watch", "the stream ended");
            return;
        }
        phase_done(r, status);
    }
}

static void drive(struct etcd_req *r, curl_socket_t s, int ev)
{
    int running;

    curl_multi_socket_action(r->multi, s, ev, &running);
    read_messages(r);
    if (!r->done)
        r->d->io_due = r->curl_due;
}

static int start_phase(struct etcd_req *r)
{
    struct etcd_src *e = r->d->cfg;
    size_t i = e->next_endpoint;
    const char *ep =
        e->sni_urls && e->sni_urls[i] ? e->sni_urls[i] : e->endpoints[i];
    const char *path = r->phase == PH_AUTH    ? "/v3/auth/authenticate"
                       : r->phase == PH_RANGE ? "/v3/kv/range"
                                              : "/v3/watch";
    char url[600], auth[600];
    long tmo = (long)(e->timeout * 1000);

    if (r->easy) {
        curl_multi_remove_handle(r->multi, r->easy);
        curl_easy_cleanup(r->easy);
        r->easy = NULL;
    }
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    curl_slist_free_all(r->connect_to);
    r->connect_to = NULL;
    free(r->body);
    r->len = 0;
    r->watching = false;
    if (r->phase == PH_AUTH) {
        json_t *o = json_pack("{s:s,s:s}", "name", e->username, "password",
                              e->password);
        r->body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
    } else
        r->body = range_json(e, r->phase == PH_WATCH);
    snprintf(url, sizeof(url), "%.500s%s", ep, path);
    r->easy = curl_easy_init();
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (r->token) {
        snprintf(auth, sizeof(auth), "Authorization: %.500s", r->token);
        r->headers = curl_slist_append(r->headers, auth);
    }
    if (e->connect_to && e->connect_to[i]) {
        r->connect_to = curl_slist_append(NULL, e->connect_to[i]);
        if (!r->connect_to)
            return LB_ERROR;
    }
    if (!r->easy || !r->body || !r->headers)
        return LB_ERROR;
    curl_easy_setopt(r->easy, CURLOPT_URL, url);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, tmo);
    curl_easy_setopt(r->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    /* a watch streams for as long as it lives; the others are bounded */
    if (r->phase != PH_WATCH)
        curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, tmo);
    curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYPEER, e->tls_verify ? 1L : 0L);
    curl_easy_setopt(r->easy, CURLOPT_SSL_VERIFYHOST, e->tls_verify ? 2L : 0L);
    if (e->tls_ca)
        curl_easy_setopt(r->easy, CURLOPT_CAINFO, e->tls_ca);
    if (r->connect_to)
        curl_easy_setopt(r->easy, CURLOPT_CONNECT_TO, r->connect_to);
    lb_disc_count_query(r->d);
    if (curl_multi_add_handle(r->multi, r->easy) != CURLM_OK)
        return LB_ERROR;
    return LB_OK;
}

static void req_free(struct etcd_req *r, bool child)
{
    if (!r)
        return;
    if (child) {
        /* the parent's epoll set: take our descriptors out of curl's
         * hands by closing them; curl's cleanup below then finds them
         * gone (a TLS close_notify written from here would go on the
         * parent's connection) */
        for (int i = 0; i < ETCD_MAX_FDS; i++)
            if (r->fds[i].fd >= 0) {
                close(r->fds[i].fd);
                r->fds[i].events = 0;
            }
    }
    if (r->easy) {
        curl_multi_remove_handle(r->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    if (r->multi)
        curl_multi_cleanup(r->multi);
    curl_slist_free_all(r->headers);
    curl_slist_free_all(r->connect_to);
    free(r->body);
    free(r->buf);
    free(r->token);
    free(r);
}

static void etcd_begin(struct lb_disc *d, uint64_t now)
{
    struct etcd_src *e = d->cfg;
    struct etcd_req *r;

    (void)now;
    pthread_once(&curl_once, curl_init_once);
    r = calloc(1, sizeof(*r));
    if (!r || curl_init_rc != CURLE_OK || !(r->multi = curl_multi_init())) {
        free(r);
        lb_disc_fail(d, "etcd: cannot start the HTTP client", true);
        lb_disc_end(d, false, 0, 5);
        return;
    }
    for (int i = 0; i < ETCD_MAX_FDS; i++)
        r->fds[i].fd = -1;
    r->d = d;
    d->state = r;
    curl_multi_setopt(r->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(r->multi, CURLMOPT_SOCKETDATA, r);
    curl_multi_setopt(r->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(r->multi, CURLMOPT_TIMERDATA, r);
    /* started: resume the watch from the revision held; asked once: a
     * fresh read (a watch would only wait for the next change) */
    r->phase = e->username                 ? PH_AUTH
               : e->revision && d->started ? PH_WATCH
                                           : PH_RANGE;
    if (start_phase(r) != LB_OK)
        req_fail(r, phase_name(r->phase), "cannot start the request");
    d->io_due = 1;
}

static void etcd_timer(struct lb_disc *d, uint64_t now)
{
    struct etcd_req *r = d->state;

    if (!r)
        return;
    if (!r->done && r->watching && d->asked > d->serving) {
        /* asked while the watch runs: the watch is current, so is the
         * published set */
        d->serving = d->asked;
        if (d->answered < d->serving) {
            d->answered = d->serving;
            d->answer_rc = LB_OK;
            pthread_cond_broadcast(&lb_ck.cond);
        }
    }
    if (!r->done && (!r->curl_due || r->curl_due <= now))
        drive(r, CURL_SOCKET_TIMEOUT, 0);
    if (r->done) {
        bool ok = r->ok;

        d->state = NULL;
        req_free(r, false);
        lb_disc_end(d, ok, 0, 5);
        return;
    }
    d->io_due = r->curl_due;
    /* a ticket asked before the watch was created is served above once
     * it is: look again soon */
    if (d->asked > d->serving && (!d->io_due || d->io_due > now + 50000000u))
        d->io_due = now + 50000000u;
}

static void etcd_abort(struct lb_disc *d, bool child)
{
    req_free(d->state, child);
    d->state = NULL;
}

static void etcd_asked(struct lb_disc *d) { d->io_due = 1; }

const struct lb_disc_ops lb_disc_etcd_ops = {
    .kind = 2,
    .begin = etcd_begin,
    .timer = etcd_timer,
    .abort = etcd_abort,
    .asked = etcd_asked,
    .free_cfg = lb_etcd_free_cfg,
};
