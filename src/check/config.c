/*
 * config.c - validate and copy an lb_check_config: the part every kind
 * shares (timeout, thresholds, port, TLS), then the kind's own part
 * through its ops (one row per kind below).
 *
 * The caller's struct (often filled by LuaJIT's FFI from a Lua table) is
 * only borrowed for the call: everything kept is copied.
 */
#include <stdlib.h>
#include <string.h>

#include "check/check.h"

#define MAX_NAME 255
#define MAX_TIMEOUT LB_MAX_TIMEOUT
#define MAX_THRESHOLD LB_MAX_THRESHOLD

/* The check kinds: a new kind is one file and one row. */
static const struct lb_check_kind_ops *const kinds[] = {
    &lb_check_kind_tcp,
    &lb_check_kind_http,
};

static const struct lb_check_kind_ops *kind_find(int kind)
{
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (kinds[i]->kind == kind)
            return kinds[i];
    return NULL;
}

/* No spaces or controls at all (path, host, SNI). */
bool lb_check_text_visible(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch == 0x7f)
            return false;
    }
    return true;
}

struct lb_check_cfg *lb_check_cfg_new(const lb_check_config *in,
                                      const char **err)
{
    struct lb_check_cfg *c;
    const struct lb_check_kind_ops *ops = kind_find(in->kind);

    if (!ops) {
        *err = "unknown health check kind";
        return NULL;
    }
    if (!(in->timeout >= 0) || in->timeout > MAX_TIMEOUT) {
        *err = "timeout out of range";
        return NULL;
    }
    if (in->consecutive_success > MAX_THRESHOLD ||
        in->consecutive_failure > MAX_THRESHOLD) {
        *err = "consecutive_success/failure out of range";
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        *err = "out of memory";
        return NULL;
    }
    c->refs = 1;
    c->ops = ops;
    c->timeout_ns =
        in->timeout > 0 ? (uint64_t)(in->timeout * 1e9) : 1000000000u;
    if (c->timeout_ns == 0)
        c->timeout_ns = 1;
    c->success = in->consecutive_success ? in->consecutive_success : 1;
    c->failure = in->consecutive_failure ? in->consecutive_failure : 1;
    c->port = in->port;
    c->tls = in->tls != 0;
    c->verify = in->tls_verify != 0;

    if (ops->config && ops->config(c, in, err) != LB_OK)
        goto fail;

    if (c->tls) {
        char *ca = NULL;

        if (in->tls_sni) {
            if (in->tls_sni_len == 0 || in->tls_sni_len > MAX_NAME ||
                !lb_check_text_visible(in->tls_sni, in->tls_sni_len)) {
                *err = "invalid TLS server name";
                goto fail;
            }
            free(c->sni);
            c->sni = lb_text_dup(in->tls_sni, in->tls_sni_len);
        }
        if (in->tls_ca) {
            if (in->tls_ca_len == 0 || memchr(in->tls_ca, 0, in->tls_ca_len)) {
                *err = "invalid CA file name";
                goto fail;
            }
            ca = lb_text_dup(in->tls_ca, in->tls_ca_len);
            if (!ca) {
                *err = "out of memory";
                goto fail;
            }
        }
        c->ctx = lb_tls_ctx_new(ca, c->verify, err);
        free(ca);
        if (!c->ctx)
            goto fail;
    }
    return c;
fail:
    lb_check_cfg_free(c);
    return NULL;
}

void lb_check_cfg_free(struct lb_check_cfg *c)
{
    if (!c)
        return;
    if (c->ctx)
        lb_tls_ctx_free(c->ctx);
    if (c->ops && c->ops->cfg_free)
        c->ops->cfg_free(c);
    free(c->sni);
    free(c);
}
