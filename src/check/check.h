/*
 * check.h - the API of src/check/ to the checker (src/checker/): one probe
 * is one check of one backend in flight, a non-blocking state machine
 * driven by epoll readiness.  The dependency points one way: src/check/
 * knows nothing of the checker or the core.
 *
 *   probe.c        the phase machine: connect (or reuse), TLS, the kind
 *   conn.c         connect, liveness of a kept connection, I/O, close
 *   tls.c          TLS context from the configuration, handshake, verify
 *   config.c       validating and copying lb_check_config; the kinds
 *   tcp.c          the TCP kind: connected (and handshaken) is healthy
 *   http.c         the HTTP kind: request, response, keep-alive
 *   http_config.c  the HTTP kind's configuration: the prebuilt request
 *   http_parse.c   the bounded HTTP/1.x response parser (http.h)
 *
 * A check kind is one file behind struct lb_check_kind_ops; its state (of the
 * configuration, of a probe) is its own and opaque here.
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
#include "text.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

struct lb_probe;
struct lb_check_cfg;

/*
 * A check kind (HAProxy's one file per algorithm, here one per check).
 * config validates and copies the kind's part of `in` into c->kind_cfg
 * (LB_OK, or LB_ERROR with *err a static string; cfg_free then releases
 * what was built), and may set c->sni when TLS has no explicit name;
 * cfg_free frees c->kind_cfg (NULL allowed).  begin starts the kind's
 * exchange once the connection is up (and handshaken), step advances it
 * on readiness, both returning LB_PROBE_*; release frees the probe's
 * kind state, at any point and more than once.  Caller's thread for the
 * config functions, the checker thread for the others.
 */
struct lb_check_kind_ops {
    const char *name;
    int kind; /* LB_CHECK_* */
    int (*config)(struct lb_check_cfg *c, const lb_check_config *in,
                  const char **err);
    void (*cfg_free)(struct lb_check_cfg *c);
    int (*begin)(struct lb_probe *p);
    int (*step)(struct lb_probe *p, uint32_t events);
    void (*release)(struct lb_probe *p);
};

extern const struct lb_check_kind_ops lb_check_kind_tcp;
extern const struct lb_check_kind_ops lb_check_kind_http;

/* A copied, validated configuration; immutable once built, shared by
 * reference between the job and the rounds that started with it. */
struct lb_check_cfg {
    uint32_t refs; /* under the checker mutex */
    const struct lb_check_kind_ops *ops;
    uint64_t timeout_ns;
    uint32_t success;
    uint32_t failure;
    uint16_t port; /* 0: the backend's */
    bool tls;
    bool verify;
    char *sni; /* NULL: none */
    SSL_CTX *ctx;
    void *kind_cfg; /* the kind's own (ops->config) */
};

/* Validate and copy `in` (only borrowed for the call).  NULL with *err (a
 * static string) on a bad value or out of memory.  Any thread. */
struct lb_check_cfg *lb_check_cfg_new(const lb_check_config *in,
                                      const char **err);
/* Free a configuration (NULL allowed) no probe uses any more.  Any
 * thread; takes OpenSSL's locks when it has a TLS context. */
void lb_check_cfg_free(struct lb_check_cfg *c);

/* Text helper of the config functions: no spaces or controls at all
 * (paths, names).  Copies are text.h's lb_text_dup. */
bool lb_check_text_visible(const char *s, size_t len);

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
    uint32_t want;  /* EPOLLIN / EPOLLOUT wanted next */
    bool reused;    /* the connection was kept from an earlier round */
    bool got_bytes; /* the kind received bytes on this connection */
    bool keep;      /* on success: the connection may be kept */
    int err_kind;
    int err_detail;
    void *state; /* the kind's (begin allocates, release frees) */
};

/* probe.c: the checker thread drives a probe through these. */
/* Start a probe (p->cfg and p->be set): reuse *kept when it is still open
 * (ownership moves into the probe; a dead one is closed), else connect.
 * Returns LB_PROBE_*; on AGAIN, p->want says what to wait for. */
int lb_probe_start(struct lb_probe *p, struct lb_conn *kept);
/* Advance on readiness `events` (EPOLL*); returns LB_PROBE_*. */
int lb_probe_step(struct lb_probe *p, uint32_t events);
/* Release what the probe holds; with keep and a successful result, the
 * connection moves to *kept instead of being closed. */
void lb_probe_finish(struct lb_probe *p, bool ok, struct lb_conn *kept);
/* Record a failure (LB_CHECK_ERR_*, detail) and return LB_PROBE_FAIL. */
int lb_probe_fail(struct lb_probe *p, int kind, int detail);

/* conn.c: socket I/O, no policy. */
/* Open a non-blocking socket and connect it to the backend (the port
 * overridden by cfg->port): LB_PROBE_OK when connected at once,
 * LB_PROBE_AGAIN (p->want = EPOLLOUT), or LB_PROBE_FAIL with p->err_*. */
int lb_conn_connect(struct lb_probe *p);
/* After readiness in the connect phase: the same three results. */
int lb_conn_connect_result(struct lb_probe *p);
/* A kept connection is reusable: reading would block (no EOF, reset or
 * unsolicited bytes; TLS records without data are consumed). */
bool lb_conn_alive(const struct lb_conn *c);
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

/* tls.c.  A client context per check configuration, made on the caller's
 * thread by lb_balancer_set_check: NULL with *err (a static string) when
 * the CA file cannot be loaded or OpenSSL is out of memory; owned by the
 * configuration and freed with it (NULL: a no-op). */
SSL_CTX *lb_tls_ctx_new(const char *ca_file, bool verify, const char **err);
void lb_tls_ctx_free(SSL_CTX *ctx);
/* A session per connection, on the checker thread only: begin attaches
 * one to p's connected socket and starts the handshake, step continues it
 * when the socket is ready.  Each returns LB_PROBE_* (p->want set to wait,
 * p->err_* set on failure); the session is the connection's and is freed
 * by lb_conn_close.  No RCU, no lock. */
int lb_tls_begin(struct lb_probe *p);
int lb_tls_step(struct lb_probe *p);

#endif /* LB_CHECK_H */
