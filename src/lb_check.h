/*
 * lb_check.h - the C API of health checks (src/checker/, src/check/).
 * Part of lb's C API: included by lb.h (include lb.h, not this file).
 */
#ifndef LB_H_CHECK
#define LB_H_CHECK

#include "lb.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Built-in health checks run on one background thread per process (epoll,
 * non-blocking sockets), shared by every balancer.  The thread starts when a
 * balancer first needs it (a round, or periodic checks) and is stopped and
 * joined when the last user is done.  Results go into the backends' health
 * records with Pingora's observe_health thresholds; flips are queued per
 * balancer and drained by lb_balancer_events on the caller's thread.
 */
enum lb_check_kind {
    LB_CHECK_NONE = 0, /* no built-in check (custom Lua checks, or none) */
    LB_CHECK_TCP = 1,  /* connect (+ TLS handshake with tls) */
    LB_CHECK_HTTP = 2, /* one HTTP/1.1 request, status must be expected */
};

/* One extra request header; neither string may contain CR, LF or NUL, the
 * name must be an HTTP token. */
typedef struct lb_check_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} lb_check_header;

/*
 * A check configuration, plain C types so LuaJIT's FFI can fill it.  Every
 * string is pointer + length (NULL: the default); lb_balancer_set_check
 * copies everything it keeps, the caller may free the struct and its
 * strings as soon as the call returns.  Zero-initialised means "defaults".
 */
typedef struct lb_check_config {
    int32_t kind;                 /* enum lb_check_kind */
    double timeout;               /* seconds for the whole check; 0: 1 s */
    uint32_t consecutive_success; /* 0: 1 */
    uint32_t consecutive_failure; /* 0: 1 */

    /* TLS, for both kinds */
    int32_t tls;         /* 1: TLS handshake after connect */
    int32_t tls_verify;  /* 1: verify the chain (and the SNI name or IP) */
    const char *tls_sni; /* NULL: the Host header's name, else none */
    size_t tls_sni_len;
    const char *tls_ca; /* CA file (PEM); NULL: the system's default paths */
    size_t tls_ca_len;

    /* HTTP only */
    const char *method; /* NULL: "GET" */
    size_t method_len;
    const char *path; /* NULL: "/" */
    size_t path_len;
    const char *host; /* Host header; NULL: the backend's address text */
    size_t host_len;
    const lb_check_header *headers;
    size_t nheaders;
    const uint16_t *expected_status; /* NULL or 0 entries: { 200 } */
    size_t nexpected;
    int32_t reuse_connection; /* 1: keep-alive between rounds; a fresh
                                 connection once the kept one served 3
                                 checks and is 1 s old (src/checker/round.c) */

    uint16_t port; /* 0: the backend's port; else the port checked (inet) */
} lb_check_config;

/* Why a check failed: a health record's err_kind; err_detail says more. */
#define LB_CHECK_ERR_NONE 0
#define LB_CHECK_ERR_CONNECT 1        /* detail: errno */
#define LB_CHECK_ERR_TIMEOUT 2        /* detail: LB_CHECK_PHASE_* */
#define LB_CHECK_ERR_TLS_HANDSHAKE 3  /* detail: OpenSSL reason code */
#define LB_CHECK_ERR_TLS_VERIFY 4     /* detail: X509_V_ERR_* */
#define LB_CHECK_ERR_HTTP_STATUS 5    /* detail: the status received */
#define LB_CHECK_ERR_HTTP_MALFORMED 6 /* detail: LB_HTTP_BAD_* */
#define LB_CHECK_ERR_CLOSED 7         /* peer closed early; detail: phase */
#define LB_CHECK_ERR_IO 8             /* send/recv failed; detail: errno */
#define LB_CHECK_ERR_RESOURCE 9       /* socket/memory; detail: errno */
#define LB_CHECK_ERR_CUSTOM 10        /* a Lua check failed (binding) */
#define LB_CHECK_ERR_EJECTED                                                   \
    11 /* passive ejection; detail: failures in a row */

/* Phases, for LB_CHECK_ERR_TIMEOUT and LB_CHECK_ERR_CLOSED */
#define LB_CHECK_PHASE_CONNECT 1
#define LB_CHECK_PHASE_TLS 2
#define LB_CHECK_PHASE_REQUEST 3
#define LB_CHECK_PHASE_RESPONSE 4

/* Details of LB_CHECK_ERR_HTTP_MALFORMED */
#define LB_HTTP_BAD_STATUS_LINE 1
#define LB_HTTP_BAD_HEADER 2
#define LB_HTTP_HEADER_TOO_LARGE 3 /* more than LB_HTTP_MAX_HEADER bytes */
#define LB_HTTP_BAD_LENGTH 4       /* Content-Length */
#define LB_HTTP_BAD_CHUNK 5
#define LB_HTTP_BODY_TOO_LARGE 6 /* more than LB_HTTP_MAX_BODY bytes */
#define LB_HTTP_BAD_VERSION 7

