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
 * the grace period are annotated here (release on publish, acquire on
 * dereference and before reclaim), and nowhere else.
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
#define lb_tsan_release(p) __tsan_release(p)
#define lb_tsan_acquire(p) __tsan_acquire(p)
#else
#define lb_tsan_release(p) ((void)(p))
#define lb_tsan_acquire(p) ((void)(p))
#endif

typedef struct rcu_head lb_rcu_head;

static inline void lb_rcu_read_lock(void) { urcu_bp_read_lock(); }
static inline void lb_rcu_read_unlock(void) { urcu_bp_read_unlock(); }

/* Publish *slot = p: everything written to *p before is visible to a
 * reader that dereferences the slot afterwards. */
#define lb_rcu_publish(slot, p)                                               \
    do {                                                                      \
        lb_tsan_release(p);                                                   \
        rcu_assign_pointer(*(slot), (p));                                     \
    } while (0)

/* Dereference an RCU slot inside a read-side section (or as its writer). */
#define lb_rcu_deref(slot)                                                    \
    __extension__({                                                           \
        __typeof__(*(slot)) lb_p_ = rcu_dereference(*(slot));                 \
        if (lb_p_)                                                            \
            lb_tsan_acquire(lb_p_);                                           \
        lb_p_;                                                                \
    })

/* Reclaim after a grace period; `fn` runs on liburcu's call_rcu thread. */
static inline void lb_rcu_defer(lb_rcu_head *head,
                                void (*fn)(lb_rcu_head *head))
{
    urcu_bp_call_rcu(head, fn);
}

static inline void lb_rcu_barrier(void) { urcu_bp_barrier(); }
static inline void lb_rcu_synchronize(void) { urcu_bp_synchronize_rcu(); }

/* Fork hooks: installed once (pthread_atfork) by lb_rcu_init. */
void lb_rcu_init(void);

#endif /* LB_RCU_H */
