/*
 * rcu.h - the one place that includes liburcu.
 *
 * Flavour: "bp" (bulletproof).  Readers need no registration: the first
 * rcu_read_lock of a thread registers it, which is what a library loaded
 * by LuaJIT's ffi.load or by nginx workers needs (we own none of the
 * threads that call select).  Its fork hooks (urcu_bp_before_fork and
 * friends) also prune readers that did not survive fork(), which memb
 * cannot do.  Cost, measured by `make bench` (bench/rcu_flavour.c): a
 * read-side lock+unlock pair is within a nanosecond of memb's, since both
 * use sys_membarrier and so only a compiler barrier on the read side.
 *
 * ThreadSanitizer does not see liburcu's own barriers, so the publish and
 * the grace period are annotated here, and nowhere else:
 *   - publish: release on the new object, and a C11 release store of the
 *     slot; dereference: acquire on the object read from the slot;
 *   - grace period: every read-side unlock releases on liburcu's grace
 *     period state (urcu_bp_gp), and every reclaim (the call_rcu callback,
 *     or the return of synchronize) acquires it, so whatever a reader did
 *     inside its section happens before the free;
 *   - call_rcu's queue: the deferring thread releases on the rcu head and
 *     the callback acquires it before it reads what was deferred.
 * Without LB_TSAN every annotation compiles to nothing.
 */
#ifndef LB_RCU_H
#define LB_RCU_H

#define _LGPL_SOURCE 1
#include <urcu-bp.h>
#include <urcu/rculist.h>

#if defined(__SANITIZE_THREAD__)
#define LB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LB_TSAN 1
#endif
#endif

#ifdef LB_TSAN
#include <sanitizer/tsan_interface.h>
/* In the TSan runtime, not in its public header: stop recording this
 * thread's plain memory accesses (and allocations) until the end call;
 * synchronisation is still recorded. */
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define lb_tsan_release(p) __tsan_release(p)
#define lb_tsan_acquire(p) __tsan_acquire(p)
#define lb_tsan_ignore_begin() __tsan_ignore_thread_begin()
#define lb_tsan_ignore_end() __tsan_ignore_thread_end()
#else
#define lb_tsan_release(p) ((void)(p))
#define lb_tsan_acquire(p) ((void)(p))
#define lb_tsan_ignore_begin() ((void)0)
#define lb_tsan_ignore_end() ((void)0)
#endif

/* A read-side section: nests, never blocks, allocates nothing once the
 * thread is registered (bp registers a thread on its first section, which
 * allocates once).  Never wait for a grace period (lb_rcu_synchronize,
 * lb_rcu_barrier) inside one.  Any thread. */
static inline void lb_rcu_read_lock(void) { urcu_bp_read_lock(); }

static inline void lb_rcu_read_unlock(void)
{
    lb_tsan_release(&urcu_bp_gp);
    urcu_bp_read_unlock();
}

/* Publish *slot = p: everything written to *p before is visible to a
 * reader that dereferences the slot afterwards.  A C11 release store rather
 * than rcu_assign_pointer: liburcu 0.13 stores through a volatile pointer,
 * which ThreadSanitizer takes for a plain write racing with the readers'
 * atomic (consume) load of the slot; on x86 both compile to one mov. */
#define lb_rcu_publish(slot, p)                                                \
    do {                                                                       \
        lb_tsan_release(p);                                                    \
        __atomic_store_n((slot), (p), __ATOMIC_RELEASE);                       \
    } while (0)

/* Dereference an RCU slot inside a read-side section (or as its writer). */
#define lb_rcu_deref(slot)                                                     \
    __extension__({                                                            \
        __typeof__(*(slot)) lb_p_ = rcu_dereference(*(slot));                  \
        if (lb_p_)                                                             \
            lb_tsan_acquire(lb_p_);                                            \
        lb_p_;                                                                 \
    })

/* Reclaim after a grace period; `fn` runs on liburcu's call_rcu thread.
 * Under ThreadSanitizer the callback goes through a trampoline that makes
 * the grace period visible (see the top of this file). */
#ifdef LB_TSAN
typedef struct lb_rcu_head {
    struct rcu_head head;
    void (*fn)(struct lb_rcu_head *h);
} lb_rcu_head;

static inline void lb_rcu_tsan_reclaim(struct rcu_head *rh)
{
    lb_rcu_head *h = caa_container_of(rh, lb_rcu_head, head);

    lb_tsan_acquire(h);
    lb_tsan_acquire(&urcu_bp_gp);
    h->fn(h);
}

static inline void lb_rcu_defer(lb_rcu_head *head,
                                void (*fn)(lb_rcu_head *head))
{
    head->fn = fn;
    lb_tsan_release(head);
    urcu_bp_call_rcu(&head->head, lb_rcu_tsan_reclaim);
}
#else
typedef struct rcu_head lb_rcu_head;

static inline void lb_rcu_defer(lb_rcu_head *head,
                                void (*fn)(lb_rcu_head *head))
{
    urcu_bp_call_rcu(head, fn);
}
#endif

/* Wait until every callback deferred so far has run.  liburcu allocates
 * its barrier work items here and the call_rcu thread frees them, ordered
 * by its own reference counts, which TSan does not see; the allocations
 * are liburcu's alone, so this thread's accesses are not recorded during
 * the call (lb's objects are not touched by it). */
static inline void lb_rcu_barrier(void)
{
    lb_tsan_ignore_begin();
    urcu_bp_barrier();
    lb_tsan_ignore_end();
}

/* Wait for a grace period: every read-side section begun before returns.
 * Blocks; never inside a read-side section.  Any thread. */
static inline void lb_rcu_synchronize(void)
{
    urcu_bp_synchronize_rcu();
    lb_tsan_acquire(&urcu_bp_gp);
}

/* Once per process, any thread, before the first deferred free (called by
 * lb_balancer_new): pins the library in memory and starts liburcu's
 * call_rcu worker with every signal blocked.  Idempotent. */
void lb_rcu_init(void);

/*
 * liburcu's fork steps, called by the one fork handler (src/fork.c) on the
 * forking thread, at the places its lock order gives them:
 *   worker:  pause the call_rcu worker (it stops between batches, so the
 *            callbacks it runs must be able to take the locks they need:
 *            prepare before any lock those callbacks take); the child
 *            restarts it with every signal blocked;
 *   readers: liburcu-bp's registry and grace-period locks; the child
 *            forgets the readers that did not survive fork().
 */
void lb_rcu_worker_fork_prepare(void);
void lb_rcu_worker_fork_parent(void);
void lb_rcu_worker_fork_child(void);
void lb_rcu_readers_fork_prepare(void);
void lb_rcu_readers_fork_parent(void);
void lb_rcu_readers_fork_child(void);

#endif /* LB_RCU_H */
