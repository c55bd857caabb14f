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
    for (size_t i = 0; (e->sni_urls || e->connect_to) && i < e->nendpoints;
         i++) {
        free(e->sni_urls ? e->sni_urls[i] : NULL);
        free(e->connect_to ? e->connect_to[i] : NULL);
    }
    free(e->sni_urls);
    free(e->connect_to);
    lb_etcd_kvs_clear(e);
    free(e);
}

/* A host name to send as SNI: letters, digits, '-' and '.', at most 253. */
static bool sni_ok(const char *s, size_t n)
{
    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* The https endpoint ep asked under the name sni: the URL, and curl's
 * CONNECT_TO line that sends the connection to ep's own host and port
 * (443 when ep names none).  false: out of memory, or ep is not scheme,
 * host and port alone. */
static bool sni_endpoint(const char *ep, const char *sni, char **url,
                         char **connect_to)
{
    const char *host = ep + 8; /* past "https://" */
    const char *port = NULL, *end;
    size_t hlen;

    if (*host == '[') {
        end = strchr(host, ']');
        if (!end)
            return false;
        hlen = (size_t)(end - host) + 1;
        if (end[1] == ':')
            port = end + 2;
    } else {
        end = strchr(host, ':');
        hlen = end ? (size_t)(end - host) : strlen(host);
        if (end)
            port = end + 1;
    }
    if (hlen == 0 || (port && *port == '\0') || strchr(host, '/'))
        return false;
    if (!port)
        port = "443";
    *url = NULL;
    *connect_to = NULL;
    if (asprintf(url, "https://%s:%s", sni, port) < 0) {
        *url = NULL;
        return false;
    }
    if (asprintf(connect_to, "%s:%s:%.*s:%s", sni, port, (int)hlen, host,
                 port) < 0) {
        *connect_to = NULL;
        return false;
    }
    return true;
}

/* With cfg->tls_sni, each https endpoint's URL and CONNECT_TO line. */
static int set_sni(struct etcd_src *e, const lb_etcd_config *cfg,
                   const char **err)
{
    char *sni;

    if (!cfg->tls_sni)
        return LB_OK;
    if (!sni_ok(cfg->tls_sni, cfg->tls_sni_len)) {
        *err = "etcd: tls.sni must be a host name";
        return LB_ERROR;
    }
    sni = lb_text_dup(cfg->tls_sni, cfg->tls_sni_len);
    e->sni_urls = calloc(e->nendpoints, sizeof(char *));
    e->connect_to = calloc(e->nendpoints, sizeof(char *));
    if (!sni || !e->sni_urls || !e->connect_to) {
        free(sni);
        *err = "out of memory";
        return LB_ERROR;
    }
    for (size_t i = 0; i < e->nendpoints; i++) {
        if (strncmp(e->endpoints[i], "https://", 8) != 0)
            continue;
        if (!sni_endpoint(e->endpoints[i], sni, &e->sni_urls[i],
                          &e->connect_to[i])) {
            free(sni);
            *err = "etcd: with tls.sni, an https endpoint must be scheme, "
                   "host and port (or out of memory)";
            return LB_ERROR;
        }
    }
    free(sni);
    return LB_OK;
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
    if (set_sni(e, cfg, err) != LB_OK) {
        lb_etcd_free_cfg(e);
        return LB_ERROR;
    }
    return lb_disc_install(b, &lb_disc_etcd_ops, e, err);
}
