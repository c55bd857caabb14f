/*
 * resolve.c - one host name resolved on the checker thread (lb.h's
 * lb_resolve_*): a DNS source with no balancer, whose answer is kept for
 * the caller instead of published.  For a binding that must not block
 * (an nginx worker polls for the answer between yields).
 */
#include <stdlib.h>
#include <string.h>

#include "discovery/discovery.h"

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

lb_resolve *lb_resolve_start(const char *text, size_t len, uint32_t weight,
                             double timeout, const char **err)
{
    const char *colon = len ? memrchr(text, ':', len) : NULL;
    struct lb_disc *d;
    unsigned long port = 0;
    size_t nl;
    void *cfg;

    if (!colon || colon == text) {
        *err = "missing port (expected host:port)";
        return NULL;
    }
    nl = (size_t)(colon - text);
    if (nl > 253) {
        *err = "host name too long";
        return NULL;
    }
    for (size_t i = 0; i < nl; i++)
        if (!name_char(text[i])) {
            *err = "invalid host name";
            return NULL;
        }
    if (colon + 1 == text + len || text + len - colon - 1 > 5) {
        *err = "invalid port";
        return NULL;
    }
    for (const char *p = colon + 1; p < text + len; p++) {
        if (*p < '0' || *p > '9') {
            *err = "invalid port";
            return NULL;
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port < 1 || port > 65535) {
        *err = "port out of range (1-65535)";
        return NULL;
    }
    if (weight < 1 || weight > LB_MAX_WEIGHT) {
        *err = "weight out of range (1-1000)";
        return NULL;
    }
    if (!(timeout > 0) || timeout > LB_MAX_TIMEOUT)
        timeout = 5;
    cfg = lb_disc_dns_addr_cfg(text, nl, (uint16_t)port, weight, timeout);
    d = cfg ? calloc(1, sizeof(*d)) : NULL;
    if (!d) {
        lb_disc_dns_ops.free_cfg(cfg);
        *err = "out of memory";
        return NULL;
    }
    d->ops = &lb_disc_dns_ops;
    d->cfg = cfg;
    d->st.kind = lb_disc_dns_ops.kind;
    if (lb_disc_link_resolve(d, err) != LB_OK) {
        lb_disc_dns_ops.free_cfg(cfg);
        free(d);
        return NULL;
    }
    return (lb_resolve *)d;
}