#define LB_HTTP_MAX_HEADER (8 * 1024)
#define LB_HTTP_MAX_BODY (1024 * 1024)

/*
 * Set (or with cfg NULL or kind LB_CHECK_NONE, remove) the balancer's
 * built-in check.  Validates and copies cfg (a TLS context is built here,
 * so a CA file that cannot be loaded is reported now).  A round already in
 * flight finishes with the configuration it started with; kept-alive
 * connections of the previous configuration are closed by the next round.
 * Returns LB_OK, or LB_ERROR with *err (a static string) and the previous
 * configuration untouched.  Any thread; takes the checker's mutex briefly.
 */
int lb_balancer_set_check(lb_balancer *b, const lb_check_config *cfg,
                          const char **err);

/*
 * Run one round of the built-in check on every backend of the published
 * snapshot and wait for it: parallel = 1 starts all checks at once, 0 one
 * backend at a time.  Returns after every result is recorded and every
 * flip of the round is queued for lb_balancer_events.  It starts at once,
 * beside a periodic round of the same balancer in flight; callers that
 * ask while another caller's round runs share the next one.
 * Returns the number of backends checked (>= 0; a skipped check, see
 * lb_check_stats, is not counted), LB_DECLINED when no
 * built-in check is set, or LB_ERROR with *err (the thread could not
 * start).  Blocks the calling thread (never call it from the checker's own
 * callbacks; there are none); takes no RCU read lock while waiting.
 */
int lb_balancer_check_round(lb_balancer *b, int parallel, const char **err);

/*
 * Run rounds in the background every `frequency` seconds (> 0), measured
 * from the start of one round to the start of the next (a round that takes
 * longer is followed at once by the next).  The first round starts now.
 * Calling it again changes the frequency/parallelism.  Returns LB_OK,
 * LB_DECLINED when no built-in check is set, or LB_ERROR with *err.  Any
 * thread.
 */
int lb_balancer_checks_start(lb_balancer *b, double frequency, int parallel,
                             const char **err);

/*
 * Stop the periodic rounds started by lb_balancer_checks_start.  A
 * periodic round in flight is abandoned (its results so far stay
 * recorded) and this returns once the checker no longer touches `b` for
 * it; the configuration and queued events stay.  The last user stopping
 * stops and joins the checker thread.  A no-op when not started.  Any
 * thread; blocks briefly.
 */
void lb_balancer_checks_stop(lb_balancer *b);

/*
 * What the balancer's built-in checks did since its check was first set.
 * A check that cannot even start because this process is out of
 * descriptors or memory (EMFILE, ENFILE, ENOMEM, ENOBUFS; ENOSPC from
 * epoll) is no verdict on the backend: it is counted as skipped, the
 * backend keeps its state and is checked again next round.
 */
typedef struct lb_check_stats {
    uint64_t ok;      /* checks that passed */
    uint64_t failed;  /* checks that failed (recorded on the backend) */
    uint64_t skipped; /* checks that could not start (see above) */
} lb_check_stats;

/* Fill *out.  LB_OK, or LB_DECLINED (all zero) when the balancer never had
 * a built-in check.  Any thread; takes the checker's mutex briefly. */
int lb_balancer_check_stats(lb_balancer *b, lb_check_stats *out);

/* A health flip.  `id` is lb_health_info.id. */
typedef struct lb_health_event {
    uint64_t id;
    int32_t healthy;
    int32_t err_kind;
    int32_t err_detail;
    int32_t reserved;
} lb_health_event;

/*
 * The balancer's event queue holds at most LB_EVENTS_MAX flips.  A flip
 * that finds it full is not lost as a state: its record is marked, and
 * the drain that empties the queue delivers each marked record's current
 * state (so a consumer that missed flips still learns every record's
 * state; such an event may repeat the state last delivered).  The flips
 * not queued are counted (lb_balancer_events_dropped).
 */
#define LB_EVENTS_MAX 256

/*
 * Move up to `max` health flips, oldest first, into out[0..max): every
 * flip of an observation through the core (the built-in checker's,
 * lb_balancer_observe's), whether or not a built-in check is set, then the
 * current state of records whose flips found the queue full.  Returns how
 * many were written (0 when none).  Producers never wait (a lock-free
 * push); consumers are serialised by a mutex of the balancer, so any
 * thread may drain (normally the Lua thread).  Events of a record that
 * left the set are still delivered when they were queued before it left.
 */
int lb_balancer_events(lb_balancer *b, lb_health_event *out, int max);

/* Flips that found the balancer's queue full since it was made (their
 * records' states are delivered by a later drain).  Lock-free. */
uint64_t lb_balancer_events_dropped(lb_balancer *b);

/*
 * Write a message for a check error ("connect: Connection refused",
 * "timeout: response", "unexpected status 503") into buf, NUL-terminated
 * and truncated to size.  Returns the message's full length (as snprintf).
 * Pure function, any thread.
 */
int lb_check_error_text(int kind, int detail, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* LB_H_CHECK */
