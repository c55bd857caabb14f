/*
 * discovery.h - the private API between the files of src/discovery/,
 * the discovery sources that run in the core:
 *
 *   source.c   a balancer's source: configuration, start/stop, refresh
 *              and wait, status, the gate, publishing answers with
 *              lb_balancer_update, the fork step
 *   loop.c     the sources' place on the checker thread: their own epoll
 *              set (nested in the checker's), descriptors and deadlines
 *   dns.c      DNS with c-ares: A, AAAA, SRV (and its targets' addresses),
 *              and host names as getaddrinfo resolves them; dns_config.c
 *              checks and copies its configurations (dns.h)
 *   resolve.c  lb_resolve_*: one host name resolved on the thread, for a
 *              caller that must not block (a source without a balancer)
 *   etcd.c     etcd v3's JSON gateway with libcurl's multi interface and
 *              jansson: range, then a streaming watch; etcd_keys.c
 *              its keys and values and the set they make; etcd_config.c
 *              checks and copies its configurations (etcd.h)
 *
 * Threads and locking: everything here runs with the checker's mutex
 * (lb_ck.lock) held, on the checker thread (requests, descriptors,
 * deadlines) or on a caller's thread (configuration, start, stop, status).
 * The one exception is publishing: lb_balancer_update takes the
 * balancer's write lock, which the fork handler takes before lb_ck.lock,
 * so the thread drops lb_ck.lock around it (source.c, `publishing`).
 * Nothing here takes an RCU read-side section.  The sources know the core
 * only through lb.h and targets.h (lb_balancer_disc_set).
 */
#ifndef LB_DISCOVERY_H
#define LB_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb.h"
#include "text.h"

struct lb_disc;

/* A descriptor in the sources' epoll set: `ready` runs on the checker
 * thread with the revents seen. */
struct lb_disc_fd {
    int fd;
    uint32_t events; /* registered (0: not in the set) */
    void (*ready)(struct lb_disc_fd *h, uint32_t revents);
    void *arg;
};

/* One kind of source. */
struct lb_disc_ops {
    int kind; /* 1 DNS, 2 etcd (lb_discovery_status.kind) */
    /* Start a request (DNS: one answer; etcd: range then watch).  The
     * kind reports with lb_disc_answer / lb_disc_fail and ends it with
     * lb_disc_end.  It may end at once. */
    void (*begin)(struct lb_disc *d, uint64_t now);
    /* d->io_due passed while the request runs. */
    void (*timer)(struct lb_disc *d, uint64_t now);
    /* Abandon the request in flight: descriptors out of the epoll set and
     * closed, memory freed; no report.  With `child` (a forked child), the
     * epoll set is the parent's: close our descriptors only. */
    void (*abort)(struct lb_disc *d, bool child);
    /* Optional: a ticket was asked while the request runs (a caller's
     * thread; the kind may set io_due to look at it). */
    void (*asked)(struct lb_disc *d);
    void (*free_cfg)(void *cfg);
};

struct lb_disc {
    lb_balancer *b; /* NULL: a resolution (resolve.c), never published */
    struct lb_disc *prev, *next; /* lb_disc_all */
    const struct lb_disc_ops *ops;
    void *cfg;   /* the kind's (with what outlives a request: etcd's keys) */
    void *state; /* the kind's request in flight, or NULL */
    bool started;
    bool busy;         /* begin called, lb_disc_end not yet */
    bool publishing;   /* the thread is in lb_balancer_update for it */
    bool counted;      /* one of lb_ck.users */
    uint64_t due;      /* monotonic ns of the next begin; 0: none */
    uint64_t io_due;   /* the kind's deadline while busy; 0: none */
    unsigned failures; /* in a row, for the backoff */
    int64_t asked;     /* last ticket handed out */
    int64_t serving;   /* the ticket the request in flight answers */
    int64_t answered;  /* tickets <= this have their result */
    int answer_rc;     /* LB_OK or LB_ERROR, of `answered` */
    /* an answer waiting to be published (the thread publishes it) */
    lb_backend *pending;
    size_t npending;
    bool has_pending;
    int64_t pending_ticket;
    uint64_t pending_revision;
    bool pending_has_revision;
    bool warned;         /* a problem reported during this answer */
    bool pending_warned; /* ... of the pending answer: keep last_error */
    lb_discovery_status st;
};

