/*
 * shared.h - the region of a shared balancer: one mapping, made before
 * fork(), that every process forked after it reads and writes.
 *
 * It holds, for one balancer:
 *   - the records (src/record.h) in `capacity` slots: health word,
 *     enablement, last error, passive counters, ejection, counters;
 *   - the published backend set, double-buffered with a sequence count
 *     per buffer, and its version;
 *   - one count of requests in flight per process and slot;
 *   - a table of the processes that use it, each with the version of the
 *     set it has adopted;
 *   - the prober's turn: which process runs the periodic checks and the
 *     discovery, and until when.
 *
 * Nothing in the region is a pointer or a process-local id; a process's
 * handle (struct lb_shared) is its own memory, copied by fork().
 *
 * Locks and crash safety.  Readers take no lock: a record is read with
 * relaxed loads, the set with the buffer's sequence count (a reader
 * retries while a writer is inside that buffer; writers only ever write
 * the buffer that is not published).  Writers (publishing a set,
 * allocating slots, registering a process, the sweep of dead processes)
 * hold the region's lock, a process-shared robust mutex: when its holder
 * dies, the next taker gets EOWNERDEAD and repairs what a half-done
 * writer can leave (slots taken for a set that was never published go
 * back to retired) before it marks the mutex consistent.  Every other
 * step is one atomic store or compare-and-swap, complete or not done.
 * Each process that uses the region holds its own robust mutex in the
 * process table for as long as it lives: the kernel releases it when the
 * process dies, however it dies, so a live process is told from a dead
 * one without pids (which are reused) or timeouts.  The turn is a single
 * 64-bit word (owner and expiry together), taken and renewed by
 * compare-and-swap: it can be lost by a process that stops renewing, never
 * held by two.
 *
 * Slot lifetime.  A slot is live while the published set lists it.  One
 * the set drops is retired with the version that dropped it and is reused
 * only after every live process has adopted that version or a later one
 * and LB_SHARED_QUARANTINE_NS have passed (a process's retired snapshot,
 * a check in flight on the old set); fresh slots are used first.
 */
#ifndef LB_SHARED_H
#define LB_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lb.h"
#include "store.h"

#define LB_SHARED_PROCS 256
#define LB_SHARED_MAX_CAPACITY 65535u
#define LB_SHARED_QUARANTINE_NS 5000000000ull
#define LB_SHARED_NONE UINT32_MAX

struct lb_shared; /* this process's handle */

/* Tests only: the quarantine of retired slots, in ns (default above); how
 * often a writer was found dead holding the region's lock (and its work
 * repaired), and how many dead processes were cleared. */
void lb_shared_set_quarantine(uint64_t ns);
void lb_shared_counts(const struct lb_shared *sh, uint32_t *repairs,
                      uint32_t *swept);

/*
 * Map a new region for `capacity` backends (MAP_SHARED | MAP_ANONYMOUS)
 * with an empty set published as version 1, and return this process's
 * handle, or NULL with *err (capacity out of range, out of memory).
 * Processes forked afterwards share it through the handle they inherit.
 * The handle's store (lb_shared_store) hands out the region's records.
 */
struct lb_shared *lb_shared_new(uint32_t capacity, const char **err);

/* The record store over the region's slots.  Its `acquire` takes a fresh
 * slot and must be called with the region locked (lb_shared_lock); ref and
 * release count this process's holds only (the region's slots live by the
 * set, above).  The store's close ends the handle: the mapping goes from
 * this process once its last held record is released. */
struct lb_store *lb_shared_store(struct lb_shared *sh);

uint32_t lb_shared_capacity(const struct lb_shared *sh);

/* Where this process keeps the version of the set it adopted (read with a
 * relaxed load when the process registers).  Before any registration. */
void lb_shared_track(struct lb_shared *sh, const uint64_t *adopted);

/*
 * The region's lock, for writers (robust; repairs on EOWNERDEAD).  Waits
 * at most `wait` seconds (0: only tries) and returns 0 when taken, -1
 * when not: a process stopped inside it (SIGSTOP, a debugger) must not
 * stop the others for good, so no caller waits unbounded; each either
 * fails with an error (an update) or tries again at its next step.  Never
 * held across fork(): every writer that takes it holds its balancer's
 * write lock first, which the fork handler takes.
 */
