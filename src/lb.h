/*
 * lb.h - the C API of lb: backends, balancers, selection and health.
 * The API of health checks is in lb_check.h and that of discovery sources
 * in lb_discovery.h; lb.h includes both.
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

#define LB_VERSION "0.2.0"

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
/* Power-of-k choices (least_request, peak_ewma): k from 1 to 16; beyond a
 * handful of choices the pick is a scan of the set and herds onto the
 * least loaded backend (Mitzenmacher: two choices give the exponential
 * gain, more add little). */
#define LB_MAX_CHOICE_COUNT 16
/* Maglev's table: a prime from the backend count up to the largest prime
 * below 2^24 (entries are 16-bit backend indices: 32 MiB at most). */
#define LB_MAX_TABLE_SIZE 16777213u
#define LB_DEFAULT_TABLE_SIZE 65537u
#define LB_ADDR_MAX 128 /* canonical text, "unix:" + sun_path, NUL */

/* Health-check limits.  A threshold counts in the health record's 30-bit
 * counter; 2^29 leaves it room and is more rounds than any period makes
 * in practice.  A timeout is at most a day.  A period (health checks,
 * discovery) is from 10 ms, below which a round of Lua checks or a
 * discovery would keep a core busy, to 10^6 s (11.5 days), the longest
 * the checker's nanosecond clock arithmetic is written for. */
#define LB_MAX_THRESHOLD (1u << 29)
#define LB_MAX_TIMEOUT 86400.0
#define LB_MIN_FREQUENCY 0.01
#define LB_MAX_FREQUENCY 1e6

/*
 * The limits above, as data, for a binding that cannot read macros
 * (LuaJIT's FFI): the one source of every limit the Lua side reports.
 */
typedef struct lb_limits {
    uint32_t max_weight;
    uint32_t max_backends;
    uint32_t max_point_multiple;
    uint32_t max_points;
    uint32_t max_threshold;
    uint32_t default_max_iterations;
    double max_timeout;
    double min_frequency;
    double max_frequency;
    double max_ejection_time;
    double max_slow_start_window;
    uint32_t max_choice_count;
    uint32_t max_table_size;
    double max_bias;
    double min_decay;
    double max_decay;
    double max_balance_factor;
} lb_limits;

/* The process's limits: a pointer to static, constant data.  Pure, any
 * thread. */
const lb_limits *lb_limits_get(void);

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

/* Ids of the first algorithms, for C callers; lb_selection_find gives the
 * id of any algorithm by name (the registry, src/select/registry.c, is the
 * one list). */
enum lb_selection {
    LB_SELECT_ROUND_ROBIN = 0,
    LB_SELECT_RANDOM = 1,
    LB_SELECT_FNV = 2,
    LB_SELECT_CONSISTENT = 3,
};

/* Flags of an algorithm (lb_selection_find). */
#define LB_SELECTION_KEYLESS 1u /* ignores the key: select may take none */
#define LB_SELECTION_OBSERVABLE_STEPS                                          \
    2u                         /* steps move shared state (round               \
                                  robin's counter) */
#define LB_SELECTION_POINTS 4u /* a ring: lb_config.point_multiple applies */
/* The algorithm reads in-flight counts (least_request, peak_ewma): a
 * binding counts requests (acquire/release) for it.  consistent reads them
 * only with hash_balance_factor, which its row cannot say: a binding
 * checks LB_SELECTION_BOUNDED and the option. */
#define LB_SELECTION_COUNTS 8u
#define LB_SELECTION_CHOICES 16u  /* choice_count applies */
#define LB_SELECTION_BIAS 32u     /* active_request_bias applies */
#define LB_SELECTION_DECAY 64u    /* ewma_decay applies */
#define LB_SELECTION_TABLE 128u   /* table_size applies (maglev) */
#define LB_SELECTION_BOUNDED 256u /* hash_balance_factor applies */

/*
 * The id (for lb_config.selection) of the algorithm named name[0..len),
 * with its LB_SELECTION_* flags in *flags (when flags is not NULL), or
 * LB_DECLINED for an unknown name.  Pure function, any thread.
 */
int lb_selection_find(const char *name, size_t len, uint32_t *flags);

/*
 * The name of algorithm `id` (a static string), or NULL when there is no
 * such id.  Ids are dense from 0: a caller lists every algorithm (for an
 * error message) by asking 0, 1, ... until NULL.  Pure function, any
 * thread.
 */
