/*
 * lb_discovery.h - the C API of discovery sources (src/discovery/).
 * Part of lb's C API: included by lb.h (include lb.h, not this file).
 */
#ifndef LB_H_DISCOVERY
#define LB_H_DISCOVERY

#include "lb.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A balancer may have one discovery source that runs in the core: DNS
 * (c-ares) or etcd v3 (its JSON gateway, over libcurl).  It runs on the
 * background thread of health checks (one per process), never on a
 * caller's thread, and publishes each new set with lb_balancer_update:
 * health records kept, nothing half applied.  A failed answer keeps the
 * last good set; the source retries with backoff and says so in its status.
 * The source runs while started (lb_balancer_discovery_start) and for each
 * lb_balancer_discovery_refresh.
 */
#define LB_DNS_A 1
#define LB_DNS_AAAA 28
#define LB_DNS_SRV 33

typedef struct lb_dns_config {
    const char *name; /* the name to look up (not empty) */
    size_t name_len;
    int32_t type;  /* LB_DNS_A, LB_DNS_AAAA or LB_DNS_SRV */
    uint16_t port; /* A and AAAA: every address's port (1-65535) */
    uint16_t reserved;
    /* "ip[:port],ip[:port],..." ("[v6]:port" for IPv6); NULL or empty:
     * the servers of /etc/resolv.conf */
    const char *resolvers;
    size_t resolvers_len;
    double timeout; /* seconds for one answer; 0: 2 s */
    double min_ttl; /* the answer's TTL is clamped to min..max; 0: 1 s */
    double max_ttl; /* 0: 300 s */
} lb_dns_config;

typedef struct lb_etcd_config {
    /* "http://host:port,https://host:port,...": tried in turn */
    const char *endpoints;
    size_t endpoints_len;
    const char *prefix; /* every key under it is one backend */
    size_t prefix_len;
    double timeout;       /* seconds for one request (connect, range); 0: 2 s */
    const char *username; /* NULL: no authentication */
    size_t username_len;
    const char *password;
    size_t password_len;
    int32_t tls_verify; /* https: 1 verifies the server's chain and name */
    int32_t reserved;
    const char *tls_ca; /* CA file (PEM); NULL: the system's default */
    size_t tls_ca_len;
    /* https: the name sent as SNI and verified against the certificate
     * (the endpoint's host is still the address connected to); NULL: the
     * endpoint's host */
    const char *tls_sni;
    size_t tls_sni_len;
} lb_etcd_config;

/*
 * Give `b` a DNS (or etcd) source, replacing any it had (stopped first).
 * Validates and copies cfg; nothing runs until start or refresh.  Returns
 * LB_OK, or LB_ERROR with *err (a static string naming the bad field) and
 * the previous source untouched.  Any thread; takes the checker's mutex.
 */
int lb_balancer_set_dns(lb_balancer *b, const lb_dns_config *cfg,
                        const char **err);
int lb_balancer_set_etcd(lb_balancer *b, const lb_etcd_config *cfg,
                         const char **err);

/*
 * Run the source in the background (starting the thread if needed): DNS
 * asks again when the answer's TTL runs out, etcd watches its prefix.
 * LB_OK, LB_DECLINED (no source), or LB_ERROR with *err (the thread could
 * not start).  lb_balancer_discovery_stop stops it (a request in flight is
 * abandoned; the published set stays) and returns once the thread no
 * longer touches `b` for it.  Any thread.
 */
int lb_balancer_discovery_start(lb_balancer *b, const char **err);
void lb_balancer_discovery_stop(lb_balancer *b);

/*
 * Ask the source for a fresh answer now (started or not).  Returns a
 * ticket (> 0) for lb_balancer_discovery_wait, LB_DECLINED when there is
 * no source, or LB_ERROR with *err.  Never blocks (takes the checker's
 * mutex briefly).  Any thread.
 */
int64_t lb_balancer_discovery_refresh(lb_balancer *b, const char **err);

