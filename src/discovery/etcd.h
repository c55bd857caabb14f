/*
 * etcd.h - the private API between etcd.c (the HTTP side: authenticate,
 * range, watch) and etcd_keys.c (the keys under the prefix, their values,
 * the set they make).  Everything runs with lb_ck.lock held, on the
 * checker thread (discovery.h).
 */
#ifndef LB_DISCOVERY_ETCD_H
#define LB_DISCOVERY_ETCD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "discovery/discovery.h"

struct kv {
    char *key;
    char *value;
};

/* The configuration, and what outlives a request: the keys and the
 * revision they reflect. */
struct etcd_src {
    char **endpoints;
    size_t nendpoints, next_endpoint;
    char *prefix;
    size_t prefix_len;
    double timeout;
    char *username, *password;
    bool tls_verify;
    char *tls_ca;
    /* with tls.sni, per endpoint (NULL for http:// ones): the URL asked,
     * "https://SNI:PORT", and curl's CONNECT_TO "SNI:PORT:HOST:PORT" */
    char **sni_urls, **connect_to;
    /* state */
    struct kv *kvs;
    size_t nkvs;
    uint64_t revision; /* 0: not read yet */
};

/* base64 (OpenSSL's EVP blocks): malloc'd, NUL-terminated; NULL when out
 * of memory or (decode) not base64. */
char *lb_etcd_b64_encode(const char *s, size_t n);
char *lb_etcd_b64_decode(const char *s);
/* The gateway writes int64 as strings ("42"); both are read. */
uint64_t lb_etcd_json_u64(json_t *v);
/* The keys: put takes over key and value (false: out of memory, both
 * freed); delete of an absent key is a no-op. */
void lb_etcd_kvs_clear(struct etcd_src *e);

/* Free a configuration made by lb_balancer_set_etcd (etcd_config.c), with
 * its keys; NULL is fine.  The discovery side's free_cfg: called with
 * lb_ck.lock held or on a configuration no thread has seen yet. */
void lb_etcd_free_cfg(void *p);
void lb_etcd_kv_delete(struct etcd_src *e, const char *key);
bool lb_etcd_kv_put(struct etcd_src *e, char *key, char *value);
/* Publish the set the keys make (lb_disc_answer, with the revision):
 * malformed values are reported (not fatal) and skipped, and a set they
 * would empty is not published (a fatal report instead). */
void lb_etcd_publish_keys(struct lb_disc *d);

#endif /* LB_DISCOVERY_ETCD_H */
