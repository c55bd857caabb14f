/*
 * lb.h - the C API of lb: backends, balancers, selection and health.
 *
 * A balancer publishes ONE immutable snapshot through one RCU pointer: the
 * sorted backend array, the selector built for exactly that array, and one
 * pointer per backend to its health record.  Readers (select, ready, the
 * iterator) take no lock and allocate nothing; writers (update) build a new
 * snapshot aside and swap it; the old one is freed after a grace period.
 *
 * Conventions (lua-nginx-module style, so LuaJIT's FFI binds it directly):
 * functions return an int code (LB_OK, or LB_ERROR with *err set to a static
 * or balancer-owned string that stays valid until the next call on the same
 * balancer from the same thread), strings travel as pointer + length, and
 * nothing here calls back into Lua.
 *
 * Threads: every function may be called from any thread unless its comment
 * says otherwise.  No thread registration is needed (liburcu's "bp" flavour
 * registers readers lazily).
 */
#ifndef LB_H
#define LB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LB_VERSION "0.1.0"

#define LB_OK 0
#define LB_ERROR (-1)
#define LB_DECLINED (-2) /* nothing (more) to return */
#define LB_STALE (-3)    /* the snapshot changed under an iterator */

/* Limits.  Weight bounds the weight-expanded list and the Ketama ring:
 * 65535 backends of weight 1000 would need 10^10 ring points, so the ring
 * has its own cap (LB_MAX_POINTS), checked when it is built. */
#define LB_MAX_WEIGHT 1000
#define LB_MAX_BACKENDS 65535
#define LB_MAX_POINT_MULTIPLE 1000
#define LB_MAX_POINTS (16u * 1024 * 1024)
#define LB_ADDR_MAX 128 /* canonical text, "unix:" + sun_path, NUL */

/* Families in sort order: Pingora orders SocketAddr::Inet before Unix, and
 * std's SocketAddr orders V4 before V6. */
enum lb_family { LB_AF_INET = 0, LB_AF_INET6 = 1, LB_AF_UNIX = 2 };

/*
 * A backend as the caller describes it.  `addr` is the canonical text
 * ("1.2.3.4:80", "[::1]:80", "unix:/path"), `host` is the address without
 * port or brackets ("::1"; for unix the path), `ip` holds the 4 or 16
 * address bytes in network order.  `enable` is input to an update: -1 leave
 * as is (new backends start enabled), 0 disable, 1 enable.
 */
typedef struct lb_backend {
    uint8_t family; /* enum lb_family */
    int8_t enable;
    uint16_t port;
    uint32_t weight;
    uint8_t ip[16];
    uint16_t addr_len;
    uint16_t host_len;
    char addr[LB_ADDR_MAX];
    char host[LB_ADDR_MAX];
} lb_backend;

/*
 * Parse "ip:port", "[ipv6]:port" or "unix:/path" into *out with the given
 * weight.  Host names are not accepted here (see lb_backend_resolve).
 * Returns LB_OK, or LB_ERROR with *err naming what was wrong.
 * Pure function, any thread.
 */
int lb_backend_parse(const char *text, size_t len, uint32_t weight,
                     lb_backend *out, const char **err);

/*
 * Like lb_backend_parse, but a "name:port" whose name is not an address is
 * resolved with getaddrinfo (blocking); every address becomes a backend, as
 * Pingora's try_from_iter does.  Writes at most `max` backends to out and
 * returns how many it found (which may exceed max: call again with more
 * room), or LB_ERROR with *err set.  Any thread; may block on DNS.
 */
int lb_backend_resolve(const char *text, size_t len, uint32_t weight,
                       lb_backend *out, int max, const char **err);

/* Total order of Pingora's Backend: family, address bytes (unix: path
 * bytes), port, weight.  Returns <0, 0, >0. */
int lb_backend_compare(const lb_backend *a, const lb_backend *b);

typedef struct lb_balancer lb_balancer;

enum lb_selection {
    LB_SELECT_ROUND_ROBIN = 0,
    LB_SELECT_RANDOM = 1,
    LB_SELECT_FNV = 2,
    LB_SELECT_CONSISTENT = 3,
};

typedef struct lb_config {
    int selection;           /* enum lb_selection */
    uint32_t point_multiple; /* consistent only; 0 means 160 */
    int start_unhealthy;     /* new backends are not ready until a check passes */
} lb_config;

/*
 * Create a balancer with an empty backend set.  Returns NULL with *err set
 * on a bad config or out of memory.  The result is owned by the caller and
 * released with lb_balancer_free.
 */
lb_balancer *lb_balancer_new(const lb_config *cfg, const char **err);

/*
 * Stop everything the balancer runs (its health checks) and free it.  Safe
 * while other threads are inside lb_balancer_select on it?  No: the caller
 * guarantees no thread uses `b` any more; snapshots still visible to
 * in-flight readers of *other* balancers are unaffected.  Its last snapshot
 * is freed after a grace period.
 */
void lb_balancer_free(lb_balancer *b);

