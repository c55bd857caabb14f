/*
 * http_config.c - the HTTP kind's configuration: validated, copied, and
 * the request prebuilt around the one part that depends on the backend
 * (the Host value when none is configured).  Every string that ends up on
 * the wire is checked so a configuration cannot inject a header or a
 * request.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check/http.h"

/* Bounds that keep the request well under one read of a server's header
 * buffer (nginx: 1 KiB first, 8 KiB large buffers). */
#define MAX_METHOD 32
#define MAX_PATH 4096
#define MAX_NAME 255
#define MAX_HEADER_VALUE 4096
#define MAX_REQUEST 16384
#define MAX_EXPECTED 64

static bool is_token(const char *s, size_t len);
static bool is_field_value(const char *s, size_t len);
static char *sni_from_host(const char *host);
static int build_request(struct lb_http_cfg *c, const lb_check_config *in,
                         const char **err);

/* RFC 9110 tchar */
static bool is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
            (ch >= 'A' && ch <= 'Z'))
            continue;
        if (!strchr("!#$%&'*+-.^_`|~", ch) || ch == 0)
            return false;
    }
    return true;
}

/* field-value: visible characters, spaces and tabs; never CR, LF, NUL. */
static bool is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 && ch != '\t')
            return false;
        if (ch == 0x7f)
            return false;
    }
    return true;
}

/* The SNI name implied by a Host value: without the port and brackets, and
 * none for an IP literal (RFC 6066 forbids addresses in server_name). */
static char *sni_from_host(const char *host)
{
    unsigned char ip[16];
    char name[256];
    size_t len = strlen(host);
    const char *colon;

    if (host[0] == '[')
        return NULL;
    colon = strrchr(host, ':');
    if (colon)
        len = (size_t)(colon - host);
    if (len == 0 || len >= sizeof(name))
        return NULL;
    memcpy(name, host, len);
    name[len] = '\0';
    if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
        return NULL;
    return lb_text_dup(name, len);
}

static int build_request(struct lb_http_cfg *c, const lb_check_config *in,
                         const char **err)
{
    const char *method = in->method ? in->method : "GET";
    size_t method_len = in->method ? in->method_len : 3;
    const char *path = in->path ? in->path : "/";
    size_t path_len = in->path ? in->path_len : 1;
    bool has_connection = false, has_agent = false;
    size_t cap = MAX_REQUEST + 64, len = 0;
    char *suffix;
    int n;

    if (!is_token(method, method_len) || method_len > MAX_METHOD) {
        *err = "invalid HTTP method";
        return LB_ERROR;
    }
    if (path_len == 0 || path_len > MAX_PATH ||
        !lb_check_text_visible(path, path_len)) {
        *err = "invalid HTTP path";
        return LB_ERROR;
    }
    c->head = method_len == 4 && memcmp(method, "HEAD", 4) == 0;
    c->prefix = malloc(method_len + path_len + 32);
    suffix = malloc(cap);
    if (!c->prefix || !suffix) {
        free(suffix);
        *err = "out of memory";
        return LB_ERROR;
    }
    c->prefix_len = (size_t)sprintf(
        c->prefix, "%.*s %.*s HTTP/1.1\r\nHost: ", (int)method_len, method,
        (int)path_len, path);
    suffix[len++] = '\r';
    suffix[len++] = '\n';
    for (size_t i = 0; i < in->nheaders; i++) {
        const lb_check_header *h = &in->headers[i];

        if (!h->name || !is_token(h->name, h->name_len) ||
            h->name_len > MAX_NAME) {
            *err = "invalid HTTP header name";
            goto fail;
        }
        if ((!h->value && h->value_len) || h->value_len > MAX_HEADER_VALUE ||
            (h->value && !is_field_value(h->value, h->value_len))) {
            *err = "invalid HTTP header value";
            goto fail;
        }
        if (h->name_len == 4 && strncasecmp(h->name, "host", 4) == 0) {
            if (c->host) {
                *err = "Host header given twice";
                goto fail;
            }
            if (h->value_len == 0 ||
                !lb_check_text_visible(h->value, h->value_len)) {
                *err = "invalid Host header";
                goto fail;
            }
            c->host = lb_text_dup(h->value, h->value_len);
            if (!c->host) {
                *err = "out of memory";
                goto fail;
            }
            continue;
        }
        if (h->name_len == 10 && strncasecmp(h->name, "connection", 10) == 0)
            has_connection = true;
        if (h->name_len == 10 && strncasecmp(h->name, "user-agent", 10) == 0)
            has_agent = true;
        if (len + h->name_len + h->value_len + 4 > MAX_REQUEST) {
            *err = "HTTP headers too large";
            goto fail;
        }
        memcpy(suffix + len, h->name, h->name_len);
        len += h->name_len;
        suffix[len++] = ':';
        suffix[len++] = ' ';
        if (h->value_len)
            memcpy(suffix + len, h->value, h->value_len);
        len += h->value_len;
        suffix[len++] = '\r';
        suffix[len++] = '\n';
    }
    n = snprintf(suffix + len, cap - len, "%s%s\r\n",
                 has_agent ? "" : "User-Agent: lb/" LB_VERSION "\r\n",
                 has_connection || c->keepalive ? "" : "Connection: close\r\n");
    len += (size_t)n;
    c->suffix = suffix;
    c->suffix_len = len;
    return LB_OK;
fail:
    free(suffix);
    return LB_ERROR;
}

/* On failure, what was built stays in c->kind_cfg for lb_http_cfg_free. */
int lb_http_config(struct lb_check_cfg *c, const lb_check_config *in,
                   const char **err)
{
    struct lb_http_cfg *h;

    if (in->nheaders && !in->headers) {
        *err = "headers missing";
        return LB_ERROR;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        *err = "out of memory";
        return LB_ERROR;
    }
    c->kind_cfg = h;
    {
        h->keepalive = in->reuse_connection != 0;
        if (in->host) {
            if (in->host_len == 0 || in->host_len > MAX_NAME ||
                !lb_check_text_visible(in->host, in->host_len)) {
                *err = "invalid Host";
                return LB_ERROR;
            }
            h->host = lb_text_dup(in->host, in->host_len);
            if (!h->host) {
                *err = "out of memory";
                return LB_ERROR;
            }
        }
        if (build_request(h, in, err) != LB_OK)
            return LB_ERROR;
        if (in->nexpected > MAX_EXPECTED ||
            (in->nexpected && !in->expected_status)) {
            *err = "expected_status: too many entries";
            return LB_ERROR;
        }
        h->nexpected = in->nexpected ? in->nexpected : 1;
        h->expected = malloc(h->nexpected * sizeof(*h->expected));
        if (!h->expected) {
            *err = "out of memory";
            return LB_ERROR;
        }
        h->expected[0] = 200;
        for (size_t i = 0; i < in->nexpected; i++) {
            if (in->expected_status[i] < 100 || in->expected_status[i] > 599) {
                *err = "expected_status out of range (100-599)";
                return LB_ERROR;
            }
            h->expected[i] = in->expected_status[i];
        }
    }

    /* TLS without a server name of its own: the Host's, when a name */
    if (c->tls && !in->tls_sni && h->host)
        c->sni = sni_from_host(h->host);
    return LB_OK;
}

void lb_http_cfg_free(struct lb_check_cfg *c)
{
    struct lb_http_cfg *h = c->kind_cfg;

    if (!h)
        return;
    free(h->host);
    free(h->prefix);
    free(h->suffix);
    free(h->expected);
    free(h);
    c->kind_cfg = NULL;
}
