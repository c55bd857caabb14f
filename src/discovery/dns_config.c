/*
 * dns_config.c - DNS configurations (dns.h): lb_balancer_set_dns checks
 * and copies lb_dns_config (resolvers written as c-ares wants them), and
 * a host name's resolution gets its own (lb_disc_dns_addr_cfg).
 */
#include <arpa/inet.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/dns.h"

void lb_dns_cfg_free(void *p)
{
    struct dns_cfg *c = p;

    if (!c)
        return;
    free(c->name);
    free(c->servers);
    free(c);
}

/* Check one resolver, "ip", "ip:port", "[v6]" or "[v6]:port", and write
 * it as c-ares wants it.  LB_OK or LB_ERROR. */
static int resolver_entry(const char *s, size_t len, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN + 1];
    unsigned char buf[16];
    const char *port = NULL;
    size_t hl;
    bool v6;

    if (len == 0)
        return LB_ERROR;
    if (s[0] == '[') {
        const char *e = memchr(s, ']', len);
        if (!e)
            return LB_ERROR;
        hl = (size_t)(e - s - 1);
        if (hl >= sizeof(host))
            return LB_ERROR;
        memcpy(host, s + 1, hl);
        if ((size_t)(e - s + 1) < len) {
            if (e[1] != ':')
                return LB_ERROR;
            port = e + 2;
        }
        v6 = true;
    } else {
        const char *colon = memchr(s, ':', len);
        const char *last = colon;
        for (const char *p = s; p < s + len; p++)
            if (*p == ':')
                last = p;
        if (colon && colon != last) { /* bare IPv6 */
            hl = len;
            v6 = true;
        } else {
            hl = colon ? (size_t)(colon - s) : len;
            port = colon ? colon + 1 : NULL;
            v6 = false;
        }
        if (hl >= sizeof(host))
            return LB_ERROR;
        memcpy(host, s, hl);
    }
    host[hl] = '\0';
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, buf) != 1)
        return LB_ERROR;
    if (port) {
        size_t pl = (size_t)(s + len - port);
        unsigned long v = 0;
        if (pl == 0 || pl > 5)
            return LB_ERROR;
        for (size_t i = 0; i < pl; i++) {
            if (port[i] < '0' || port[i] > '9')
                return LB_ERROR;
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return LB_ERROR;
        snprintf(out, size, v6 ? "[%s]:%lu" : "%s:%lu", host, v);
    } else
        snprintf(out, size, v6 ? "[%s]" : "%s", host);
    return LB_OK;
}

void *lb_disc_dns_addr_cfg(const char *name, size_t len, uint16_t port,
                           uint32_t weight, double timeout)
{
    struct dns_cfg *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->name = lb_text_dup(name, len);
    if (!c->name) {
        free(c);
        return NULL;
    }
    c->type = DNS_ADDR;
    c->port = port;
    c->weight = weight;
    c->timeout = timeout;
    c->min_ttl = c->max_ttl = 1;
    return c;
}

int lb_balancer_set_dns(lb_balancer *b, const lb_dns_config *cfg,
                        const char **err)
{
    struct dns_cfg *c;

    if (!cfg->name || cfg->name_len == 0 || cfg->name_len > 253 ||
        memchr(cfg->name, '\0', cfg->name_len)) {
        *err = "dns: name must be a non-empty host name (at most 253 bytes)";
        return LB_ERROR;
    }
    if (cfg->type != LB_DNS_A && cfg->type != LB_DNS_AAAA &&
        cfg->type != LB_DNS_SRV) {
        *err = "dns: type must be A, AAAA or SRV";
        return LB_ERROR;
    }
    if (cfg->type != LB_DNS_SRV && cfg->port == 0) {
        *err = "dns: port (1-65535) is required for A and AAAA";
        return LB_ERROR;
    }
    if (cfg->timeout < 0 || cfg->timeout > LB_MAX_TIMEOUT ||
        isnan(cfg->timeout) || (cfg->timeout > 0 && cfg->timeout < 0.001)) {
        *err = "dns: timeout out of range (0.001-86400 s)";
        return LB_ERROR;
    }
    if (!(cfg->min_ttl >= 0 && cfg->min_ttl <= LB_MAX_FREQUENCY) ||
        !(cfg->max_ttl >= 0 && cfg->max_ttl <= LB_MAX_FREQUENCY)) {
        *err = "dns: min_ttl and max_ttl must be 0-1e6 s";
        return LB_ERROR;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        *err = "out of memory";
        return LB_ERROR;
    }
    c->type = cfg->type;
    c->port = cfg->port;
    c->weight = 1;
    c->timeout = cfg->timeout > 0 ? cfg->timeout : 2.0;
    c->min_ttl = cfg->min_ttl > 0 ? cfg->min_ttl : 1.0;
    c->max_ttl = cfg->max_ttl > 0 ? cfg->max_ttl : 300.0;
    if (c->min_ttl < LB_MIN_FREQUENCY)
        c->min_ttl = LB_MIN_FREQUENCY;
    if (c->max_ttl < c->min_ttl) {
        free(c);
        *err = "dns: max_ttl is below min_ttl";
        return LB_ERROR;
    }
    c->name = lb_text_dup(cfg->name, cfg->name_len);
    if (cfg->resolvers && cfg->resolvers_len) {
        size_t cap = cfg->resolvers_len * 2 + 16, at = 0;
        const char *s = cfg->resolvers, *end = s + cfg->resolvers_len;

        c->servers = malloc(cap);
        while (c->servers && s <= end) {
            const char *comma = memchr(s, ',', (size_t)(end - s));
            size_t len = comma ? (size_t)(comma - s) : (size_t)(end - s);
            char one[INET6_ADDRSTRLEN + 16];

            if (resolver_entry(s, len, one, sizeof(one)) != LB_OK) {
                lb_dns_cfg_free(c);
                *err = "dns: a resolver is not \"ip\", \"ip:port\" or "
                       "\"[ipv6]:port\"";
                return LB_ERROR;
            }
            at += (size_t)snprintf(c->servers + at, cap - at, "%s%s",
                                   at ? "," : "", one);
            if (!comma)
                break;
            s = comma + 1;
        }
    }
    if (!c->name || (cfg->resolvers && cfg->resolvers_len && !c->servers)) {
        lb_dns_cfg_free(c);
        *err = "out of memory";
        return LB_ERROR;
    }
    return lb_disc_install(b, &lb_disc_dns_ops, c, err);
}