/*
 * Wait up to `timeout` seconds for the answer of `ticket`: LB_OK (it was
 * published, or was the set already published), LB_ERROR (it failed: the
 * status's last_error says why; the last good set stays), LB_DECLINED (no
 * answer in time, or no source).  Blocks the calling thread (never call it
 * where a thread must not wait, as an nginx worker).  A source that is not
 * started and has nothing more in flight stops counting as a user of the
 * background thread here (the last user stops it).  Any thread.
 */
int lb_balancer_discovery_wait(lb_balancer *b, int64_t ticket, double timeout);

typedef struct lb_discovery_status {
    int32_t kind;         /* 0 none, 1 DNS, 2 etcd */
    int32_t ok;           /* the last answer was good (0 before any) */
    int32_t running;      /* started */
    int32_t has_revision; /* etcd: revision is meaningful */
    double updated_at;    /* CLOCK_REALTIME seconds of the last good answer,
                             0: none yet */
    uint64_t revision;    /* etcd: the revision the set reflects */
    uint64_t updates;     /* good answers */
    uint64_t errors;      /* failed answers (and skipped etcd values) */
    uint64_t queries;     /* requests sent (DNS queries, etcd requests) */
    char last_error[256]; /* "" when the last answer was good */
} lb_discovery_status;

/* Fill *out.  LB_OK, or LB_DECLINED (zeroed) when `b` has no source.  Any
 * thread; takes the checker's mutex briefly. */
int lb_balancer_discovery_status(lb_balancer *b, lb_discovery_status *out);

/*
 * The gate of every source: before a source asks anything, the thread
 * calls gate(b); 0 means "not this process", and the source waits and asks
 * again at its next due time.  NULL (the default) allows every balancer.
 * Besides the gate, a shared balancer's periodic requests run only in its
 * prober (lb_balancer_may_probe); a ticket asked explicitly (refresh) runs
 * in any process.  The gate is
 * called on the checker thread with its mutex held: it must not block nor
 * call back into lb.  Any thread; takes effect at the next due time.
 */
void lb_discovery_gate_set(int (*gate)(lb_balancer *b));

/*
 * Resolve a "name:port" without blocking the caller: the name's addresses
 * (both families; /etc/hosts, then the servers of /etc/resolv.conf, as
 * getaddrinfo does) are asked on the background thread with c-ares, each
 * becoming a backend of `weight`.  lb_resolve_start returns the pending
 * resolution (owned by the caller, freed with lb_resolve_free, which
 * cancels it when still pending), or NULL with *err (a static string) for
 * a bad name, port or weight, or when the thread cannot start.  Literal
 * addresses need no resolution: lb_backend_parse them.  `timeout` bounds
 * the answer (<= 0: 5 s).  Any thread; takes the checker's mutex briefly.
 */
typedef struct lb_resolve lb_resolve;
lb_resolve *lb_resolve_start(const char *text, size_t len, uint32_t weight,
                             double timeout, const char **err);

/*
 * The answer: LB_DECLINED while pending; LB_ERROR with *err (valid until
 * lb_resolve_free) when the name has no address, the servers did not
 * answer in time, ...; else the number of backends, of which the first
 * `max` are copied to out (call again with more room when it exceeds
 * max).  Never blocks.  lb_resolve_wait blocks up to `timeout` seconds
 * for it: LB_OK when answered (either way), LB_DECLINED when not yet.
 */
int lb_resolve_result(lb_resolve *r, lb_backend *out, int max,
                      const char **err);
int lb_resolve_wait(lb_resolve *r, double timeout);
void lb_resolve_free(lb_resolve *r);

/*
 * Copy the published set, whole, from one snapshot: up to `max` backends
 * into out (sorted order), their record ids (lb_health_info.id) into ids
 * (when not NULL) and the snapshot's generation into *gen.  Returns the
 * set's size (larger than max: call again with more room; nothing is
 * half-copied across two snapshots).  Lock-free (one read-side section),
 * any thread; for a binding that adopts a set published by the core's own
 * discovery.
 */
size_t lb_balancer_backends(lb_balancer *b, lb_backend *out, size_t max,
                            uint64_t *ids, uint64_t *gen);

#ifdef __cplusplus
}
#endif

#endif /* LB_H_DISCOVERY */
