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

#include "check/check.h"

static int request_build(struct lb_probe *p);
static int on_head(struct lb_probe *p, size_t head_len);
static int on_body_done(struct lb_probe *p, size_t extra);

/* The Host value when none is configured: the address checked, as a client
 * would write the URL's authority (a unix socket has none). */
static int request_build(struct lb_probe *p)
{
    const struct lb_check_cfg *c = p->cfg;
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
        uint16_t port = c->port ? c->port : be->port;
        const char *fmt = be->family == LB_AF_INET6 ? "[%.*s]:%u" : "%.*s:%u";

        host_len = (size_t)snprintf(buf, sizeof(buf), fmt, (int)be->host_len,
                                    be->host, port);
    }
    p->out_len = c->prefix_len + host_len + c->suffix_len;
    p->out = malloc(p->out_len);
    if (!p->out)
        return -1;
    memcpy(p->out, c->prefix, c->prefix_len);
    memcpy(p->out + c->prefix_len, host, host_len);
    memcpy(p->out + c->prefix_len + host_len, c->suffix, c->suffix_len);
    p->out_off = 0;
    return 0;
}

int lb_http_begin(struct lb_probe *p)
{
    memset(&p->resp, 0, sizeof(p->resp));
    p->in_len = 0;
    p->in_cap = LB_HTTP_MAX_HEADER;
    p->in = malloc(p->in_cap);
    if (!p->in || request_build(p) < 0)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    p->phase = LB_PHASE_REQUEST;
    return lb_http_step(p);
}

void lb_http_release(struct lb_probe *p)
{
    free(p->out);
    free(p->in);
    p->out = p->in = NULL;
    p->out_len = p->out_off = p->in_len = p->in_cap = 0;
}

static int on_head(struct lb_probe *p, size_t head_len)
{
    const struct lb_check_cfg *c = p->cfg;
    size_t used;
    bool expected = false;
    int rc;

    for (size_t i = 0; i < c->nexpected; i++)
        if (c->expected[i] == p->resp.status)
            expected = true;
    if (!expected)
        return lb_probe_fail(p, LB_CHECK_ERR_HTTP_STATUS, p->resp.status);
    rc = lb_http_parse_body(&p->resp, p->in + head_len, p->in_len - head_len,
                            &used);
    if (rc < 0)
        return lb_probe_fail(p, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
    if (rc == 1)
        return on_body_done(p, p->in_len - head_len - used);
    return LB_PROBE_AGAIN;
}

/* `extra`: bytes after the response, which a server must not send before
 * the next request; such a connection is not reused. */
static int on_body_done(struct lb_probe *p, size_t extra)
{
    p->keep = p->cfg->keepalive && p->resp.keepalive && extra == 0;
    return LB_PROBE_OK;
}

int lb_http_step(struct lb_probe *p)
{
    while (p->phase == LB_PHASE_REQUEST) {
        ssize_t n =
            lb_conn_write(p, p->out + p->out_off, p->out_len - p->out_off);
        if (n == -1)
            return LB_PROBE_AGAIN;
        if (n < 0)
            return LB_PROBE_FAIL;
        p->out_off += (size_t)n;
        if (p->out_off == p->out_len) {
            p->phase = LB_PHASE_RESPONSE;
            p->want = EPOLLIN;
        }
    }
    for (;;) {
        bool head = !p->resp.head_done;
        size_t off = head ? p->in_len : 0;
        ssize_t n = lb_conn_read(p, p->in + off, p->in_cap - off);

        if (n == -1)
            return LB_PROBE_AGAIN;
        if (n == -2)
            return LB_PROBE_FAIL;
        if (n == 0) {
            if (!head && p->resp.body == LB_BODY_CLOSE)
                return on_body_done(p, 0);
            return lb_probe_fail(p, LB_CHECK_ERR_CLOSED,
                                 LB_CHECK_PHASE_RESPONSE);
        }
        p->got_bytes = true;
        if (head) {
            int rc;

            p->in_len += (size_t)n;
            rc = lb_http_parse_head(&p->resp, p->in, p->in_len, p->cfg->head);
            if (rc < 0)
                return lb_probe_fail(p, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
            if (rc > 0) {
                rc = on_head(p, (size_t)rc);
                if (rc != LB_PROBE_AGAIN)
                    return rc;
            }
        } else {
            size_t used;
            int rc = lb_http_parse_body(&p->resp, p->in, (size_t)n, &used);

            if (rc < 0)
                return lb_probe_fail(p, LB_CHECK_ERR_HTTP_MALFORMED, -rc);
            if (rc == 1)
                return on_body_done(p, (size_t)n - used);
        }
    }
}
