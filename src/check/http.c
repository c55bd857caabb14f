/*
 * http.c - the HTTP check (Pingora's HttpHealthCheck): one HTTP/1.1
 * request, a response whose status is in the expected list, the body
 * drained so a kept-alive connection is left at a message boundary.
 *
 * The response head is read into a buffer of LB_HTTP_MAX_HEADER bytes;
 * body bytes are parsed for framing and dropped, so a probe never holds
 * more than that buffer whatever the server sends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "check/http.h"

/* A probe's HTTP state (lb_probe.state). */
struct http_probe {
    char *out;
    size_t out_len, out_off;
    char *in;
    size_t in_len, in_cap;
    struct lb_http_resp resp;
};

static int request_build(struct lb_probe *p, struct http_probe *h);
static int on_head(struct lb_probe *p, struct http_probe *h, size_t head_len);
static int on_body_done(struct lb_probe *p, struct http_probe *h, size_t extra);
static int http_begin(struct lb_probe *p);
static int http_step(struct lb_probe *p, uint32_t events);
static void http_release(struct lb_probe *p);

/* The Host value when none is configured: the address checked, as a client
 * would write the URL's authority (a unix socket has none). */
static int request_build(struct lb_probe *p, struct http_probe *h)
{
    const struct lb_check_cfg *cfg = p->cfg;
    const struct lb_http_cfg *c = cfg->kind_cfg;
    const lb_backend *be = p->be;
    char buf[LB_ADDR_MAX + 8];
    const char *host = buf;
    size_t host_len;

    if (c->host) {
        host = c->host;
        host_len = strlen(c->host);
    } else if (be->family == LB_AF_UNIX) {
        host_len = (size_t)snprintf(buf, sizeof(buf), "localhost");
    } else {
        uint16_t port = cfg->port ? cfg->port : be->port;
        const char *fmt = be->family == LB_AF_INET6 ? "[%.*s]:%u" : "%.*s:%u";

        host_len = (size_t)snprintf(buf, sizeof(buf), fmt, (int)be->host_len,
                                    be->host, port);
    }
    h->out_len = c->prefix_len + host_len + c->suffix_len;
    h->out = malloc(h->out_len);
    if (!h->out)
        return -1;
    memcpy(h->out, c->prefix, c->prefix_len);
    memcpy(h->out + c->prefix_len, host, host_len);
    memcpy(h->out + c->prefix_len + host_len, c->suffix, c->suffix_len);
    h->out_off = 0;
    return 0;
}

static int http_begin(struct lb_probe *p)
{
    struct http_probe *h = calloc(1, sizeof(*h));

    if (!h)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    p->state = h;
    h->in_cap = LB_HTTP_MAX_HEADER;
    h->in = malloc(h->in_cap);
    if (!h->in || request_build(p, h) < 0)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    p->phase = LB_PHASE_REQUEST;
    return http_step(p, 0);
}

static void http_release(struct lb_probe *p)
{
    struct http_probe *h = p->state;

    if (!h)
        return;
    free(h->out);
    free(h->in);
    free(h);
    p->state = NULL;
}

static int on_head(struct lb_probe *p, struct http_probe *h, size_t head_len)
{
    const struct lb_http_cfg *c = p->cfg->kind_cfg;
    size_t used;
    bool expected = false;
    int rc;

    for (size_t i = 0; i < c->nexpected; i++)
        if (c->expected[i] == h->resp.status)
            expected = true;
    if (!expected)
        return lb_probe_fail(p, LB_CHECK_ERR_HTTP_STATUS, h->resp.status);
    rc = lb_http_parse_body(&h->resp, h->in + head_len, h->in_len - head_len,
                            &used);
    if (rc < 0)
        return lb_probe_fail(p, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
    if (rc == 1)
        return on_body_done(p, h, h->in_len - head_len - used);
    return LB_PROBE_AGAIN;
}

/* `extra`: bytes after the response, which a server must not send before
 * the next request; such a connection is not reused. */
static int on_body_done(struct lb_probe *p, struct http_probe *h, size_t extra)
{
    const struct lb_http_cfg *c = p->cfg->kind_cfg;

    p->keep = c->keepalive && h->resp.keepalive && extra == 0;
    return LB_PROBE_OK;
}

static int http_step(struct lb_probe *p, uint32_t events)
{
    struct http_probe *h = p->state;
    const struct lb_http_cfg *c = p->cfg->kind_cfg;

    (void)events;
    while (p->phase == LB_PHASE_REQUEST) {
        ssize_t n =
            lb_conn_write(p, h->out + h->out_off, h->out_len - h->out_off);
        if (n == -1)
            return LB_PROBE_AGAIN;
        if (n < 0)
            return LB_PROBE_FAIL;
        h->out_off += (size_t)n;
        if (h->out_off == h->out_len) {
            p->phase = LB_PHASE_RESPONSE;
            p->want = EPOLLIN;
        }
    }
    for (;;) {
        bool head = !h->resp.head_done;
        size_t off = head ? h->in_len : 0;
        ssize_t n = lb_conn_read(p, h->in + off, h->in_cap - off);

        if (n == -1)
            return LB_PROBE_AGAIN;
        if (n == -2)
            return LB_PROBE_FAIL;
        if (n == 0) {
            if (!head && h->resp.body == LB_BODY_CLOSE)
                return on_body_done(p, h, 0);
            return lb_probe_fail(p, LB_CHECK_ERR_CLOSED,
                                 LB_CHECK_PHASE_RESPONSE);
        }
        p->got_bytes = true;
        if (head) {
            int rc;

            h->in_len += (size_t)n;
            rc = lb_http_parse_head(&h->resp, h->in, h->in_len, c->head);
            if (rc < 0)
                return lb_probe_fail(p, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
            if (rc > 0) {
                rc = on_head(p, h, (size_t)rc);
                if (rc != LB_PROBE_AGAIN)
                    return rc;
            }
        } else {
            size_t used;
            int rc = lb_http_parse_body(&h->resp, h->in, (size_t)n, &used);

            if (rc < 0)
                return lb_probe_fail(p, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
            if (rc == 1)
                return on_body_done(p, h, (size_t)n - used);
        }
    }
}

const struct lb_check_kind_ops lb_check_kind_http = {
    .name = "http",
    .kind = LB_CHECK_HTTP,
    .config = lb_http_config,
    .cfg_free = lb_http_cfg_free,
    .begin = http_begin,
    .step = http_step,
    .release = http_release,
};