const char *lb_selection_name(int id);

/*
 * A balancer's configuration.  Zero-initialised means the defaults.  An
 * option the algorithm does not take (its row lacks the option's
 * LB_SELECTION_* flag) must be zero: lb_balancer_new says which.
 */
typedef struct lb_config {
    int selection;           /* an id: enum lb_selection, lb_selection_find */
    uint32_t point_multiple; /* consistent only; 0 means 160 */
    int start_unhealthy; /* new backends are not ready until a check passes */

    /* Passive health (src/passive.c): `consecutive_failures` failed
     * reports in a row eject a backend (0: never) for ejection_time x
     * (times ejected), at most max_ejection_time seconds; at most
     * max_ejection_percent (0-100) of the backends are ejected at once.
     * Which HTTP statuses are failures is the binding's to map. */
    uint32_t consecutive_failures;
    uint32_t max_ejection_percent;
    double ejection_time;     /* seconds, > 0 when consecutive_failures */
    double max_ejection_time; /* seconds, >= ejection_time */
    /* Panic: when fewer than this fraction (0-1) of the enabled backends
     * are ready, selection ignores health (never enablement).  0: off. */
    double panic_threshold;
    /* Slow start (Envoy's): a backend that becomes ready takes weight x
     * max(min_weight, (t / window) ^ (1 / aggression)) for `window`
     * seconds, in the weighted algorithms.  window 0: off. */
    double slow_start_window;
    double slow_start_aggression; /* > 0 */
    double slow_start_min_weight; /* (0, 1] */
    uint32_t choice_count; /* least_request, peak_ewma: k of the power of k
                              choices, 1..LB_MAX_CHOICE_COUNT; 0 means 2 */
    uint32_t table_size;   /* maglev: a prime >= the backend count, at most
                              LB_MAX_TABLE_SIZE; 0 means 65537 */
    int32_t active_request_bias_set; /* least_request: 1 when
                                        active_request_bias is given, 0: the
                                        default bias 1 */
    double active_request_bias;      /* least_request: 0..LB_MAX_BIAS; a
                                        backend's score is weight /
                                        (in_flight + 1) ^ bias */
    double ewma_decay;               /* peak_ewma: seconds, 0.001..LB_MAX_DECAY;
                                        0 means 10 */
    double hash_balance_factor;      /* consistent: >= 1 bounds every backend to
                                        ceil(factor x mean in-flight); 0: off */
} lb_config;

/* Limits of the passive options: an ejection lasts at most a day; a slow
 * start window is at most an hour (its ramp is computed in doubles over
 * nanoseconds, exact far beyond). */
#define LB_MAX_EJECTION_TIME 86400.0
#define LB_MAX_SLOW_START_WINDOW 3600.0

/* Bounds of the floating options: Envoy takes any bias >= 0, but past 100
 * one request in flight already scores 2^-100; a decay beyond a day means
 * the latency never forgets.  A balance factor is at most 100 (above, no
 * bound is ever reached with realistic counts). */
#define LB_MAX_BIAS 100.0
#define LB_MIN_DECAY 0.001
#define LB_MAX_DECAY 86400.0
#define LB_MAX_BALANCE_FACTOR 100.0

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
 * stays keeps its record, and so does one whose weight alone changed, as in
 * nginx, Envoy and Kong; a new one starts healthy, or unhealthy with
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
 * lb_iter is opaque: its walk state is private to the core.  It begins with
 * an lb_iter_head, the fields a caller may read after each step, so a
 * binding reads them with a plain load through lb_iter_head_of (LuaJIT's
 * FFI casts the pointer once and compiles the load into the select trace).
 */
typedef struct lb_iter lb_iter;

typedef struct lb_iter_head {
    uint64_t gen;  /* the snapshot generation the walk runs in */
    int32_t ready; /* whether the backend last returned is ready */
    uint32_t reserved;
} lb_iter_head;

/* The head of an iterator: the same address, read-only for the caller.
 * Pure, any thread (the thread that owns `it`). */
static inline const lb_iter_head *lb_iter_head_of(const lb_iter *it)
{
    return (const lb_iter_head *)(const void *)it;
}

#define LB_DEFAULT_MAX_ITERATIONS 256

/* A zeroed iterator (its bitmap is allocated by the first walk that needs
 * it), or NULL when out of memory.  Owned by the caller, freed with
 * lb_iter_free (NULL: a no-op), used by one thread at a time.  Any
 * thread. */
