/*
 * backend.c - backend addresses: parsing, canonical text, order.
 *
 * Accepted forms, as Pingora's Backend::new and nginx's `server`:
 *   1.2.3.4:80   [::1]:80   unix:/path
 * The canonical text is what inet_ntop prints (so "[0:0::1]:80" becomes
 * "[::1]:80"); identity and order use the bytes, never the text.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "lb.h"

static int parse_port(const char *p, size_t len, uint16_t *out,
                      const char **err);
static int fill_inet(lb_backend *out, int family, const void *ip, uint16_t port,
                     const char **err);

#define UNIX_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

static int parse_port(const char *p, size_t len, uint16_t *out,
                      const char **err)
{
    uint32_t v = 0;

    if (len == 0 || len > 5) {
        *err = "invalid port";
        return LB_ERROR;
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            *err = "invalid port";
            return LB_ERROR;
        }
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v == 0 || v > 65535) {
        *err = "port out of range (1-65535)";
        return LB_ERROR;
    }
    *out = (uint16_t)v;
    return LB_OK;
}

static int fill_inet(lb_backend *out, int family, const void *ip, uint16_t port,
                     const char **err)
{
    char host[INET6_ADDRSTRLEN];
    int n;

    if (!inet_ntop(family, ip, host, sizeof(host))) {
        *err = "invalid address";
        return LB_ERROR;
    }
    memset(out->ip, 0, sizeof(out->ip));
    if (family == AF_INET) {
        out->family = LB_AF_INET;
        memcpy(out->ip, ip, 4);
        n = snprintf(out->addr, sizeof(out->addr), "%s:%u", host, port);
    } else {
        out->family = LB_AF_INET6;
        memcpy(out->ip, ip, 16);
        n = snprintf(out->addr, sizeof(out->addr), "[%s]:%u", host, port);
    }
    out->addr_len = (uint16_t)n;
    out->host_len = (uint16_t)strlen(host);
    memcpy(out->host, host, out->host_len + 1);
    out->port = port;
    return LB_OK;
}

int lb_backend_parse(const char *text, size_t len, uint32_t weight,
                     lb_backend *out, const char **err)
{
    char buf[LB_ADDR_MAX];
    const char *colon;

    memset(out, 0, sizeof(*out));
    out->enable = -1;
    if (weight < 1 || weight > LB_MAX_WEIGHT) {
        *err = "weight out of range (1-1000)";
        return LB_ERROR;
    }
    out->weight = weight;
    if (len == 0) {
        *err = "empty address";
        return LB_ERROR;
    }
    if (memchr(text, '\0', len)) {
        *err = "address contains a NUL byte";
        return LB_ERROR;
    }

    if (len > 5 && memcmp(text, "unix:", 5) == 0) {
        size_t plen = len - 5;
        if (plen > UNIX_PATH_MAX) {
            *err = "unix socket path too long";
            return LB_ERROR;
        }
        out->family = LB_AF_UNIX;
        memcpy(out->addr, text, len);
        out->addr[len] = '\0';
        out->addr_len = (uint16_t)len;
        memcpy(out->host, text + 5, plen);
        out->host[plen] = '\0';
        out->host_len = (uint16_t)plen;
        return LB_OK;
    }
    if (len == 5 && memcmp(text, "unix:", 5) == 0) {
        *err = "empty unix socket path";
        return LB_ERROR;
    }

    if (text[0] == '[') {
        const char *close = memchr(text, ']', len);
        unsigned char ip6[16];
        size_t hlen;
        uint16_t port;

        if (!close || (size_t)(close - text) + 1 >= len || close[1] != ':') {
            *err = "expected [ipv6]:port";
            return LB_ERROR;
        }
        hlen = (size_t)(close - text - 1);
        if (hlen == 0 || hlen >= sizeof(buf)) {
            *err = "invalid IPv6 address";
            return LB_ERROR;
        }
        memcpy(buf, text + 1, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET6, buf, ip6) != 1) {
            *err = "invalid IPv6 address";
            return LB_ERROR;
        }
        if (parse_port(close + 2, len - (size_t)(close - text) - 2, &port,
                       err) != LB_OK)
            return LB_ERROR;
        return fill_inet(out, AF_INET6, ip6, port, err);
    }

    colon = memchr(text, ':', len);
    if (!colon) {
        *err = "missing port (expected host:port)";
        return LB_ERROR;
    }
    if (memchr(colon + 1, ':', len - (size_t)(colon - text) - 1)) {
        *err = "IPv6 address needs brackets ([addr]:port)";
        return LB_ERROR;
    }
    {
        size_t hlen = (size_t)(colon - text);
        unsigned char ip4[4];
        uint16_t port;

        if (hlen == 0 || hlen >= sizeof(buf)) {
            *err = "invalid IPv4 address";
            return LB_ERROR;
        }
        memcpy(buf, text, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET, buf, ip4) != 1) {
            *err = "invalid IPv4 address";
            return LB_ERROR;
        }
        if (parse_port(colon + 1, len - hlen - 1, &port, err) != LB_OK)
            return LB_ERROR;
        return fill_inet(out, AF_INET, ip4, port, err);
    }
}

/* A host name: letters, digits, '-', '.', and not all digits and dots
 * (that would be a malformed IPv4 address, reported as such). */