/*
 * Replace the backend set with `in[0..n)` (any order, duplicates of the
 * same (address, weight) collapse into one).  Builds the new snapshot off
 * to the side: sorted backends, selector, health records (a backend that
 * stays keeps its record; a new one starts healthy, or unhealthy with
 * start_unhealthy), then applies each entry's `enable`, then publishes it
 * with one pointer swap.  When the set is unchanged, only `enable` is
 * applied and nothing is published.
 *
 * `order`, when not NULL, receives n entries: order[i] is the index in
 * `in` of the i-th backend in sorted order (for i < the new count, which is
 * returned through *count); it lets a binding keep its own objects aligned
 * with the snapshot.
 *
 * Returns 1 if a new snapshot was published, 0 if the set was unchanged,
 * LB_ERROR with *err (the previous set stays published untouched).
 * Writers are serialised by a mutex inside the balancer; readers are never
 * blocked.  The previous snapshot is freed with call_rcu.
 */
int lb_balancer_update(lb_balancer *b, const lb_backend *in, size_t n,
                       uint32_t *order, size_t *count, const char **err);

/* Number of backends and generation of the published snapshot.  The
 * generation increases by one with every publish.  Lock-free. */
size_t lb_balancer_count(lb_balancer *b);
uint64_t lb_balancer_generation(lb_balancer *b);

/*
 * Copy backend `i` of the published snapshot (sorted order) to *out.
 * Returns LB_OK or LB_DECLINED when i is out of range.  Lock-free.
 */
int lb_balancer_backend(lb_balancer *b, size_t i, lb_backend *out);

/*
 * Iterator over the candidates for one key, Pingora's UniqueIterator: the
 * algorithm's sequence with duplicates filtered (a bitmap over backend
 * indices) and at most max_iterations steps of the underlying sequence.
 * The caller owns the storage (lb_iter_new) and may reuse it for any number
 * of walks on any balancer, from one thread at a time.
 *
 * Fields the caller may read after each step: gen (the snapshot generation
 * the walk runs in), ready (whether the returned backend is ready).
 */
#define LB_ITER_TOUCH 16

typedef struct lb_iter {
    uint64_t gen;
    int32_t ready;
    uint32_t steps;
    uint32_t max_steps;
    uint32_t first_done;
    uint64_t state; /* the selector's position (hash seed, ring index) */
    uint32_t nwords;  /* bitmap capacity in 64-bit words */
    uint32_t ntouched; /* words dirtied in this walk; > LB_ITER_TOUCH: all */
    uint64_t *seen;
    uint32_t touched[LB_ITER_TOUCH];
} lb_iter;

#define LB_DEFAULT_MAX_ITERATIONS 256

lb_iter *lb_iter_new(void);
void lb_iter_free(lb_iter *it);

/*
 * Start a walk for `key` and return the index (sorted order) of the first
 * candidate, or LB_DECLINED when the set is empty or max_iterations is 0.
 * Sets it->gen and it->ready.  Lock-free, allocation-free unless the
 * bitmap must grow for a larger set (once per size).
 */
int lb_iter_first(lb_balancer *b, const char *key, size_t len,
                  uint32_t max_iterations, lb_iter *it);

/*
 * Next unique candidate of the walk, LB_DECLINED at the end (max_iterations
 * reached), or LB_STALE when a new snapshot was published since the walk
 * began (indices of the old walk mean nothing in the new set).  Lock-free.
 */
int lb_iter_next(lb_balancer *b, lb_iter *it);

/*
 * Select: the first ready candidate of the walk for `key`, as an index in
 * sorted order, or LB_DECLINED.  One RCU read-side section, no lock, no
 * allocation.  it->gen tells which snapshot the index belongs to.
 */
int lb_balancer_select(lb_balancer *b, const char *key, size_t len,
                       uint32_t max_iterations, lb_iter *it);

/* ready = healthy and enabled, of backend i of snapshot `gen`; returns 1, 0,
 * or LB_STALE when gen is not the published generation.  Lock-free. */
int lb_balancer_ready(lb_balancer *b, uint64_t gen, size_t i);

/* Enable or disable backend i of snapshot `gen` (does not touch health).
 * LB_OK or LB_STALE.  Lock-free (an atomic update of the record). */
int lb_balancer_set_enable(lb_balancer *b, uint64_t gen, size_t i, int enable);

/*
 * Health state of one backend.  `id` is unique in the process for the life
 * of the health record: it survives updates that keep the backend, so a
 * binding can map events and rows back to its own objects.
 * err_kind/err_detail describe the last failed check (LB_CHECK_ERR_*).
 */
typedef struct lb_health_info {
    uint64_t id;
    int32_t healthy;
    int32_t enabled;
    uint32_t consecutive;
    int32_t err_kind;
    int32_t err_detail;
} lb_health_info;

/* Health of backend i of the published snapshot.  LB_OK or LB_DECLINED. */
int lb_balancer_health(lb_balancer *b, size_t i, lb_health_info *out);

/*
 * Record one check result for backend i of snapshot `gen`, with Pingora's
 * observe_health: a result opposite to the current state counts up and
 * flips the state at the threshold (consecutive_success or
 * consecutive_failure); a result equal to the current state resets the
 * count.  Returns 1 when the state flipped, 0 when not, LB_STALE.
 * Lock-free (compare-and-swap on the record).
 */
int lb_balancer_observe(lb_balancer *b, uint64_t gen, size_t i, int ok,
                        uint32_t threshold, int err_kind, int err_detail);

#ifdef __cplusplus
}
#endif

#endif /* LB_H */