lb_iter *lb_iter_new(void);

/* Free an iterator and its bitmap; NULL is a no-op.  No walk may be in
 * progress on another thread.  Any thread. */
void lb_iter_free(lb_iter *it);

/*
 * Start a walk for `key` and return the index (sorted order) of the first
 * candidate, or LB_DECLINED when the set is empty or max_iterations is 0.
 * Sets the head's gen and ready.  Lock-free, allocation-free unless the
 * bitmap must grow for a larger set (once per size): LB_ERROR when that
 * allocation fails (the iterator keeps its old bitmap and no walk).
 */
int lb_iter_first(lb_balancer *b, const char *key, size_t len,
                  uint32_t max_iterations, lb_iter *it);

/*
 * Next unique candidate of the walk, LB_DECLINED at the end (max_iterations
 * reached), or LB_STALE when a new snapshot was published since the walk
 * began (indices of the old walk mean nothing in the new set) or `b` is not
 * the balancer the walk began on.  Lock-free.
 */
int lb_iter_next(lb_balancer *b, lb_iter *it);

/*
 * Select: the first ready candidate of the walk for `key`, as an index in
 * sorted order, or LB_DECLINED.  One RCU read-side section, no lock.  No
 * allocation when the first candidate is ready (the common case) or the
 * iterator's bitmap already fits the set; otherwise the walk grows the
 * bitmap once for the larger set (as lb_iter_first does) and returns
 * LB_ERROR if that allocation fails (the iterator keeps its old bitmap and
 * no walk).  A set with no ready backend is declined after one pass over
 * its records, whatever max_iterations is (round robin's counter still
 * moves by max_iterations steps).  The head's gen tells which snapshot the
 * index belongs to.  It ends any walk the iterator had in progress:
 * lb_iter_next afterwards continues select's own walk when select had to walk
 * (its first candidate was not ready), and returns LB_DECLINED when it did not
 * (or declined at once).
 */
int lb_balancer_select(lb_balancer *b, const char *key, size_t len,
                       uint32_t max_iterations, lb_iter *it);

/*
 * lb_balancer_select, and the pick counted on the picked backend's record
 * in the same read-side section: one selection (lb_record_info.selections,
 * lb_backend_selected_total) and, when in_flight is non-zero, one request
 * in flight as lb_balancer_in_flight_add(+1) counts it (with a shared
 * balancer, this process's share).  The selection is a plain add to a
 * counter this process alone writes (with a shared balancer, its own
 * column in the region), not a locked add: exact while one thread at a
 * time makes counted selects on b in a process (a Lua state, an nginx
 * worker); threads doing so at once may lose selections (nothing else),
 * and should count with lb_balancer_selected instead.  Counted only when the
 * pick is from snapshot `gen`, the caller's view of the set: a pick from a
 * newer snapshot (the head's gen differs) is returned uncounted, for a caller
 * that must first learn the new set and then selects again.  Nothing is
 * counted either when it returns LB_DECLINED or LB_ERROR.  A caller that
 * does not use a counted pick undoes the in-flight count with
 * lb_balancer_in_flight_add(gen, i, -1) or lb_balancer_release; a
 * selection, once counted, stays counted (it is a counter).  Lock-free
 * (relaxed atomics; a shared balancer's first count in a process registers
 * it, taking the region's lock once), allocation-free as
 * lb_balancer_select is; any thread, under the rule above.
 */
int lb_balancer_select_counted(lb_balancer *b, uint64_t gen, const char *key,
                               size_t len, uint32_t max_iterations,
                               int in_flight, lb_iter *it);

/* ready = healthy and enabled, of backend i of snapshot `gen`; returns 1, 0,
 * or LB_STALE when gen is not the published generation.  Lock-free. */
int lb_balancer_ready(lb_balancer *b, uint64_t gen, size_t i);

/* Enable or disable backend i of snapshot `gen` (does not touch health).
 * LB_OK or LB_STALE.  Lock-free (an atomic update of the record). */
int lb_balancer_set_enable(lb_balancer *b, uint64_t gen, size_t i, int enable);

/*
 * Health state of one backend.  `id` names the backend's record: it stays
 * the same while the backend stays in the set (also across a weight-only
 * change), is unique among the balancer's records and is not reused for a
 * later record, and is below 2^53 (exact as a Lua number), so a binding
 * can map events and rows back to its own objects.
 * err_kind/err_detail describe the last failed check (LB_CHECK_ERR_*).
 */
