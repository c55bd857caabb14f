/*
 * check.h - the private API between the checker thread (src/checker.c) and
 * the check kinds (src/check/): one probe is one check of one backend in
 * flight, a non-blocking state machine driven by epoll readiness.
 *
 *   conn.c        connect, liveness of a kept connection, I/O, close
 *   tls.c         TLS context from the configuration, handshake, verify
 *   tcp.c         the TCP check: connected (and handshaken) is healthy
 *   http.c        the HTTP check: request, response, keep-alive
 *   http_parse.c  the bounded HTTP/1.x response parser
 *   config.c      validating and copying lb_check_config
 *
 * Everything here runs on the checker thread only, except the config
 * functions (caller's thread, before the configuration is published).
 */
#ifndef LB_CHECK_H
#define LB_CHECK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lb.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

/* A copied, validated configuration; immutable once built, shared by
 * reference between the job and the rounds that started with it. */
struct lb_check_cfg {
    uint32_t refs; /* under the checker mutex */
    int kind;
    uint64_t timeout_ns;
    uint32_t success;
    uint32_t failure;
    bool tls;
    bool verify;
    char *sni; /* NULL: none */
    SSL_CTX *ctx;
    /* HTTP: the request is prefix + Host value + suffix */
    bool head; /* HEAD: the response has no body */
    bool keepalive;
    uint16_t port;
    char *host; /* NULL: the backend's address text */
    char *prefix;
    size_t prefix_len;
    char *suffix;
    size_t suffix_len;
    uint16_t *expected;
    size_t nexpected;
};

struct lb_check_cfg *lb_check_cfg_new(const lb_check_config *in,
                                      const char **err);
void lb_check_cfg_free(struct lb_check_cfg *c);

/* A connection: the socket and, with TLS, its session. */
struct lb_conn {
    int fd;
    int epfd; /* the epoll set fd is registered in, or -1 */
    SSL *ssl;
    /* For the checker's reuse policy: when the connection first served a
     * check (0: not yet) and how many it served.  Zero for a new one. */
    uint64_t born_ns;
    uint32_t uses;
};

/* Response parser state (http_parse.c).  Fields after `status` are what a
 * caller reads once the head is complete. */
enum lb_http_body {
    LB_BODY_NONE,
    LB_BODY_LENGTH,
    LB_BODY_CHUNKED,
    LB_BODY_CLOSE
};

struct lb_http_resp {
    /* head */
    int status;
    int minor; /* HTTP/1.minor */
    bool keepalive;
    bool head_done;
    int body;        /* enum lb_http_body */
    uint64_t length; /* LB_BODY_LENGTH: bytes left */
    uint64_t body_seen;
    /* chunked decoder */
    int cstate;
    uint64_t chunk_left;
    unsigned line_len;
    unsigned hex_digits;
    bool body_done;
};

/* Parse the response head from buf[0..len).  Returns the head's length
 * when complete (resp->head_done set), 0 when more bytes are needed, or
 * -LB_HTTP_BAD_* on a malformed or oversized head.  `head_request`: the
 * response to HEAD has no body. */
int lb_http_parse_head(struct lb_http_resp *r, const char *buf, size_t len,
                       bool head_request);
/* Feed body bytes; returns 0 (more wanted), 1 (body complete: r->body_done)
 * or -LB_HTTP_BAD_*.  *used receives how many bytes belonged to the body. */
int lb_http_parse_body(struct lb_http_resp *r, const char *buf, size_t len,
                       size_t *used);

/* Results of a probe step. */
#define LB_PROBE_AGAIN 0
#define LB_PROBE_OK 1
#define LB_PROBE_FAIL 2

enum lb_probe_phase {
    LB_PHASE_CONNECT = LB_CHECK_PHASE_CONNECT,
    LB_PHASE_TLS = LB_CHECK_PHASE_TLS,
    LB_PHASE_REQUEST = LB_CHECK_PHASE_REQUEST,
    LB_PHASE_RESPONSE = LB_CHECK_PHASE_RESPONSE
};

struct lb_probe {
    const struct lb_check_cfg *cfg;
    const lb_backend *be;
    struct lb_conn conn;
    int phase;
    uint32_t want; /* EPOLLIN / EPOLLOUT wanted next */
    bool reused;   /* the connection was kept from an earlier round */
    bool got_bytes;
    bool keep; /* on success: the connection may be kept */
    int err_kind;
    int err_detail;
    /* HTTP */
    char *out;
    size_t out_len, out_off;
    char *in;
    size_t in_len, in_cap;
    struct lb_http_resp resp;
};

/* conn.c */
/* Start a probe: reuse *kept when it is still open (ownership moves into
 * the probe; a dead one is closed), else connect.  Returns LB_PROBE_*. */
int lb_probe_start(struct lb_probe *p, struct lb_conn *kept);
/* Advance on readiness `events` (EPOLL*); returns LB_PROBE_*. */
int lb_probe_step(struct lb_probe *p, uint32_t events);
/* Release what the probe holds; with keep and a successful result, the
 * connection moves to *kept instead of being closed. */
void lb_probe_finish(struct lb_probe *p, bool ok, struct lb_conn *kept);
/* Deregister (from conn->epfd, when set) and close; sends nothing, so it
 * is also how a forked child drops connections it shares with its parent
 * (after setting epfd to -1: the epoll set is shared too). */
void lb_conn_close(struct lb_conn *c);
/* Hand the connection in *src over to *dst, out of any epoll set; *src is
 * left empty. */
void lb_conn_move(struct lb_conn *dst, struct lb_conn *src);
/* Read/write through TLS or not.  >0 bytes, 0 peer closed, -1 would block
 * (p->want set), -2 error (p->err_* set). */
ssize_t lb_conn_read(struct lb_probe *p, char *buf, size_t len);
ssize_t lb_conn_write(struct lb_probe *p, const char *buf, size_t len);
int lb_probe_fail(struct lb_probe *p, int kind, int detail);

/* tls.c */
SSL_CTX *lb_tls_ctx_new(const char *ca_file, bool verify, const char **err);
void lb_tls_ctx_free(SSL_CTX *ctx);
int lb_tls_begin(struct lb_probe *p);
int lb_tls_step(struct lb_probe *p);

/* tcp.c / http.c: the kind's work once connected (and handshaken). */
int lb_tcp_connected(struct lb_probe *p);
int lb_http_begin(struct lb_probe *p);
int lb_http_step(struct lb_probe *p);
void lb_http_release(struct lb_probe *p);

#endif /* LB_CHECK_H */
