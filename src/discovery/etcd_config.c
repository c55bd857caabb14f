/*
 * etcd_config.c - etcd configurations (etcd.h): lb_balancer_set_etcd
 * checks and copies lb_etcd_config (endpoints split at commas), and
 * lb_etcd_free_cfg frees a copy with the keys it came to hold.
 */
#include <stdlib.h>
#include <string.h>

#include "discovery/etcd.h"

void lb_etcd_free_cfg(void *p)
{
    struct etcd_src *e = p;

    if (!e)
        return;
    for (size_t i = 0; i < e->nendpoints; i++)
        free(e->endpoints[i]);
    free(e->endpoints);
    free(e->prefix);
    free(e->username);
    free(e->password);
    free(e->tls_ca);
    lb_etcd_kvs_clear(e);
    free(e);
}

int lb_balancer_set_etcd(lb_balancer *b, const lb_etcd_config *cfg,
                         const char **err)
{
    struct etcd_src *e;
    const char *s, *end;

    if (!cfg->endpoints || cfg->endpoints_len == 0) {
        *err = "etcd: endpoints must not be empty";
        return LB_ERROR;
    }
    if (!cfg->prefix || cfg->prefix_len == 0) {
        *err = "etcd: prefix must not be empty";
        return LB_ERROR;
    }
    if (cfg->timeout < 0 || cfg->timeout > LB_MAX_TIMEOUT ||
        cfg->timeout != cfg->timeout) {
        *err = "etcd: timeout out of range (0-86400 s)";
        return LB_ERROR;
    }
    if (!cfg->username != !cfg->password) {
        *err = "etcd: username and password go together";
        return LB_ERROR;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        *err = "out of memory";
        return LB_ERROR;
    }
    e->timeout = cfg->timeout > 0 ? cfg->timeout : 2.0;
    e->tls_verify = cfg->tls_verify != 0;
    e->prefix = lb_text_dup(cfg->prefix, cfg->prefix_len);
    e->prefix_len = cfg->prefix_len;
    if (cfg->username) {
        e->username = lb_text_dup(cfg->username, cfg->username_len);
        e->password = lb_text_dup(cfg->password, cfg->password_len);
    }
    if (cfg->tls_ca && cfg->tls_ca_len)
        e->tls_ca = lb_text_dup(cfg->tls_ca, cfg->tls_ca_len);
    s = cfg->endpoints;
    end = s + cfg->endpoints_len;
    while (s < end) {
        const char *comma = memchr(s, ',', (size_t)(end - s));
        size_t len = comma ? (size_t)(comma - s) : (size_t)(end - s);
        char **v;

        while (len && s[len - 1] == '/')
            len--;
        if (!((len > 7 && strncmp(s, "http://", 7) == 0) ||
              (len > 8 && strncmp(s, "https://", 8) == 0)) ||
            memchr(s, '\0', len)) {
            lb_etcd_free_cfg(e);
            *err = "etcd: an endpoint is not an http:// or https:// URL";
            return LB_ERROR;
        }
        v = realloc(e->endpoints, (e->nendpoints + 1) * sizeof(*v));
        if (!v) {
            lb_etcd_free_cfg(e);
            *err = "out of memory";
            return LB_ERROR;
        }
        e->endpoints = v;
        e->endpoints[e->nendpoints] = lb_text_dup(s, len);
        if (!e->endpoints[e->nendpoints++]) {
            lb_etcd_free_cfg(e);
            *err = "out of memory";
            return LB_ERROR;
        }
        s = comma ? comma + 1 : end;
    }
    if (!e->prefix || (cfg->username && (!e->username || !e->password))) {
        lb_etcd_free_cfg(e);
        *err = "out of memory";
        return LB_ERROR;
    }
    return lb_disc_install(b, &lb_disc_etcd_ops, e, err);
}