typedef struct lb_health_info {
    uint64_t id;
    int32_t healthy; /* the active checks' verdict (Pingora's state) */
    int32_t enabled;
    uint32_t consecutive;
    int32_t err_kind;
    int32_t err_detail;
    int32_t ejected; /* passive: ejected now (not ready, whatever healthy
                        says) */
} lb_health_info;

/* Health of backend i of the published snapshot.  LB_OK or LB_DECLINED.
 * Ready means healthy, enabled and not ejected.  Lock-free (one RCU
 * read-side section, relaxed loads). */
int lb_balancer_health(lb_balancer *b, size_t i, lb_health_info *out);

/*
 * The published set counted by state, for a message that says why nothing
 * can be picked ("all 3 backends are down (2 unhealthy, 1 disabled)") and
 * whether any check ever ran.  Every backend not ready is in exactly one
 * of disabled (not enabled, whatever its health), unhealthy (enabled,
 * failing the active checks) and ejected (enabled, healthy, ejected by
 * passive health).  last_check_ms is the newest check of any backend
 * (CLOCK_REALTIME in ms; 0: none yet).
 */
typedef struct lb_tally {
    uint32_t backends;
    uint32_t ready;
    uint32_t disabled;
    uint32_t unhealthy;
    uint32_t ejected;
    uint32_t checked; /* backends checked at least once */
    uint64_t last_check_ms;
} lb_tally;

/* Count the published set into *out.  O(backends) relaxed loads in one
 * RCU read-side section; lock-free, any thread, allocates nothing.  For
 * failure paths and status, not for the select path.  With a shared
 * balancer, the records (and so the counts) are every process's. */
void lb_balancer_tally(lb_balancer *b, lb_tally *out);

/*
 * Every figure of one backend's record: health, load, latency, passive
 * failures, ejection and counters.  `id` is lb_health_info.id.  Figures
 * are relaxed atomic loads: each is exact, together they are not one
 * instant.  Latencies in nanoseconds; ejected_until_ns on CLOCK_MONOTONIC
 * (0: not ejected).
 */
typedef struct lb_record_info {
    uint64_t id;
    int32_t healthy;
    int32_t enabled;
    uint32_t in_flight;
    uint32_t passive_failures; /* current run of failed reports */
    uint32_t ejections;
    int32_t ejected; /* ejected now */
    uint64_t ejected_until_ns;
    uint64_t latency_ewma_ns; /* EWMA of reported latencies, weight 1/8 */
    uint64_t latency_last_ns;
    uint64_t selections;
    uint64_t checks_ok, checks_failed;
    uint64_t reports_ok, reports_failed;
} lb_record_info;

/*
 * Figures for metrics and status pages (lb_balancer_stats).  Histogram of
 * the durations of active checks: check_buckets[k] counts checks that took
 * at most LB_CHECK_BUCKET_BOUNDS[k] seconds and more than the bound before
 * (not cumulative); check_timed counts every timed check (the +Inf
 * bucket).  last_check_ms: CLOCK_REALTIME in ms when the latest check of
 * the backend ended, 0 when none has run.
 */
#define LB_CHECK_BUCKETS 12
#define LB_CHECK_BUCKET_BOUNDS                                                 \
    {                                                                          \
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,    \
            2.5                                                                \
    }
typedef struct lb_record_stats {
    uint64_t flips;
    uint64_t last_check_ms;
    uint64_t check_time_ns;
    uint64_t check_timed;
    uint64_t check_buckets[LB_CHECK_BUCKETS];
} lb_record_stats;

/* The stats of backend i of the published snapshot.  LB_OK or
 * LB_DECLINED.  Relaxed loads, lock-free, any thread. */
int lb_balancer_stats(lb_balancer *b, size_t i, lb_record_stats *out);

/*
 * Count one run of a balancer's discovery, and read the counts: ok (a
 * result published or found unchanged) and failed (an error: the previous
 * set stayed).  With a shared balancer the counts are in the region, the
 * same from every process.  Relaxed atomics, any thread.
 */
void lb_balancer_discovery_count(lb_balancer *b, int ok);
/* The time of one check of backend i of snapshot `gen` run outside the
 * checker (a custom Lua check): duration in seconds (< 0: unknown) into the
 * histogram, now as the last check.  LB_OK or LB_STALE. */
int lb_balancer_check_time(lb_balancer *b, uint64_t gen, size_t i,
                           double seconds);
