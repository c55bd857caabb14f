/*
 * dns.h - the private API between dns.c (the requests, on the checker
 * thread) and dns_config.c (checking and copying configurations: lb.h's
 * lb_balancer_set_dns, lb_resolve's).  Callers' threads; immutable once
 * made.
 */
#ifndef LB_DISCOVERY_DNS_H
#define LB_DISCOVERY_DNS_H

#include <stdint.h>

#include "discovery/discovery.h"

struct dns_cfg {
    char *name;
    int type; /* LB_DNS_*, or DNS_ADDR: a host name as getaddrinfo does */
    uint16_t port;
    uint32_t weight; /* DNS_ADDR: every address's */
    char *servers;   /* c-ares' "host:port,..." or NULL */
    double timeout, min_ttl, max_ttl;
};

/* A host name's addresses, both families, /etc/hosts first (c-ares'
 * ares_getaddrinfo, "fb" lookups as resolv.conf says): what
 * lb_resolve_start asks for. */
#define DNS_ADDR 0

/* Free a configuration (NULL: a no-op). */
void lb_dns_cfg_free(void *cfg);

#endif /* LB_DISCOVERY_DNS_H */
