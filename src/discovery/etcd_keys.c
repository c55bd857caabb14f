/*
 * etcd_keys.c - the etcd source's keys (etcd.h): base64 and JSON helpers,
 * the keys under the prefix, each value read as a backend ("addr" or
 * {"addr", "weight", "enabled"}), and the set they make.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/etcd.h"

/* ---- base64 and JSON helpers ---- */

char *lb_etcd_b64_encode(const char *s, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);

    if (out)
        EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

/* Decode to a NUL-terminated string; NULL when not base64. */
char *lb_etcd_b64_decode(const char *s)
{
    size_t n = strlen(s);
    char *out;
    int m;

    if (n % 4)
        return NULL;
    out = malloc(n / 4 * 3 + 1);
    if (!out)
        return NULL;
    m = EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    if (m < 0) {
        free(out);
        return NULL;
    }
    if (n && s[n - 1] == '=')
        m--;
    if (n > 1 && s[n - 2] == '=')
        m--;
    out[m] = '\0';
    return out;
}

/* The gateway writes int64 as strings ("42"); accept both. */
uint64_t lb_etcd_json_u64(json_t *v)
{
    if (json_is_string(v))
        return strtoull(json_string_value(v), NULL, 10);
    if (json_is_integer(v))
        return (uint64_t)json_integer_value(v);
    return 0;
}

/* ---- the keys and the set ---- */

void lb_etcd_kvs_clear(struct etcd_src *e)
{
    for (size_t i = 0; i < e->nkvs; i++) {
        free(e->kvs[i].key);
        free(e->kvs[i].value);
    }
    free(e->kvs);
    e->kvs = NULL;
    e->nkvs = 0;
}

void lb_etcd_kv_delete(struct etcd_src *e, const char *key)
{
    for (size_t i = 0; i < e->nkvs; i++) {
        if (strcmp(e->kvs[i].key, key) == 0) {
            free(e->kvs[i].key);
            free(e->kvs[i].value);
            e->kvs[i] = e->kvs[--e->nkvs];
            return;
        }
    }
}

/* Own key and value (both malloc'd); false when out of memory. */
bool lb_etcd_kv_put(struct etcd_src *e, char *key, char *value)
{
    struct kv *v;

    for (size_t i = 0; i < e->nkvs; i++) {
        if (strcmp(e->kvs[i].key, key) == 0) {
            free(e->kvs[i].value);
            free(key);
            e->kvs[i].value = value;
            return true;
        }
    }
    v = realloc(e->kvs, (e->nkvs + 1) * sizeof(*v));
    if (!v) {
        free(key);
        free(value);
        return false;
    }
    e->kvs = v;
    e->kvs[e->nkvs].key = key;
    e->kvs[e->nkvs].value = value;
    e->nkvs++;
    return true;
}

/* One value: "addr", or {"addr": "...", "weight": n, "enabled": bool}.
 * LB_OK, or LB_ERROR with why. */
static int parse_value(const char *v, lb_backend *out, const char **why)
{
    const char *addr = v, *err;
    uint32_t weight = 1;
    int enable = -1;
    json_t *j = NULL;
    int rc;

    while (*addr == ' ' || *addr == '\t' || *addr == '\n' || *addr == '\r')
        addr++;
    if (*addr == '{' || *addr == '"') {
        json_error_t je;
        json_t *a;

        j = json_loads(addr, JSON_DECODE_ANY, &je);
        if (!j) {
            *why = "not valid JSON";
            return LB_ERROR;
        }
        if (json_is_string(j))
            addr = json_string_value(j);
        else if (json_is_object(j)) {
            json_t *w = json_object_get(j, "weight");
            json_t *en = json_object_get(j, "enabled");

            a = json_object_get(j, "addr");
            if (!json_is_string(a)) {
                json_decref(j);
                *why = "no \"addr\" string";
                return LB_ERROR;
            }
            addr = json_string_value(a);
            if (w) {
                if (!json_is_integer(w) || json_integer_value(w) < 1 ||
                    json_integer_value(w) > LB_MAX_WEIGHT) {
                    json_decref(j);
                    *why = "\"weight\" is not an integer 1-1000";
                    return LB_ERROR;
                }
                weight = (uint32_t)json_integer_value(w);
            }
            if (en) {
                if (!json_is_boolean(en)) {
                    json_decref(j);
                    *why = "\"enabled\" is not a boolean";
                    return LB_ERROR;
                }
                enable = json_is_true(en) ? 1 : 0;
            }
        } else {
            json_decref(j);
            *why = "JSON that is neither a string nor an object";
            return LB_ERROR;
        }
    }
    {
        size_t n = strlen(addr);

        while (n && (addr[n - 1] == ' ' || addr[n - 1] == '\n' ||
                     addr[n - 1] == '\r' || addr[n - 1] == '\t'))
            n--;
        rc = lb_backend_parse(addr, n, weight, out, &err);
    }
    if (rc == LB_OK)
        out->enable = (int8_t)enable;
    else
        *why = err;
    json_decref(j);
    return rc;
}

/* Publish the set the keys make; malformed values are reported (not
 * fatal) and skipped, and a set they would empty is not published. */
void lb_etcd_publish_keys(struct lb_disc *d)
{
    struct etcd_src *e = d->cfg;
    lb_backend *set = malloc((e->nkvs ? e->nkvs : 1) * sizeof(*set));
    size_t n = 0, bad = 0;

    if (!set) {
        lb_disc_fail(d, "etcd: out of memory", true);
        return;
    }
    for (size_t i = 0; i < e->nkvs; i++) {
        const char *why = NULL;

        if (parse_value(e->kvs[i].value, &set[n], &why) == LB_OK)
            n++;
        else {
            char msg[256];

            snprintf(msg, sizeof(msg), "etcd: %.100s: skipped: %.100s",
                     e->kvs[i].key, why);
            lb_disc_fail(d, msg, false);
            bad++;
        }
    }
    if (n == 0 && bad > 0)
        lb_disc_fail(d,
                     "etcd: every value under the prefix is malformed: "
                     "the last set stays",
                     true);
    else
        lb_disc_answer(d, set, n, true, e->revision);
    free(set);
}