/* source.c: called by the kinds, on the checker thread. */
/* A good answer: the set to publish (copied; n may be 0 only for etcd,
 * whose empty prefix is a real answer), the etcd revision (has_rev). */
void lb_disc_answer(struct lb_disc *d, const lb_backend *set, size_t n,
                    bool has_rev, uint64_t rev);
/* A failed answer, or a problem to report without dropping the set (an
 * etcd value skipped): counted, shown as last_error; `fatal` ends the
 * ticket in flight with LB_ERROR. */
void lb_disc_fail(struct lb_disc *d, const char *msg, bool fatal);
/* The request is over: the next begins after `next_s` seconds when it
 * succeeded, or after the backoff (doubling from 0.25 s, capped at
 * `cap_s`) when it failed. */
void lb_disc_end(struct lb_disc *d, bool ok, double next_s, double cap_s);
/* One more request sent (the status's `queries`). */
void lb_disc_count_query(struct lb_disc *d);
/* New source of `ops` with cfg for b (replacing b's): LB_OK or LB_ERROR. */
int lb_disc_install(lb_balancer *b, const struct lb_disc_ops *ops, void *cfg,
                    const char **err);

/* loop.c */
/* Add, change (events != 0) or remove (events 0) h in the sources' epoll
 * set.  LB_OK or LB_ERROR (errno set).  In a forked child before the
 * thread restarts the set is gone: a no-op. */
int lb_disc_watch(struct lb_disc_fd *h, uint32_t events);
/* The sources' part of the checker loop (thread.c): make the epoll set and
 * put it in the checker's (marker: the epoll data), LB_OK or LB_ERROR;
 * serve its ready descriptors; begin due requests, fire deadlines and
 * publish answers (dropping lb_ck.lock around each publish); how long
 * the thread may sleep for the sources (-1: no deadline). */
int lb_disc_attach(int epfd, void *marker);
/* The thread stops (no source runs then): close the sources' epoll set, so
 * a process without a running thread keeps no descriptor of lb's. */
void lb_disc_detach(void);
void lb_disc_io(void);
void lb_disc_run(uint64_t now);
int lb_disc_wait_ms(uint64_t now);
/* Fork, in the child (checker/fork.c, lb_ck.lock held): abandon requests
 * in flight without touching the parent's epoll set, close ours, count
 * started sources as users again so the thread restarts. */
void lb_disc_fork_child(void);

/* the list of sources (source.c), for loop.c */
extern struct lb_disc *lb_disc_all __attribute__((visibility("hidden")));
/* loop.c's part of the fork step; source.c calls it */
void lb_disc_loop_fork_child(void);
/* publish d's pending answer (source.c), lock dropped inside */
void lb_disc_publish(struct lb_disc *d);

/* Seconds on CLOCK_REALTIME (the status's updated_at). */
double lb_disc_wall(void);

/* dns.c: the configuration of a host name's resolution (lb_resolve_start),
 * or NULL when out of memory. */
void *lb_disc_dns_addr_cfg(const char *name, size_t len, uint16_t port,
                           uint32_t weight, double timeout);
/* source.c: link a new source (b NULL: a resolution, answered, not
 * published), counted as a user, asked once.  LB_OK or LB_ERROR. */
int lb_disc_link_resolve(struct lb_disc *d, const char **err);
void lb_disc_unlink_resolve(struct lb_disc *d);

/* The kinds (dns.c, etcd.c). */
extern const struct lb_disc_ops lb_disc_dns_ops
    __attribute__((visibility("hidden")));
extern const struct lb_disc_ops lb_disc_etcd_ops
    __attribute__((visibility("hidden")));

#endif /* LB_DISCOVERY_H */