#define LB_SHARED_WAIT 2.0
int lb_shared_lock(struct lb_shared *sh, double wait);
void lb_shared_unlock(struct lb_shared *sh);

/*
 * Copy the published set into backends[0..capacity) and slots[], set
 * *version, and return the count.  Lock-free (the sequence count: retries
 * while a writer is inside the buffer read).  Any thread.
 */
size_t lb_shared_set_read(struct lb_shared *sh, lb_backend *backends,
                          uint32_t *slots, uint64_t *version);

/* The published version: one acquire load.  Any thread, lock-free. */
uint64_t lb_shared_version(const struct lb_shared *sh);

/*
 * Publish backends[0..n) (sorted) with their slots as the next version
 * (*version).  Slots of the previous set that the new one does not list
 * are retired.  The caller holds the region's lock and made sure that
 * n <= capacity.
 */
void lb_shared_set_publish(struct lb_shared *sh, const lb_backend *backends,
                           const uint32_t *slots, size_t n, uint64_t *version);

/* Slots taken by the store's acquire for a set that is not published
 * after all go back, free for the next acquire.  Region locked. */
void lb_shared_abandon(struct lb_shared *sh);

/* The record of a slot and the slot of a record of this region. */
struct lb_record *lb_shared_record(struct lb_shared *sh, uint32_t slot);
uint32_t lb_shared_slot_of(const struct lb_shared *sh,
                           const struct lb_record *r);

/*
 * This process in the process table: registers it when it is not (the
 * calling thread holds the process's mutex from then on, so it must live
 * as long as the process: the main thread, or the thread that drives the
 * balancer) and records that it has adopted `version` (0: leave as is;
 * on registration, the tracked version, lb_shared_track).
 * Returns the process's index, or LB_SHARED_NONE when the table is full
 * or the region's lock is busy for 10 ms (the next call tries again).
 * Takes the region's lock when it registers.
 */
uint32_t lb_shared_attach(struct lb_shared *sh, uint64_t version);

/* Record that this process adopted `version`, when it is registered (a
 * process that never steps, such as nginx's master, is not: it does not
 * hold back the reuse of slots).  One store; the adopting writer. */
void lb_shared_adopted(struct lb_shared *sh, uint64_t version);

/* Forget this process's registration (a forked child is a new process). */
void lb_shared_fork_child(struct lb_shared *sh);

/* This process stops using the region (its balancer is freed): its
 * in-flight counts go, its turn is given up, its table entry is freed.
 * From the thread that registered; elsewhere the sweep of a later process
 * frees the entry once this process is gone. */
void lb_shared_detach(struct lb_shared *sh);

enum { LB_SHARED_READER = 0, LB_SHARED_PROBER = 1 };

/*
 * The prober's turn: renew it when this process holds it, else take it
 * when it is free, expired, or held by a process that is gone; the turn
 * then lasts lease_ns.  Sweeps dead processes (their in-flight counts are
 * dropped, their turn freed) under the region's lock.  Returns
 * LB_SHARED_PROBER or LB_SHARED_READER.  Registers the process first.
 */
int lb_shared_turn(struct lb_shared *sh, uint64_t lease_ns);

/* Whether this process holds an unexpired turn.  One load; any thread. */
bool lb_shared_is_prober(const struct lb_shared *sh);

/* Give the turn up when this process holds it (stop()). */
void lb_shared_turn_release(struct lb_shared *sh);

/* The region's counts of discovery runs: [0] ok, [1] failed. */
_Atomic uint64_t *lb_shared_discovery_counts(struct lb_shared *sh);

/* Processes registered and alive (a sweep first).  For status and tests. */
uint32_t lb_shared_processes(struct lb_shared *sh);

/* Text of the last error of a slot's record when the record's error kind
 * is a custom check's (LB_CHECK_ERR_CUSTOM): written by the process that
 * ran the check, read by all.  set: truncated to fit.  get: copies into
 * buf[0..len) (NUL-terminated) and returns the length, 0 when none.
 * Lock-free (a sequence count per slot); any thread. */
void lb_shared_error_set(struct lb_shared *sh, uint32_t slot, const char *text,
                         size_t len);
size_t lb_shared_error_get(struct lb_shared *sh, uint32_t slot, char *buf,
                           size_t len);

#endif /* LB_SHARED_H */