static int looks_like_hostname(const char *s, size_t len)
{
    int alpha = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' ||
            c == '_')
            alpha = 1;
        else if (!((c >= '0' && c <= '9') || c == '.'))
            return 0;
    }
    return alpha;
}

int lb_backend_resolve(const char *text, size_t len, uint32_t weight,
                       lb_backend *out, int max, const char **err)
{
    lb_backend one;
    const char *colon;
    char name[256];
    char port_text[8];
    struct addrinfo hints, *res = NULL, *ai;
    uint16_t port;
    int found = 0, rc;

    if (lb_backend_parse(text, len, weight, &one, err) == LB_OK) {
        if (max > 0)
            out[0] = one;
        return 1;
    }
    colon = memchr(text, ':', len);
    if (!colon || text[0] == '[' || (len >= 5 && !memcmp(text, "unix:", 5)))
        return LB_ERROR; /* *err from lb_backend_parse */
    if (!looks_like_hostname(text, (size_t)(colon - text))) {
        /* Not all digits and dots either: say it is a bad name rather
         * than a bad IPv4 address. */
        if (strspn(text, "0123456789.") < (size_t)(colon - text) &&
            !memchr(colon + 1, ':', len - (size_t)(colon - text) - 1))
            *err = "invalid host name";
        return LB_ERROR;
    }
    if ((size_t)(colon - text) >= sizeof(name)) {
        *err = "host name too long";
        return LB_ERROR;
    }
    if (weight < 1 || weight > LB_MAX_WEIGHT) {
        *err = "weight out of range (1-1000)";
        return LB_ERROR;
    }
    if (parse_port(colon + 1, len - (size_t)(colon - text) - 1, &port, err) !=
        LB_OK)
        return LB_ERROR;
    memcpy(name, text, (size_t)(colon - text));
    name[colon - text] = '\0';
    snprintf(port_text, sizeof(port_text), "%u", port);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(name, port_text, &hints, &res);
    if (rc != 0) {
        *err = "host name does not resolve";
        return LB_ERROR;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        const void *ip;
        int dup = 0;

        if (ai->ai_family == AF_INET)
            ip = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        else if (ai->ai_family == AF_INET6)
            ip = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        else
            continue;
        memset(&one, 0, sizeof(one));
        one.enable = -1;
        one.weight = weight;
        if (fill_inet(&one, ai->ai_family, ip, port, err) != LB_OK)
            continue;
        for (int i = 0; i < found && i < max; i++)
            if (lb_backend_compare(&out[i], &one) == 0)
                dup = 1;
        if (dup)
            continue;
        if (found < max)
            out[found] = one;
        found++;
    }
    freeaddrinfo(res);
    if (found == 0) {
        *err = "host name has no IPv4 or IPv6 address";
        return LB_ERROR;
    }
    return found;
}

int lb_backend_compare_address(const lb_backend *a, const lb_backend *b)
{
    int c;

    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    if (a->family == LB_AF_UNIX) {
        size_t n = a->host_len < b->host_len ? a->host_len : b->host_len;
        c = memcmp(a->host, b->host, n);
        if (c == 0 && a->host_len != b->host_len)
            c = a->host_len < b->host_len ? -1 : 1;
    } else {
        c = memcmp(a->ip, b->ip, a->family == LB_AF_INET ? 4 : 16);
        if (c == 0 && a->port != b->port)
            c = a->port < b->port ? -1 : 1;
    }
    return c < 0 ? -1 : c > 0;
}

int lb_backend_compare(const lb_backend *a, const lb_backend *b)
{
    int c = lb_backend_compare_address(a, b);

    if (c != 0)
        return c;
    if (a->weight != b->weight)
        return a->weight < b->weight ? -1 : 1;
    return 0;
}