void lb_balancer_discovery_counts(lb_balancer *b, uint64_t *ok,
                                  uint64_t *failed);

/* The record of backend i of the published snapshot.  LB_OK or
 * LB_DECLINED.  Lock-free. */
int lb_balancer_record(lb_balancer *b, size_t i, lb_record_info *out);

/*
 * One outcome of a request to backend i of snapshot `gen` (a passive
 * observation): result 1 success, 0 failure; latency in seconds, or < 0
 * when unknown.  Counts it (reports_ok / reports_failed), resets or
 * extends the passive-failure run, records the latency (last and EWMA).
 * With lb_config.consecutive_failures, the failure that makes the run that
 * long ejects the backend (src/passive.c): not ready for ejection_time x
 * (times ejected, this one included), capped at max_ejection_time, unless
 * max_ejection_percent of the set (rounded down) is ejected already: the
 * run goes on, and every further consecutive_failures failures ask again.  The
 * ejection resets the run and is a flip on the event queue (healthy 0, err_kind
 * LB_CHECK_ERR_EJECTED, detail the run's length) when it made a
 * ready-as-far-as-health backend not ready. Returns LB_OK, LB_STALE (gen is not
 * the published generation: the outcome is dropped), or LB_ERROR with *err when
 * result is not 0 or 1 or latency is not finite or above 10^6 s.  Lock-free
 * (relaxed atomics on the record) but for the ejection itself, decided under
 * the balancer's ejection lock (a leaf, taken once per ejection, never by
 * select); any thread.
 */
int lb_balancer_report(lb_balancer *b, uint64_t gen, size_t i, int result,
                       double latency, const char **err);

/*
 * Shared balancers (src/shared.h): the records, the backend set and the
 * prober's turn live in one region mapped MAP_SHARED, so every process
 * forked after lb_balancer_share sees the same health, enablement,
 * in-flight counts and set.
 *
 * lb_balancer_share: make b (new, its set still empty) shared, with room
 * for `capacity` backends (1-65535).  Call before the processes fork.
 * LB_OK, or LB_ERROR with *err (b stays private).  Not thread-safe with
 * other calls on b.
 */
int lb_balancer_share(lb_balancer *b, uint32_t capacity, const char **err);

/* Roles of lb_balancer_role. */
#define LB_ROLE_PRIVATE 0
#define LB_ROLE_READER 1
#define LB_ROLE_PROBER 2

/* LB_ROLE_PRIVATE (not shared), LB_ROLE_PROBER (this process holds an
 * unexpired turn) or LB_ROLE_READER.  Lock-free, any thread. */
int lb_balancer_role(lb_balancer *b);

/*
 * The periodic step of a shared balancer, from the thread that drives it
 * (the main thread or the Lua thread; it must live as long as the
 * process): registers the process, sweeps processes that are gone (their
 * in-flight counts dropped, their turn freed), renews or takes the
 * prober's turn for `lease` seconds, and adopts the region's set when it
 * moved on (rebuilding this process's snapshot and selector).  Returns
 * the role (LB_ROLE_*), with *adopted set to 1 when a new set was
 * adopted; LB_ERROR with *err when the adoption failed (out of memory:
 * the previous set stays, the next step tries again).  A private
 * balancer: LB_ROLE_PRIVATE, nothing done.
 */
int lb_balancer_shared_step(lb_balancer *b, double lease, int *adopted,
                            const char **err);

/* Give up the prober's turn when this process holds it (stop()), so
 * another process takes it at its next step. */
void lb_balancer_shared_yield(lb_balancer *b);

/* The version of the region's set this process has adopted, and the
 * region's current one (0, 0 for a private balancer). */
void lb_balancer_shared_versions(lb_balancer *b, uint64_t *adopted,
                                 uint64_t *published);

/* Processes registered on b's region and alive (0: private). */
uint32_t lb_balancer_shared_processes(lb_balancer *b);

/* The shared text of backend i's last custom-check error (written by the
 * process that ran the check), for a shared balancer: set from
 * text[0..len) (cut at 120 bytes), get into buf[0..len) NUL-terminated,
 * returning its length (0: none, or a private balancer).  LB_STALE from
 * set when gen is not the published generation.  Lock-free. */
int lb_balancer_error_text_set(lb_balancer *b, uint64_t gen, size_t i,
                               const char *text, size_t len);
