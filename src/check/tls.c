/*
 * tls.c - TLS for both check kinds (OpenSSL): one client context per
 * configuration, one session per connection, a non-blocking handshake.
 *
 * With verify on, the handshake fails on a bad chain and the name checked
 * is the SNI name, or, without one, the backend's IP address (what a
 * certificate for an address carries in its subjectAltName).  A verify
 * failure is told apart from other handshake failures by the session's
 * verify result, so the message can say which certificate problem it was.
 */
#include <errno.h>
#include <sys/epoll.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "check/check.h"

SSL_CTX *lb_tls_ctx_new(const char *ca_file, bool verify, const char **err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx) {
        *err = "cannot create a TLS context";
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* A close without close_notify ends the stream like EOF; the HTTP
     * framing, not TLS, tells a truncated response. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (verify) {
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            ERR_clear_error();
            SSL_CTX_free(ctx);
            *err = ca_file ? "cannot load the TLS CA file"
                           : "cannot load the system's CA certificates";
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    return ctx;
}

void lb_tls_ctx_free(SSL_CTX *ctx) { SSL_CTX_free(ctx); }

int lb_tls_begin(struct lb_probe *p)
{
    const struct lb_check_cfg *cfg = p->cfg;
    SSL *ssl;

    p->phase = LB_PHASE_TLS;
    ERR_clear_error();
    ssl = SSL_new(cfg->ctx);
    if (!ssl)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    p->conn.ssl = ssl;
    if (SSL_set_fd(ssl, p->conn.fd) != 1)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    if (cfg->sni && SSL_set_tlsext_host_name(ssl, cfg->sni) != 1)
        return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    if (cfg->verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        int ok = 1;

        if (cfg->sni)
            ok = X509_VERIFY_PARAM_set1_host(param, cfg->sni, 0);
        else if (p->be->family != LB_AF_UNIX)
            ok = X509_VERIFY_PARAM_set1_ip_asc(param, p->be->host);
        if (ok != 1)
            return lb_probe_fail(p, LB_CHECK_ERR_RESOURCE, ENOMEM);
    }
    SSL_set_connect_state(ssl);
    return lb_tls_step(p);
}

int lb_tls_step(struct lb_probe *p)
{
    SSL *ssl = p->conn.ssl;
    unsigned long e;
    long v;
    int rc, se;

    ERR_clear_error();
    errno = 0;
    rc = SSL_do_handshake(ssl);
    if (rc == 1)
        return LB_PROBE_OK;
    se = SSL_get_error(ssl, rc);
    if (se == SSL_ERROR_WANT_READ) {
        p->want = EPOLLIN;
        return LB_PROBE_AGAIN;
    }
    if (se == SSL_ERROR_WANT_WRITE) {
        p->want = EPOLLOUT;
        return LB_PROBE_AGAIN;
    }
    v = SSL_get_verify_result(ssl);
    if (p->cfg->verify && v != X509_V_OK)
        return lb_probe_fail(p, LB_CHECK_ERR_TLS_VERIFY, (int)(v & 0xffffff));
    if (se == SSL_ERROR_SYSCALL || se == SSL_ERROR_ZERO_RETURN) {
        if (errno && errno != ECONNRESET && errno != EPIPE)
            return lb_probe_fail(p, LB_CHECK_ERR_IO, errno);
        e = ERR_peek_error();
        if (!e)
            return lb_probe_fail(p, LB_CHECK_ERR_CLOSED, LB_CHECK_PHASE_TLS);
    }
    e = ERR_peek_error();
    return lb_probe_fail(p, LB_CHECK_ERR_TLS_HANDSHAKE,
                         (int)(ERR_GET_REASON(e) & 0xffffff));
}