size_t lb_balancer_error_text(lb_balancer *b, size_t i, char *buf, size_t len);

/*
 * Requests in flight on backend i of snapshot `gen`: add delta (+1 when a
 * request starts, -1 when it ends; the count never goes below zero); a
 * positive delta counts as that many selections too.
 * With a shared balancer the count is this process's share of the total
 * (lb_record_info.in_flight sums every live process's).  Returns LB_OK or
 * LB_STALE (gen is not the published generation: nothing counted).
 * Lock-free (relaxed atomics), any thread.
 */
int lb_balancer_in_flight_add(lb_balancer *b, uint64_t gen, size_t i,
                              int delta);

/* This process's share of that count for backend i of snapshot `gen` (all
 * of it in a private balancer); 0 when gen is stale.  Lock-free. */
uint32_t lb_balancer_in_flight_own(lb_balancer *b, uint64_t gen, size_t i);

/* Count one selection of backend i of snapshot `gen` without counting it
 * in flight (lb_balancer_in_flight_add with delta > 0 counts its
 * selections itself): lb_record_info.selections, the metric
 * lb_backend_selected_total.  LB_OK or LB_STALE.  One relaxed atomic add,
 * any thread.  lb_balancer_select counts nothing; lb_balancer_select_counted
 * counts its pick itself. */
int lb_balancer_selected(lb_balancer *b, uint64_t gen, size_t i);

/*
 * The end of a request counted in flight on backend i of snapshot `gen`:
 * the count goes down by one (never below zero) and, with result 0 or 1,
 * the outcome is reported as by lb_balancer_report (result -1: nothing
 * reported).  One read-side section for both, so a binding's release is
 * one call.  Returns LB_OK, LB_STALE (nothing done), or LB_ERROR with
 * *err for a result or latency lb_balancer_report refuses (nothing
 * done).  Lock-free as lb_balancer_report is; any thread.
 */
int lb_balancer_release(lb_balancer *b, uint64_t gen, size_t i, int result,
                        double latency, const char **err);

/*
 * Record one check result for backend i of snapshot `gen`, with Pingora's
 * observe_health: a result opposite to the current state counts up and
 * flips the state at the threshold (consecutive_success or
 * consecutive_failure); a result equal to the current state resets the
 * count.  A passing check also ends an ejection (the passive one's early
 * return).  A flip of health as selection sees it (healthy and not
 * ejected) is pushed onto the balancer's event queue
 * (lb_balancer_events), as the built-in checker's flips are.  Returns 1
 * when that flipped, 0 when not, LB_STALE.  Lock-free (compare-and-swap
 * on the record, a lock-free push).
 */
int lb_balancer_observe(lb_balancer *b, uint64_t gen, size_t i, int ok,
                        uint32_t threshold, int err_kind, int err_detail);

/*
 * The passive side's clock work: every ejected backend of the
 * published set whose time is up returns (ready again, a flip healthy 1
 * on the event queue); slow start's "some backend is ramping" flag is
 * cleared once every window is over; panic is recounted.  A binding calls
 * it periodically (lb's Lua side: on every drain of events, 10 times a
 * second in OpenResty, on every poll() in plain Lua); nothing else ends an
 * ejection but a passing active check.  Returns how many backends
 * returned.  One RCU read-side section, O(backends), lock-free but for
 * the panic recount (the balancer's panic lock, a leaf; with a panic
 * threshold only); any thread.
 */
int lb_balancer_tick(lb_balancer *b);

/*
 * Whether selection is in panic (lb_config.panic_threshold): fewer than
 * that fraction of the enabled backends are ready, so select and the
 * iterator take any enabled backend (the iterator's head.ready says
 * "enabled" then).  Recounted on every flip, enablement change, update
 * and tick.  A relaxed load; any thread.
 */
int lb_balancer_panic(lb_balancer *b);

/*
 * Wait until every snapshot and health record retired so far (by updates
 * and lb_balancer_free) has been freed: one RCU barrier.  For shutdown,
 * leak checkers and tests; nothing needs it for correctness.  Blocks for
 * at least one grace period.  Must not be called inside lb_balancer_select
 * or any other read-side section (it would wait for itself).  Any thread.
 */
void lb_quiesce(void);

/* Health checks (src/checker/, src/check/) and discovery sources
 * (src/discovery/): the rest of the API. */
#include "lb_check.h"
#include "lb_discovery.h"

#ifdef __cplusplus
}
#endif

#endif /* LB_H */
